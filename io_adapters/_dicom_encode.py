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
:func:`encode_pixels` on each finished dataset of one frame.  A multi-frame file is
streamed instead (the writer never holds its frames): :func:`frame_payload` turns each
finished frame into the bytes it takes in (7FE0,0010), native or one encoded item
(each frame encoded alone, as ``Dataset.compress`` encodes it), the writer appends them
to a spool file, and :func:`pixel_data_value` makes the element's value a
:class:`SpoolReader`, a buffered value pydicom's ``dcmwrite`` copies in chunks (pydicom
3 buffered element values): the frames in order, after the Basic Offset Table (or the
Extended Offset Table elements, as ``compress`` does past 4 GiB) when encapsulated.
"""

from __future__ import annotations

import io
import os
from bisect import bisect_right
from struct import pack

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_encoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, JPEG2000Lossless, RLELossless

from .errors import InvalidDataError

__all__ = ["TRANSFER_SYNTAXES", "SpoolReader", "check_transfer_syntax", "encode_pixels",
           "frame_payload", "native_bytes", "pixel_data_value"]

_ITEM = b"\xFE\xFF\x00\xE0"  # (FFFE,E000) Item, little endian
_BOT_LIMIT = 2**32 - 1  # past it, compress() uses the Extended Offset Table

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


def native_bytes(pixels: np.ndarray) -> bytes:
    """``(frames, bands, rows, cols)`` or one ``(bands, rows, cols)`` frame as native
    little-endian PixelData bytes, samples interleaved (not padded)."""
    interleaved = np.ascontiguousarray(np.moveaxis(pixels, -3, -1))
    return interleaved.astype(interleaved.dtype.newbyteorder("<"), copy=False).tobytes()


def frame_payload(ds: Dataset, frame: np.ndarray, name: str) -> bytes:
    """What one ``(bands, rows, cols)`` frame of ``ds`` (its pixel module set, without
    PixelData) adds to (7FE0,0010) in transfer syntax ``name``: its native bytes, or
    one item of the encoded frame (padded to even length, as ``encapsulate`` does)."""
    data = native_bytes(frame)
    uid, plugin = TRANSFER_SYNTAXES[name]
    if uid is None:
        return data
    options = as_pixel_options(ds, number_of_frames=1)
    encoded = get_encoder(uid).encode(data, encoding_plugin=plugin, **options)
    encoded += b"\x00" * (len(encoded) % 2)
    return _ITEM + pack("<I", len(encoded)) + encoded


class SpoolReader(io.BufferedIOBase):
    """A read-only, seekable view of ``prefix`` then ``parts`` (``(offset, length)``
    byte ranges of the file ``fd``, read with ``os.pread``) then ``suffix``: an element
    value pydicom writes without holding it."""

    def __init__(self, fd: int, parts: list[tuple[int, int]], *, prefix: bytes = b"",
                 suffix: bytes = b"") -> None:
        super().__init__()
        self._fd = fd
        self._pieces: list[bytes | tuple[int, int]] = [prefix, *parts, suffix]
        sizes = [len(p) if isinstance(p, bytes) else p[1] for p in self._pieces]
        self._starts = [0]
        for size in sizes:
            self._starts.append(self._starts[-1] + size)
        self._pos = 0

    @property
    def length(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.length if size is None or size < 0 else min(self.length, self._pos + size)
        out = bytearray()
        while self._pos < end:
            i = bisect_right(self._starts, self._pos) - 1
            piece, inner = self._pieces[i], self._pos - self._starts[i]
            count = min(end, self._starts[i + 1]) - self._pos
            if isinstance(piece, bytes):
                chunk = piece[inner:inner + count]
            else:
                chunk = os.pread(self._fd, count, piece[0] + inner)
                if not chunk:
                    raise OSError(f"spool file ended {count} bytes early")
            out += chunk
            self._pos += len(chunk)
        return bytes(out)

    read1 = read


def pixel_data_value(ds: Dataset, fd: int, parts: list[tuple[int, int]], name: str, *,
                     bot_limit: int = _BOT_LIMIT) -> SpoolReader:
    """Set what (7FE0,0010) of ``ds`` needs besides its value, and return the value: the
    frame payloads ``parts`` of the spool file ``fd`` in frame order.  Native: padded to
    even length.  Encapsulated: after a Basic Offset Table of the items' offsets, or,
    when those pass ``bot_limit``, an empty one and the Extended Offset Table elements
    (``Dataset.compress``'s rule); undefined length and the transfer syntax set."""
    uid, _ = TRANSFER_SYNTAXES[name]
    total = sum(length for _, length in parts)
    if uid is None:
        return SpoolReader(fd, parts, suffix=b"\x00" * (total % 2))
    offsets = [0]
    for _, length in parts[:-1]:
        offsets.append(offsets[-1] + length)
    if offsets[-1] > bot_limit:
        ds.ExtendedOffsetTable = pack(f"<{len(parts)}Q", *offsets)
        ds.ExtendedOffsetTableLengths = pack(f"<{len(parts)}Q",
                                             *(length - 8 for _, length in parts))
        bot = _ITEM + pack("<I", 0)
    else:
        bot = _ITEM + pack("<I", 4 * len(parts)) + pack(f"<{len(parts)}I", *offsets)
    ds.file_meta.TransferSyntaxUID = uid
    return SpoolReader(fd, parts, prefix=bot)
