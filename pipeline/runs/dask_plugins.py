"""Dask worker plugins of ``zssr run`` (imported only when a distributed scheduler is used)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["TorchThreads"]


class TorchThreads(WorkerPlugin):
    """Set torch's intra-op threads on every worker at start (the nanny sets
    ``OMP_NUM_THREADS=1``); with ``gpu=True`` a LocalCluster worker (named 0, 1,
    ...) takes GPU ``name % device_count``."""

    name = "zssr-torch-threads"
    idempotent = False

    def __init__(self, threads: int | None, *, gpu: bool = False) -> None:
        self.threads = threads
        self.gpu = gpu

    def setup(self, worker: Any) -> None:
        import torch
        from rasterio.env import set_gdal_config

        from io_adapters.base import GDAL_CACHE_MB
        from pipeline.runs.allocator import keep_freed_memory

        keep_freed_memory()
        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB)  # our worker process: flat memory
        import logging

        from io_adapters.vsi import CredentialFilter

        for handler in logging.getLogger().handlers:  # no credential in a worker's log either
            if not any(isinstance(f, CredentialFilter) for f in handler.filters):
                handler.addFilter(CredentialFilter())
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.gpu and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            name = str(worker.name)
            if name.isdigit():
                torch.cuda.set_device(int(name) % torch.cuda.device_count())
