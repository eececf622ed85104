"""What a ``zssr run`` needs besides its inputs: :class:`RunSettings`, built once by the
CLI (or a batch job), and the :class:`~pipeline.image.job.ImageJob` of each input derived
from it (:meth:`RunSettings.image_job`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from io_adapters.detect import DEFAULT_MAX_PIXELS
from pipeline.image.job import ImageJob
from pipeline.runs.config import ThroughPlaneConfig
from pipeline.steps.chain import ChainSpec
from zssr.config import ZSSRConfig, config_to_dict

__all__ = ["RunSettings", "IMAGE_FIELDS", "RUN_ONLY_IMAGE_FIELDS"]

#: ImageJob fields a run sets from its settings, the same for every image
IMAGE_FIELDS = ("scale", "config", "kernel", "fallback_kernel", "kernel_groups", "bands", "tile",
                "halo", "device", "overwrite", "chain", "max_pixels")
#: ImageJob fields a run does not take from its settings: per image (input, output,
#: writer options)
RUN_ONLY_IMAGE_FIELDS = ("input", "output", "writer_options")


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs besides its inputs (built once by the CLI)."""

    out_dir: Path
    scale: float
    config: ZSSRConfig = field(default_factory=ZSSRConfig)
    config_data: dict[str, Any] = field(default_factory=dict)  # as given (for config.yaml)
    kernel: np.ndarray | str | None = None  # "estimate": each image's own (a Dask task)
    fallback_kernel: np.ndarray | None = None  # when an estimate is unusable (None: bicubic)
    #: 0-based file bands: with kernel="estimate", one kernel and network per group
    kernel_groups: tuple[tuple[int, ...], ...] | None = None
    bands: tuple[int, ...] | None = None
    tile: int = 256
    halo: int | None = None
    device: str = "cpu"
    scheduler: str | None = None  # None: DASK_SCHEDULER_ADDRESS or "local"
    workers: int | None = None
    torch_threads: int | None = None
    resume: bool = True
    overwrite: bool = False
    ground_truth: Path | None = None
    out_format: str | None = None  # a FORMAT_SUFFIXES key; None: the input's own format
    batch_tiles: int | None = None  # tiles per infer task; None: automatic
    retries: int = 2
    chain: ChainSpec | None = None  # pre/post steps around SR (pipeline.steps.chain)
    deidentify: bool = False  # DICOM outputs: drop patient-identifying attributes
    #: DICOM outputs: a name of io_adapters.dicom.TRANSFER_SYNTAXES (a writer option, like
    #: deidentify: not in the fingerprint, the pixels are the same)
    transfer_syntax: str = "explicit-little"
    max_pixels: int = DEFAULT_MAX_PIXELS  # declared size limit per input (--max-pixels)
    stac_items: bool = False  # Items beside the outputs, a Collection (runs.stac_run)
    output_prefix: str | None = None  # s3://bucket/prefix/: outputs uploaded (runs.upload)
    #: a STAC Item input's assets or eo:bands names, stacked in order (--assets); not in
    #: the fingerprint: the stacked VRT is the input, its content its identity
    assets: tuple[str, ...] | None = None
    #: each input a volume made thin along its slice axis (runs.volumes); scale is then 1
    through_plane: ThroughPlaneConfig | None = None

    def image_job(self, input: Path) -> ImageJob:
        """The job of one input: every :class:`ImageJob` field the run sets for all its
        images (:data:`IMAGE_FIELDS`), taken from these settings; the output and the writer
        options are per image (``replace`` them in)."""
        values = {name: getattr(self, name) for name in IMAGE_FIELDS}
        return ImageJob(input=input, output=Path(), **{**values, "chain": self.chain or None})

    def fingerprint_id(self) -> str:
        """A short hash of :meth:`fingerprint`, recorded with each queued image: an output
        written under the same settings for the same input path may be replaced when
        that input changed (:func:`pipeline.runs.state.resume_output`)."""
        blob = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fingerprint(self) -> dict[str, Any]:
        """What shapes the result: a change gives a new image key."""
        out = {"version": 1, "config": config_to_dict(self.config), "scale": self.scale,
               "tile": self.tile, "halo": self.halo,
               "bands": None if self.bands is None else list(self.bands),
               "kernel": _kernel_id(self.kernel),
               "chain": self.chain.to_config() if self.chain else None}
        if self.fallback_kernel is not None:  # keys without one stay as before
            out["fallback_kernel"] = _kernel_id(self.fallback_kernel)
        if self.kernel_groups is not None:
            out["kernel_groups"] = [list(g) for g in self.kernel_groups]
        if self.through_plane is not None:
            out["through_plane"] = asdict(self.through_plane)
        return out


def _kernel_id(kernel: np.ndarray | str | None) -> str | None:
    if kernel is None or isinstance(kernel, str):
        return kernel
    return hashlib.sha256(np.ascontiguousarray(kernel, np.float64).tobytes()).hexdigest()
