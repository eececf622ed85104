"""Transfer syntax of derived DICOM: uncompressed, or lossless compressed by pydicom.

Private helper of :mod:`io_adapters.dicom_writer`.  Three names, each a lossless
transfer syntax, so the written stored values are exactly the ones written:

* ``explicit-little``: Explicit VR Little Endian, uncompressed (the default);
* ``rle``: RLE Lossless, pydicom's own encoder (always available);
* ``jpeg2000-lossless``: JPEG 2000 Image Compression (Lossless Only), through pydicom's
  encoder on ``pylibjpeg`` + ``pylibjpeg-openjpeg``; refused in one line, before any
  work, when those are not installed or the image has a side under 32 pixels
  (pylibjpeg-openjpeg encodes with 6 wavelet resolution levels, fixed: OpenJPEG's
  ``opj_start_compress`` fails on 31 x 64, 64 x 31, 20 x 90; 32 x 32 works).

:func:`check_transfer_syntax` is called when a writer is created,
:func:`encode_pixels` on each finished dataset.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.uid import UID, JPEG2000Lossless, RLELossless

from .errors import InvalidDataError

__all__ = ["TRANSFER_SYNTAXES", "check_transfer_syntax", "encode_pixels"]

_J2K_MIN_SIDE = 32  # 2 ** (6 resolution levels - 1), measured: see the module doc

#: name -> (transfer syntax UID, or None for uncompressed; pydicom encoding plugin)
TRANSFER_SYNTAXES: dict[str, tuple[UID | None, str]] = {
    "explicit-little": (None, ""),
    "rle": (RLELossless, "pydicom"),
    "jpeg2000-lossless": (JPEG2000Lossless, "pylibjpeg"),
}


def check_transfer_syntax(name: str, *, path: object = "",
                          shape: tuple[int, int] | None = None) -> str:
    """``name`` if it is known, its encoder is installed and can encode images of
    ``shape`` (rows, columns); else one line saying why not."""
    where = f"{path}: " if path else ""
    if name not in TRANSFER_SYNTAXES:
        raise InvalidDataError(f"{where}transfer syntax {name!r} unknown; choose one of "
                               f"{', '.join(TRANSFER_SYNTAXES)}")
    uid, plugin = TRANSFER_SYNTAXES[name]
    if uid is None:
        return name
    encoder = get_encoder(uid)
    if plugin not in encoder.available_plugins:
        missing = "; ".join(encoder.missing_dependencies) or f"the {plugin} plugin"
        raise InvalidDataError(
            f"{where}transfer syntax {name} needs an encoder that is not installed "
            f"({missing}); install pylibjpeg and pylibjpeg-openjpeg, or choose rle")
    if uid == JPEG2000Lossless and shape is not None and min(shape) < _J2K_MIN_SIDE:
        raise InvalidDataError(
            f"{where}transfer syntax {name}: the output is {shape[0]} x {shape[1]} pixels, "
            f"and the JPEG 2000 encoder needs at least {_J2K_MIN_SIDE} on each side; "
            "choose rle")
    return name


def encode_pixels(ds: Dataset, name: str) -> None:
    """Compress ``ds``'s native PixelData in place to transfer syntax ``name`` (lossless:
    the decoded values equal the native ones); ``explicit-little`` leaves it as it is."""
    uid, plugin = TRANSFER_SYNTAXES[name]
    if uid is None:
        return
    # The SOP Instance UID stays the one the writer gave (and the file meta names);
    # for JPEG 2000 RGB pydicom applies the reversible colour transform and says so in
    # PhotometricInterpretation (YBR_RCT).
    ds.compress(uid, encoding_plugin=plugin, generate_instance_uid=False)
