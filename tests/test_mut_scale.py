"""Mutation-killing tests for geometry/scale.py (bench/mutation.py): expected values
are written out here, not computed by the module."""

from __future__ import annotations

from fractions import Fraction

import pytest

from geometry import Scale, ScaleError
from geometry.scale import downscaled_shape, output_shape, output_size


def test_fields_are_normalised_to_fractions_under_their_own_names():
    s = Scale(1.5, "5/2")
    assert s.rows == Fraction(3, 2) and type(s.rows) is Fraction
    assert s.cols == Fraction(5, 2) and type(s.cols) is Fraction
    assert not hasattr(s, "ROWS") and not hasattr(s, "COLS")


@pytest.mark.parametrize("rows, cols, label", [(0.5, 2, "row scale"), (2, 0.5, "col scale")])
def test_each_field_names_itself_in_its_error(rows, cols, label):
    with pytest.raises(ScaleError, match=rf"^{label} must be >= 1"):
        Scale(rows, cols)


def test_output_size_refuses_a_float_naming_its_type():
    with pytest.raises(TypeError, match=r"got 1\.5 \(float\)$"):
        output_size(5, 1.5)


def test_shapes_use_the_last_two_axes_of_a_band_stack():
    s = Scale(2, 3)
    assert output_shape((4, 5, 7), s) == (10, 21)  # (bands, rows, cols): not shape[1]
    assert downscaled_shape((4, 10, 21), s) == (5, 7)
