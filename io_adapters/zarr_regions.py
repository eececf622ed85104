"""A partial Zarr store filled region by region from many processes (``zssr run``'s infer
tasks), on disk or on object storage.

:func:`create_store` makes the empty store (:class:`~io_adapters.zarr_store.ZarrWriter`;
on object storage built locally and uploaded metadata last); :class:`RegionTarget` opens
it once per task (metadata and array handle read once: on object storage each opening
costs a dozen requests) and :func:`write_region` writes one chunk-aligned region, so no
two writers share a chunk.  :class:`RegionWriter` is the writer-shaped adapter the
tiling code writes HR cores into (with a companion one-band mask store when the output
keeps a validity mask its values cannot carry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from rasterio.windows import Window

from .base import Metadata
from .vsi import is_vsi
from .zarr_reader import DATA, ZarrReader
from .zarr_store import ZarrWriter, write_chunks

__all__ = ["write_region", "RegionTarget", "RegionWriter", "create_store"]


def write_region(store_path: str | Path, array: np.ndarray, window: Window, *,
                 frame: int = 0, mask: np.ndarray | None = None,
                 target: RegionTarget | None = None) -> None:
    """Write one chunk-aligned region into a partial store, from any process.

    ``store_path`` is :attr:`ZarrWriter.store_path`; the array and its
    metadata are opened by path, so nothing but the path crosses processes
    (``target``: the store opened already, for the many regions of one task).
    """
    (target or RegionTarget(store_path)).write(array, window, frame=frame, mask=mask)


class RegionTarget:
    """A partial store opened once for many :func:`write_region` calls (one task's tiles):
    its metadata and array handle read once, not per region (on object storage each
    opening costs a dozen requests)."""

    def __init__(self, store_path: str | Path) -> None:
        self.path = Path(store_path)
        self.meta = ZarrReader(store_path).meta
        target: Any = self.path
        if is_vsi(store_path):  # a store on object storage: chunks written in place
            from .fetch import zarr_store

            target = zarr_store(store_path, writable=True)
        self._array = zarr.open_array(target, path=DATA, mode="r+", zarr_format=3)

    def write(self, array: np.ndarray, window: Window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        write_chunks(self._array, self.meta, array, window, frame=frame, mask=mask, path=self.path)


def create_store(path: str | Path, meta: Metadata, *, chunks: tuple[int, int],
                 overwrite: bool = False) -> None:
    """An empty store for ``meta`` at ``path`` that :func:`write_region` fills: made by
    :class:`ZarrWriter`; at a ``/vsis3/`` name (a run folder on object storage) made in a
    local temporary folder and uploaded, the metadata (``zarr.json``) last, so a store
    whose metadata is there is whole."""
    if not is_vsi(path):
        ZarrWriter(path, meta, chunks=chunks, overwrite=overwrite).commit()
        return
    import shutil
    import tempfile

    from .objstore import upload_tree
    from .vsi import display_url

    folder = Path(tempfile.mkdtemp(prefix=".zssr-store-"))
    try:
        upload_tree(ZarrWriter(folder / "s.zarr", meta, chunks=chunks).commit(),
                    display_url(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class RegionWriter:
    """Writer-shaped adapter: each HR core goes to a chunk-aligned region of a store.

    When the output keeps a validity mask that its pixel values cannot carry
    (no nodata, no alpha), the mask goes to a companion one-band store.
    """

    def __init__(self, store: Path, mask_store: Path | None = None) -> None:
        self.store = store
        self.mask_store = mask_store
        self._targets: dict[Path, RegionTarget] = {}  # opened on first use, once per task

    def _target(self, store: Path) -> RegionTarget:
        if store not in self._targets:
            self._targets[store] = RegionTarget(store)
        return self._targets[store]

    def write(self, array: np.ndarray, window, *, frame: int = 0,
              mask: np.ndarray | None = None) -> None:
        write_region(self.store, array, window, frame=frame, mask=mask,
                     target=self._target(self.store))
        if self.mask_store is not None:
            valid = np.ones(array.shape[-2:], bool) if mask is None else np.asarray(mask, bool)
            if valid.ndim == 3:
                valid = valid.all(axis=0)
            write_region(self.mask_store, valid[None].astype(np.uint8), window, frame=frame,
                         target=self._target(self.mask_store))
