"""Reading degradation kernels from files (the engine itself takes arrays only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zssr.kernels import KernelError, gaussian_kernel, kernel_from_mapping, validate_kernel

from .errors import InputError

__all__ = ["load_kernel", "kernel_from_args"]


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
        from .errors import UsageError

        raise UsageError("give either --kernel or --kernel-sigma, not both")
    if kernel is not None:
        return load_kernel(kernel)
    if sigma is not None:
        if not sigma > 0:
            raise KernelError(f"--kernel-sigma {sigma}: must be > 0")
        return gaussian_kernel(sigma)
    return None
