"""The provenance of one job's output, built once and handed to its writer.

``with_provenance(job)`` returns the job with ``writer_options["provenance"]`` set
for the formats that record it (COG/GeoTIFF dataset tags, Zarr group attributes;
see :mod:`io_adapters.provenance`; a derived DICOM names the software and version as
Processing Equipment in its Contributing Equipment Sequence).  PNG outputs get nothing:
the PNG writer has no tag to hold it.

The config hash is the SHA-256 of the resolved config as sorted, compact JSON, the
same text that is recorded beside it, so ``ZSSR_CONFIG_SHA256`` can be checked
against ``ZSSR_CONFIG``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from geometry import as_scale
from io_adapters.provenance import Provenance
from pipeline.image.job import ImageJob
from pipeline.image.kernel_estimate import (  # the one label (image floor)
    GroupChoices,
    KernelChoice,
    chosen_label,
    kernel_label,
)
from zssr import __version__
from zssr.config import ZSSRConfig, config_to_dict

__all__ = ["SOFTWARE", "config_sha256", "kernel_label", "job_provenance", "with_provenance",
           "RECORDING_SUFFIXES"]

SOFTWARE = "zssr-pipeline"
# writers with a provenance= keyword ("": a folder, i.e. a DICOM series)
RECORDING_SUFFIXES = (".tif", ".tiff", ".zarr", ".dcm", "")


def config_json(config: ZSSRConfig) -> str:
    """The resolved config as sorted, compact JSON (what is hashed)."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))


def config_sha256(config: ZSSRConfig) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()


def job_provenance(job: ImageJob, *, source: str | None = None,
                   chosen: KernelChoice | GroupChoices | None = None) -> Provenance:
    """What made ``job``'s output; ``source`` overrides the input's name (a URL, a STAC
    Item) and must carry no credentials; ``chosen``: the kernel(s) ``--kernel estimate``
    chose, named instead of ``estimate``."""
    return Provenance(software=SOFTWARE, version=__version__,
                      source=source if source is not None else str(job.input),
                      scale=str(as_scale(job.scale)),
                      kernel=kernel_label(job.kernel, job.fallback_kernel) if chosen is None
                      else chosen_label(chosen),
                      config_sha256=config_sha256(job.config),
                      config=json.loads(config_json(job.config)))


def with_provenance(job: ImageJob, *, source: str | None = None) -> ImageJob:
    """``job`` whose writer records its provenance (COG/TIFF and Zarr outputs)."""
    if Path(job.output).suffix.lower() not in RECORDING_SUFFIXES:
        return job
    options: dict[str, Any] = {**job.writer_options,
                               "provenance": job_provenance(job, source=source)}
    return replace(job, writer_options=options)
