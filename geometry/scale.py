"""The scale of a super-resolution, and the one rule for output sizes.

A scale is an exact pair of fractions ``(rows, cols)``, built once at the edge
(the CLI, a job file, ``super_resolve``) by :func:`as_scale`: ``1.5`` is ``3/2``,
``"9/7"`` is ``9/7``, ``(2, 3)`` is anisotropic.  An axis of ``n`` pixels becomes
``ceil(n * s)`` pixels (MATLAB ``imresize``'s rule), computed here exactly by
:func:`output_size` and nowhere else: in floats ``50 * 1.1`` is ``55.000000000000007``
and its ceiling 56, where the image has 55 rows.  The engine resamples with
:attr:`Scale.floats` (``float(Fraction(11, 10)) == 1.1``), the values the user typed.

>>> s = as_scale(1.1)
>>> s.rows, s.floats, output_shape((50, 21), s)
(Fraction(11, 10), (1.1, 1.1), (55, 24))
>>> output_size(21, as_scale("9/7").rows), downscaled_size(27, Fraction(9, 7))
(27, 21)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Rational, Real

__all__ = ["MAX_DENOMINATOR", "Scale", "ScaleError", "ScaleLike", "as_scale", "output_size",
           "output_shape", "downscaled_size", "downscaled_shape"]

#: Largest denominator of a scale: tile offsets are multiples of it (see
#: :class:`geometry.TileGrid`), and a float is read as the ratio it stands for.
MAX_DENOMINATOR = 1000



class ScaleError(ValueError):
    """A scale that is not an exact super-resolution factor (the CLI's ``--scale``: exit 2)."""

    kind = "usage"  # the exit-code class (pipeline.errors.EXIT)


def _ratio(value: object, name: str) -> Fraction:
    """One exact scale component: ``>= 1``, denominator ``<= MAX_DENOMINATOR``.

    A float is the ratio of small integers it stands for (``1.1 -> 11/10``, within
    ``1e-9`` relative); a string is read exactly (``"1.5"``, ``"3/2"``).
    """
    if isinstance(value, str):
        try:
            frac = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ScaleError(f"{name} {value!r} is not a number or a ratio such as 3/2") from None
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    elif isinstance(value, Fraction):
        frac = value
    elif isinstance(value, Integral):
        frac = Fraction(int(value))
    else:
        number = float(value)
        if not math.isfinite(number):
            raise ScaleError(f"{name} must be finite, got {value!r}")
        frac = Fraction(number).limit_denominator(MAX_DENOMINATOR)
        if abs(float(frac) - number) > 1e-9 * max(1.0, abs(number)):
            raise ScaleError(
                f"{name} {value!r} is not a ratio of small integers (denominator <= "
                f"{MAX_DENOMINATOR}); use e.g. {float(frac)!r} ({frac}) instead")
    if frac < 1:
        raise ScaleError(f"{name} must be >= 1 (a super-resolution factor), got {value!r}")
    if frac.denominator > MAX_DENOMINATOR:
        raise ScaleError(f"{name} {frac} has a denominator above {MAX_DENOMINATOR}; "
                         "tile offsets must be multiples of it, choose a simpler ratio")
    return frac


@dataclass(frozen=True)
class Scale:
    """An exact super-resolution factor per axis, ``rows`` then ``cols``.

    Components are validated (and converted like :func:`as_scale` converts one
    number) on construction, so every ``Scale`` is usable by the tile grid.

    >>> Scale(2, 1.5)
    Scale(rows=Fraction(2, 1), cols=Fraction(3, 2))
    >>> sy, sx = Scale(2, 1.5); sx
    Fraction(3, 2)
    >>> Scale(2, 2) / Scale(Fraction(3, 2), 1)
    Scale(rows=Fraction(4, 3), cols=Fraction(2, 1))
    """

    rows: Fraction
    cols: Fraction

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", _ratio(self.rows, "row scale"))
        object.__setattr__(self, "cols", _ratio(self.cols, "col scale"))

    def __iter__(self) -> Iterator[Fraction]:
        return iter((self.rows, self.cols))

    @property
    def floats(self) -> tuple[float, float]:
        """``(rows, cols)`` as floats: what the resampling weights are computed from."""
        return (float(self.rows), float(self.cols))

    @property
    def isotropic(self) -> bool:
        return self.rows == self.cols

    def __truediv__(self, other: Scale) -> Scale:
        """The scale of a step relative to an earlier one (gradual SR)."""
        if not isinstance(other, Scale):
            return NotImplemented
        return Scale(self.rows / other.rows, self.cols / other.cols)

    def __str__(self) -> str:
        return str(self.rows) if self.isotropic else f"({self.rows}, {self.cols})"


_Number = int | float | Fraction | str
ScaleLike = Scale | _Number | tuple[_Number, _Number]  # what as_scale accepts


def as_scale(value: ScaleLike, *, name: str = "scale") -> Scale:
    """The one scale normaliser: a :class:`Scale` from one number or a ``(rows, cols)`` pair.

    Numbers may be ints, floats (read as the ratio of small integers they stand for),
    :class:`~fractions.Fraction` s or strings (``"1.5"``, ``"3/2"``); a ``Scale`` is
    returned as it is.  Errors are one line naming ``name`` and the value.

    >>> as_scale(2.5)
    Scale(rows=Fraction(5, 2), cols=Fraction(5, 2))
    >>> tuple(as_scale((2, "4/3")))
    (Fraction(2, 1), Fraction(4, 3))
    >>> as_scale(0.5)
    Traceback (most recent call last):
    ...
    geometry.scale.ScaleError: scale must be >= 1 (a super-resolution factor), got 0.5
    """
    if isinstance(value, Scale):
        return value
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ScaleError(f"{name} must be a number or a pair (rows, cols), got {value!r}")
        return Scale(_ratio(value[0], f"row {name}"), _ratio(value[1], f"col {name}"))
    frac = _ratio(value, name)
    return Scale(frac, frac)


def _exact(s: object) -> Rational:
    if isinstance(s, bool) or not isinstance(s, Rational):
        raise TypeError(f"an output size needs an exact scale component (an int or a Fraction "
                        f"from geometry.as_scale), got {s!r} ({type(s).__name__})")
    if s <= 0:
        raise ValueError(f"a scale component must be > 0, got {s!r}")
    return s


def output_size(n: int, s: Fraction | int) -> int:
    """The one output-size rule: ``ceil(n * s)`` pixels, exactly (MATLAB ``imresize``).

    >>> output_size(5, Fraction(3, 2)), output_size(4, Fraction(3, 2)), output_size(50, 1)
    (8, 6, 50)
    """
    s = _exact(s)
    return -(-operator.index(n) * s.numerator // s.denominator)


def downscaled_size(n: int, s: Fraction | int) -> int:
    """The inverse direction: ``ceil(n / s)`` pixels, exactly (an HR father's LR son).

    >>> downscaled_size(101, 2), downscaled_size(9, Fraction(3, 2))
    (51, 6)
    """
    s = _exact(s)
    return -(-operator.index(n) * s.denominator // s.numerator)


def output_shape(shape: Sequence[int], scale: Scale) -> tuple[int, int]:
    """``(rows, cols)`` of ``shape[-2:]`` super-resolved by ``scale`` (:func:`output_size`).

    >>> output_shape((3, 50, 51), as_scale(2))
    (100, 102)
    """
    if not isinstance(scale, Scale):
        raise TypeError(f"output_shape needs a Scale (geometry.as_scale), got {scale!r}")
    return (output_size(shape[-2], scale.rows), output_size(shape[-1], scale.cols))


def downscaled_shape(shape: Sequence[int], scale: Scale) -> tuple[int, int]:
    """``(rows, cols)`` of ``shape[-2:]`` downscaled by ``scale`` (:func:`downscaled_size`).

    >>> downscaled_shape((101, 100), as_scale((2, 4)))
    (51, 25)
    """
    if not isinstance(scale, Scale):
        raise TypeError(f"downscaled_shape needs a Scale (geometry.as_scale), got {scale!r}")
    return (downscaled_size(shape[-2], scale.rows), downscaled_size(shape[-1], scale.cols))
