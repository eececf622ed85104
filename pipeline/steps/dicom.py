"""DICOM steps: modality LUT to real-world units and MONOCHROME1 inversion (exact inverses)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from io_adapters.base import Metadata
from io_adapters.errors import InvalidDataError

from .base import Step, restore_values

__all__ = ["ModalityLut", "InvertMonochrome1"]

_F32 = np.dtype("float32")


def _need_dicom(meta: Metadata, step: str) -> None:
    if meta.medical is None:
        raise InvalidDataError(f"{meta.path}: step {step!r} needs a DICOM input "
                               f"(this is {meta.format}); remove it from the chain")


@dataclass(frozen=True)
class ModalityLut(Step):
    """DICOM stored values to real-world units (CT: Hounsfield units), float32; exact inverse.

    Applies each frame's RescaleSlope/RescaleIntercept; the inverse rounds and
    clips to the BitsStored range, so outputs are stored values again.
    """

    name = "modality_lut"
    exact_inverse = True

    def out_meta(self, meta):
        _need_dicom(meta, self.name)
        medical = replace(meta.medical, rescale_slope=1.0, rescale_intercept=0.0,
                          bits_stored=None)
        return replace(meta, dtype=_F32, nodata=None, medical=medical)

    def forward(self, array, masks, meta, frame):
        from io_adapters.dicom import to_real_units

        _need_dicom(meta, self.name)
        return to_real_units(array, meta, frame=frame), masks

    def inverse(self, array, masks, meta, *, source, frame=0):
        from io_adapters.dicom import from_real_units

        return from_real_units(array, source, frame=frame), masks

    def inverse_meta(self, meta, *, source):
        return restore_values(meta, source)


def _stored_bounds(meta: Metadata, step: str) -> tuple[int, int]:
    from io_adapters.dicom import stored_range

    if meta.dtype.kind not in "ui":
        raise InvalidDataError(f"{meta.path}: step {step!r} works on stored integer values "
                               f"(got {meta.dtype}); put it before modality_lut")
    return stored_range(meta)


@dataclass(frozen=True)
class InvertMonochrome1(Step):
    """MONOCHROME1 (white = low) to MONOCHROME2 by ``lo + hi - x`` on stored values; exact inverse.

    A no-op for other photometric interpretations; put it before modality_lut.
    """

    name = "invert_monochrome1"
    exact_inverse = True

    @staticmethod
    def _active(meta: Metadata) -> bool:
        return meta.medical is not None and meta.medical.photometric == "MONOCHROME1"

    def _flip(self, array: np.ndarray, meta: Metadata) -> np.ndarray:
        lo, hi = _stored_bounds(meta, self.name)
        return np.clip(lo + hi - array.astype(np.int64), lo, hi).astype(meta.dtype)

    def out_meta(self, meta):
        if not self._active(meta):
            return meta
        return replace(meta, medical=replace(meta.medical, photometric="MONOCHROME2"))

    def forward(self, array, masks, meta, frame):
        return (self._flip(array, meta) if self._active(meta) else array), masks

    def inverse(self, array, masks, meta, *, source, frame=0):
        return (self._flip(array, source) if self._active(source) else array), masks

    def inverse_meta(self, meta, *, source):
        return restore_values(meta, source) if self._active(source) else meta
