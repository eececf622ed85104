"""Tile geometry: cores, halos and HR crops, on exact scales.

This module is the one place that knows how a low-resolution (LR) image is cut
into tiles and where each super-resolved tile lands in the high-resolution (HR)
output.  Everything is exact integer arithmetic on :class:`~geometry.Scale` s (sizes by
:func:`geometry.output_size`); nothing here reads pixels or runs a model.

Vocabulary (all windows are ``(row, col, height, width)`` :class:`Region` s):

``core``
    The LR pixels a tile is responsible for.  Cores partition the image.
``read``
    The core grown by the halo on every side, clipped to the image.  At the
    image border there is no halo beyond the edge: the engine mirrors (resize)
    and zero-pads (convolutions) at the true border identically for a whole
    image and for a tile that touches that border.
``hr_read``
    Where the super-resolved read window lies in HR space: origin
    ``read.row * s`` (an integer, see below), shape ``ceil(read.height * s)``.
``hr_core``
    The HR pixels the tile writes: ``[core.row * s, core.stop * s)``, except the
    last tile of a row/column, which ends at ``ceil(rows * s)`` (MATLAB
    ``imresize`` output size).  HR cores partition the HR image.
``crop``
    Slices that cut ``hr_core`` out of the super-resolved read window.

Why offsets are multiples of the scale's denominator: with ``s = p / q`` an
HR pixel ``j`` sits at LR position ``(j + 1/2) / s - 1/2`` (MATLAB's
convention).  A tile whose read window starts at LR row ``r`` is resampled on
the same HR grid as the whole image only if ``r * s`` is an integer, i.e.
``q | r``.  Tile sizes must therefore be multiples of ``q`` and the halo is
rounded up to one.  How wide the halo must be is :mod:`pipeline.image.halo`'s job.

With a fractional scale and an axis whose HR size ``rows * s`` is not an
integer, the flipped ensemble members of a plain implementation would sample an
HR grid shifted by ``rows - ceil(rows * s) / s`` LR px.  ``zssr.inference.predict``
mirror-pads such an axis at its far edge to an integral size (and crops after),
so the whole image and every tile share one grid and tiling stays exact.

>>> grid = TileGrid(shape=(5, 7), tile=(2, 4), halo=1, scale=1.5)
>>> len(grid), grid.layout, grid.hr_shape
(6, (3, 2), (8, 11))
>>> t = grid.tile(5)  # last row, last column: a 1-row, 3-column edge tile
>>> t.core, t.read
(Region(row=4, col=4, height=1, width=3), Region(row=2, col=2, height=3, width=5))
>>> t.hr_core, t.crop
(Region(row=6, col=6, height=2, width=5), (slice(3, 5, None), slice(3, 8, None)))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

from .scale import Scale, ScaleLike, as_scale, output_shape, output_size

if TYPE_CHECKING:  # rasterio is only needed to build windows (not on GPU bench hosts)
    from rasterio.windows import Window

__all__ = ["Region", "Tile", "TileGrid", "coerce_pair"]


def coerce_pair(value: int | tuple[int, int], *, name: str, minimum: int) -> tuple[int, int]:
    """``(rows, cols)`` from one integer or a pair, each ``>= minimum`` (like dask's
    ``coerce_depth``).

    >>> coerce_pair(256, name="tile", minimum=1)
    (256, 256)
    """
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{name} must be an integer or a pair of integers (rows, cols), "
                        f"got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return (int(pair[0]), int(pair[1]))


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Region:
    """An integer pixel window ``(row, col, height, width)``; no IO, no georeferencing."""

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices: ``array[..., *region.slices]``."""
        return (slice(self.row, self.row_stop), slice(self.col, self.col_stop))

    def intersection(self, other: Region) -> Region | None:
        """The overlap of two regions, or ``None`` when they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_stop, other.row_stop), min(self.col_stop, other.col_stop)
        if r1 <= r0 or c1 <= c0:
            return None
        return Region(r0, c0, r1 - r0, c1 - c0)

    def to_window(self) -> Window:
        """The same pixels as a :class:`rasterio.windows.Window`."""
        from rasterio.windows import Window

        return Window(col_off=self.col, row_off=self.row, width=self.width, height=self.height)

    @classmethod
    def from_window(cls, window: Window) -> Region:
        """From a rasterio window with integral offsets and sizes."""
        vals = (window.row_off, window.col_off, window.height, window.width)
        if any(float(v) != int(v) for v in vals):
            raise ValueError(f"window {window!r} is not on whole pixels; round it first "
                             "(window.round_offsets().round_lengths())")
        return cls(*(int(v) for v in vals))


@dataclass(frozen=True)
class Tile:
    """One tile: what to read in LR, where its super-resolved core goes in HR."""

    index: int  # row-major position in the grid
    position: tuple[int, int]  # (tile row, tile col)
    core: Region  # LR pixels this tile is responsible for
    read: Region  # core + halo, clipped to the image (the predictor's input)
    hr_read: Region  # the predictor's output, placed in HR space
    hr_core: Region  # HR pixels this tile writes

    @property
    def crop(self) -> tuple[slice, slice]:
        """Slices of the predictor's output that hold ``hr_core``."""
        return (slice(self.hr_core.row - self.hr_read.row, self.hr_core.row_stop - self.hr_read.row),
                slice(self.hr_core.col - self.hr_read.col, self.hr_core.col_stop - self.hr_read.col))

    @property
    def read_window(self) -> Window:
        """The LR window to read, for a reader's ``read(window)``."""
        return self.read.to_window()

    @property
    def hr_window(self) -> Window:
        """The HR window to write, for a writer's ``write(array, window)``."""
        return self.hr_core.to_window()


