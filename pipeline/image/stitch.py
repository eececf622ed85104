"""Stitching super-resolved tiles into one HR image.

The tiler takes a ``predictor`` -- any callable mapping an LR tensor
``(C, h, w)`` to ``(C, ceil(h*s), ceil(w*s))`` -- and never imports a model.
Results go to a :class:`Merger` (MONAI's two-method design): ``aggregate``
receives the predictor's output for the whole read window and the
:class:`~geometry.Tile`, cuts out ``tile.crop`` and stores it at
``tile.hr_core``; ``finalize`` returns the result.  HR cores partition the
output, so there is no blending and no counting: every HR pixel is written
exactly once.

A merger backed by any array-like (a Zarr array, a memory map) is a few lines::

    class ZarrMerger(Merger):
        def __init__(self, array):
            self.array = array  # (C, H_hr, W_hr), chunks = (C, *grid.hr_chunk_shape)

        def aggregate(self, values, tile):
            self.array[(..., *tile.hr_core.slices)] = self.cropped(values, tile)

        def finalize(self):
            return self.array

With chunks of ``grid.hr_chunk_shape`` each tile writes whole chunks only, so
tiles can be written concurrently without locks.

>>> import torch
>>> from geometry import TileGrid
>>> grid = TileGrid(shape=(5, 7), tile=2, halo=1, scale=2)
>>> x = torch.arange(35.0).reshape(1, 5, 7)
>>> up = lambda t: t.repeat_interleave(2, -2).repeat_interleave(2, -1)  # an oracle predictor
>>> bool((stitch(up, x, grid) == up(x).numpy()).all())
True
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from geometry import Tile, TileGrid

if TYPE_CHECKING:
    import torch

    from io_adapters.base import Writer

__all__ = ["Predictor", "Merger", "ArrayMerger", "WriterMerger", "stitch"]

logger = logging.getLogger(__name__)

Predictor = Callable[["torch.Tensor"], "torch.Tensor"]  # (C, h, w) -> (C, ceil(h*s), ceil(w*s))


class Merger(ABC):
    """Receives super-resolved tiles one by one; ``finalize`` returns the result."""

    @abstractmethod
    def aggregate(self, values: Any, tile: Tile) -> None:
        """Store the core of ``values`` (the predictor's output ``(..., H, W)`` for
        ``tile.read``) at ``tile.hr_core``."""

    @abstractmethod
    def finalize(self) -> Any:
        """Finish and return the merged output (an array, a path, ...)."""

    @staticmethod
    def cropped(values: Any, tile: Tile) -> np.ndarray:
        """``values[..., *tile.crop]`` as numpy, after checking ``values`` has the
        shape of ``tile.hr_read``."""
        shape = tuple(values.shape[-2:])
        if shape != tile.hr_read.shape:
            raise ValueError(
                f"predictor returned shape {tuple(values.shape)} for tile {tile.index} "
                f"(LR read window {tile.read.shape}); expected (..., {tile.hr_read.height}, "
                f"{tile.hr_read.width}) = ceil(read * scale). Check the predictor's scale")
        out = values[(..., *tile.crop)]
        if hasattr(out, "detach"):  # a torch tensor
            out = out.detach().cpu().numpy()
        return np.asarray(out)


class ArrayMerger(Merger):
    """Merge into an in-memory numpy array of ``shape`` ``(..., H_hr, W_hr)``."""

    def __init__(self, shape: tuple[int, ...], *, dtype: np.dtype | str = np.float32,
                 fill: float = np.nan) -> None:
        self.array = np.full(shape, fill, dtype=dtype)
        self.finalized = False

    def aggregate(self, values: Any, tile: Tile) -> None:
        if self.finalized:
            raise RuntimeError("ArrayMerger.aggregate after finalize(); create a new merger")
        self.array[(..., *tile.hr_core.slices)] = self.cropped(values, tile)

    def finalize(self) -> np.ndarray:
        self.finalized = True
        return self.array


class WriterMerger(Merger):
    """Merge into an ``io_adapters`` :class:`~io_adapters.base.Writer` (GeoTIFF, DICOM,
    Zarr, ...): each core goes to ``writer.write(array, tile.hr_window, frame=frame)``.

    ``finalize`` returns the writer without committing it: the caller owns the
    writer's ``with`` block (commit on success, abort on error).
    """

    def __init__(self, writer: Writer, *, frame: int = 0) -> None:
        self.writer = writer
        self.frame = frame

    def aggregate(self, values: Any, tile: Tile) -> None:
        self.writer.write(self.cropped(values, tile), tile.hr_window, frame=self.frame)

    def finalize(self) -> Writer:
        return self.writer


def stitch(predictor: Predictor, image: np.ndarray | torch.Tensor, grid: TileGrid, *,
           merger: Merger | None = None) -> Any:
    """Super-resolve ``image`` ``(C, H, W)`` tile by tile and merge the cores.

    Each tile's read window (core + halo) goes through ``predictor``; the core
    of the result lands at its HR place.  Returns ``merger.finalize()``; the
    default merger gives a float32 numpy array ``(C, ceil(H*s), ceil(W*s))``.
    """
    import torch

    if image.ndim != 3:
        raise ValueError(f"stitch expects an image (C, H, W), got shape {tuple(image.shape)}")
    if tuple(image.shape[-2:]) != grid.shape:
        raise ValueError(f"image shape {tuple(image.shape[-2:])} does not match the grid's "
                         f"{grid.shape}; build the grid with TileGrid(shape=image.shape[-2:], ...)")
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) \
        else image
    if merger is None:
        merger = ArrayMerger((tensor.shape[0], *grid.hr_shape), dtype=np.float32)
    for tile in grid:
        values = predictor(tensor[(slice(None), *tile.read.slices)])
        merger.aggregate(values, tile)
        logger.debug("tile %d/%d done: core %s -> HR %s", tile.index + 1, len(grid),
                     tile.core, tile.hr_core)
    return merger.finalize()
