"""Reading degradation kernels from files (the engine itself takes arrays only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from zssr.kernels import KernelError, gaussian_kernel, kernel_from_mapping, validate_kernel

__all__ = ["load_kernel", "kernel_from_args", "kernel_options"]


def load_kernel(path: str | Path) -> np.ndarray:
    """A validated 2-D kernel from ``.npy`` or a MATLAB ``.mat`` holding ``Kernel``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"kernel file {path}: is a folder, not a file")
    if not path.is_file():
        raise InputError(f"kernel file {path}: not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise KernelError(f"kernel file {path}: not a readable .npy array ({exc})") from exc
        return validate_kernel(arr, source=str(path))
    if suffix == ".mat":
        from scipy.io import loadmat

        try:
            mapping = loadmat(path)
        except (ValueError, OSError, TypeError, NotImplementedError) as exc:
            raise KernelError(f"kernel file {path}: not a readable MATLAB file ({exc})") from exc
        return kernel_from_mapping(mapping, source=str(path))
    raise KernelError(f"kernel file {path}: unsupported kind {suffix or '(none)'}; "
                      "use .npy or a MATLAB .mat holding 'Kernel'")


def kernel_from_args(kernel: Path | None, sigma: float | None) -> np.ndarray | None:
    if kernel is not None and sigma is not None:
        from pipeline.errors import UsageError

        raise UsageError("give either --kernel or --kernel-sigma, not both")
    if kernel is not None:
        return load_kernel(kernel)
    if sigma is not None:
        if not sigma > 0:
            raise KernelError(f"--kernel-sigma {sigma}: must be > 0")
        return gaussian_kernel(sigma)
    return None


def kernel_options(kernel: Path | str | None, sigma: float | None, pc) -> dict:
    """``ImageJob``'s ``kernel`` and ``fallback_kernel`` from ``--kernel``/``--kernel-sigma``
    and the config's pipeline sections ``pc`` (flags win).  ``--kernel estimate`` (or the
    config's ``kernel: estimate`` when no flag is given) estimates each image's kernel; the
    fallback for an unusable estimate is the Gaussian of ``--kernel-sigma`` or the config's
    ``kernel_sigma``, else bicubic (None).  A kernel file named ``estimate`` is ``./estimate``.
    """
    if kernel is not None and str(kernel) == "estimate":
        fallback = sigma if sigma is not None else pc.kernel_sigma
        return {"kernel": "estimate", "fallback_kernel": kernel_from_args(None, fallback)}
    given = kernel is not None or sigma is not None
    if not given and pc.kernel == "estimate":
        return {"kernel": "estimate", "fallback_kernel": kernel_from_args(None, pc.kernel_sigma)}
    return {"kernel": kernel_from_args(None if kernel is None else Path(kernel),
                                       sigma if given else pc.kernel_sigma),
            "fallback_kernel": None}