# ----------------------------------------------------------------------------- the grid


def _edges(n: int, step: int) -> list[int]:
    return list(range(0, n, step)) + [n]


@dataclass(frozen=True, init=False)
class TileGrid:
    """A row-major grid of tiles over an LR image of ``shape`` at ``scale``.

    Arguments are normalised once here: ``tile`` and ``halo`` may be one integer
    or a ``(rows, cols)`` pair; ``scale`` anything :func:`geometry.as_scale` takes.
    Tile sizes must be multiples of the scale's denominator (3/2 -> 2); the halo
    is rounded up to one.  An image smaller than a tile is one tile;
    the last tile of a row or column may be as small as 1 px.

    >>> grid = TileGrid(shape=(100, 60), tile=64, halo=10, scale=2)
    >>> [t.core.shape for t in grid]
    [(64, 60), (36, 60)]
    >>> grid.hr_chunks
    ((128, 72), (120,))
    """

    shape: tuple[int, int]
    tile_shape: tuple[int, int]
    halo: tuple[int, int]
    scale: Scale

    def __init__(self, *, shape: tuple[int, int], tile: int | tuple[int, int],
                 halo: int | tuple[int, int] = 0, scale: ScaleLike) -> None:
        shape_ = coerce_pair(shape, name="image shape", minimum=1)
        tile_ = coerce_pair(tile, name="tile", minimum=1)
        halo_ = coerce_pair(halo, name="halo", minimum=0)
        scale_ = as_scale(scale)
        for axis, (t, s) in enumerate(zip(tile_, scale_, strict=True)):
            q = s.denominator
            if t % q:
                lo = max(q, t - t % q)
                raise ValueError(
                    f"tile size {t} ({'rows' if axis == 0 else 'cols'}) is not a multiple of "
                    f"{q}, the denominator of scale {s}; use {lo} or {lo + q}")
        halo_ = tuple(-(-h // s.denominator) * s.denominator
                      for h, s in zip(halo_, scale_, strict=True))
        object.__setattr__(self, "shape", shape_)
        object.__setattr__(self, "tile_shape", tile_)
        object.__setattr__(self, "halo", halo_)
        object.__setattr__(self, "scale", scale_)

    @property
    def layout(self) -> tuple[int, int]:
        """Number of tiles ``(rows, cols)``."""
        return tuple(-(-n // t) for n, t in zip(self.shape, self.tile_shape, strict=True))

    @property
    def hr_shape(self) -> tuple[int, int]:
        """``(ceil(rows * s), ceil(cols * s))``."""
        return output_shape(self.shape, self.scale)

    @property
    def hr_chunk_shape(self) -> tuple[int, int]:
        """The HR size of a full tile's core, ``tile * s``: the Zarr chunk shape."""
        return tuple(int(t * s) for t, s in zip(self.tile_shape, self.scale, strict=True))

    @property
    def hr_chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask-style HR chunk sizes, one chunk per tile core (the edge one: the rest)."""
        out = []
        for n_hr, c in zip(self.hr_shape, self.hr_chunk_shape, strict=True):
            edges = _edges(n_hr, c)
            out.append(tuple(b - a for a, b in zip(edges[:-1], edges[1:], strict=True)))
        return (out[0], out[1])

    def __len__(self) -> int:
        ny, nx = self.layout
        return ny * nx

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self)):
            yield self.tile(i)

    def tile(self, index: int | tuple[int, int]) -> Tile:
        """The tile at a row-major ``index`` or a ``(tile row, tile col)`` position."""
        ny, nx = self.layout
        if isinstance(index, tuple):
            ty, tx = index
            if not (0 <= ty < ny and 0 <= tx < nx):
                raise IndexError(f"tile position {index} outside the {ny}x{nx} grid")
        else:
            if not -len(self) <= index < len(self):
                raise IndexError(f"tile index {index} outside [0, {len(self)})")
            ty, tx = divmod(index % len(self), nx)
        spans = [self._axis(axis, t) for axis, t in enumerate((ty, tx))]
        (cr, rr, hrr, hcr), (cc, rc, hrc, hcc) = spans
        return Tile(index=ty * nx + tx, position=(ty, tx),
                    core=Region(cr[0], cc[0], cr[1] - cr[0], cc[1] - cc[0]),
                    read=Region(rr[0], rc[0], rr[1] - rr[0], rc[1] - rc[0]),
                    hr_read=Region(hrr[0], hrc[0], hrr[1] - hrr[0], hrc[1] - hrc[0]),
                    hr_core=Region(hcr[0], hcc[0], hcr[1] - hcr[0], hcc[1] - hcc[0]))

    def _axis(self, axis: int, t: int) -> tuple[tuple[int, int], ...]:
        """``(core, read, hr_read, hr_core)`` as ``(start, stop)`` along one axis."""
        n, step, h = self.shape[axis], self.tile_shape[axis], self.halo[axis]
        s = tuple(self.scale)[axis]
        start, stop = t * step, min(n, (t + 1) * step)
        r0, r1 = max(0, start - h), min(n, stop + h)
        hr_stop = output_size(n, s) if stop == n else int(stop * s)
        return ((start, stop), (r0, r1), (int(r0 * s), output_size(r1, s)),
                (int(start * s), hr_stop))

    def tiles_for_chunk(self, index: tuple[int, int], *,
                        chunk_shape: tuple[int, int] | None = None) -> tuple[Tile, ...]:
        """Tiles whose HR core overlaps HR chunk ``index`` of a regular chunk grid.

        ``chunk_shape`` defaults to :attr:`hr_chunk_shape` (one tile per chunk).
        Used to find which tiles a missing or damaged output chunk needs.
        """
        cy, cx = coerce_pair(chunk_shape or self.hr_chunk_shape, name="chunk_shape", minimum=1)
        hy, hx = self.hr_shape
        iy, ix = index
        if not (0 <= iy < -(-hy // cy) and 0 <= ix < -(-hx // cx)):
            raise IndexError(f"chunk {index} outside the HR chunk grid of {(hy, hx)} "
                             f"in chunks of {(cy, cx)}")
        chunk = Region(iy * cy, ix * cx, min(cy, hy - iy * cy), min(cx, hx - ix * cx))
        ny, nx = self.layout
        py, px = self.hr_chunk_shape
        rows = range(min(ny - 1, chunk.row // py), min(ny - 1, (chunk.row_stop - 1) // py) + 1)
        cols = range(min(nx - 1, chunk.col // px), min(nx - 1, (chunk.col_stop - 1) // px) + 1)
        return tuple(t for t in (self.tile((r, c)) for r in rows for c in cols)
                     if t.hr_core.intersection(chunk) is not None)

    def __repr__(self) -> str:
        return (f"TileGrid(shape={self.shape}, tile={self.tile_shape}, halo={self.halo}, "
                f"scale={self.scale}: {self.layout[0]}x{self.layout[1]} tiles -> HR {self.hr_shape})")

