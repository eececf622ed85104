"""Geometry: the scale, the output-size rule and the tile grid (a leaf: no project imports).

One rule, one place.  :func:`as_scale` is the one scale normaliser (an exact
:class:`Scale` of fractions, built once at the edge); :func:`output_size` the one
output-size rule (``ceil(n * s)``, exact) and :func:`downscaled_size` its inverse;
:class:`Region`, :class:`Tile` and :class:`TileGrid` cut an image into halo'd tiles
and place their super-resolved cores.  ``zssr``, ``io_adapters`` and ``pipeline``
import from here; this package imports none of them (``tests/test_geometry_single_rule.py``).
Rows come before columns everywhere.

>>> grid = TileGrid(shape=(5, 7), tile=2, halo=1, scale=as_scale("3/2"))
>>> grid.hr_shape == output_shape((5, 7), grid.scale)
True
"""

from .scale import (
    MAX_DENOMINATOR,
    Scale,
    ScaleError,
    ScaleLike,
    as_scale,
    downscaled_shape,
    downscaled_size,
    output_shape,
    output_size,
)
from .tiles import Region, Tile, TileGrid, coerce_pair

__all__ = ["MAX_DENOMINATOR", "Scale", "ScaleError", "ScaleLike", "as_scale", "output_size",
           "output_shape", "downscaled_size", "downscaled_shape", "Region", "Tile", "TileGrid",
           "coerce_pair"]
