"""Seeded writers of the small bad (and borderline) input files of the corpus.

Private helper of :mod:`tests.corpus.make_corpus`: every function writes one
file or folder under a given path and returns that path.  Pixel content comes
from a seeded generator; DICOM UIDs are derived from fixed strings, so the
same seed always gives the same bytes (GDAL/zarr versions aside).
"""

from __future__ import annotations

import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"
PNG = DATA / "io" / "plain" / "bridge_40x48.png"
PNG_RGB = DATA / "io" / "plain" / "butterfly_48x64.png"
TIFF = DATA / "io" / "geotiff" / "rgb_byte_96x128.tif"
TIFF_NODATA = DATA / "io" / "geotiff" / "landsat_64x80.tif"
DICOM = DATA / "dicom" / "CT_small.dcm"
DICOM_RLE = DATA / "dicom" / "MR_small_RLE.dcm"
DICOM_MR = DATA / "dicom" / "MR_small.dcm"
DICOM_NO_PIXELS = DATA / "dicom" / "reportsi.dcm"
KERNEL_MAT = DATA / "kernels" / "BSD100_100_lr_rand_ker_c_X2_0.mat"
UID_SEED = "zssr-pipeline tests/corpus v1"


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def truncated(src: Path, dst: Path, size: int) -> Path:
    """The first ``size`` bytes of ``src`` (negative: all but the last ``-size``)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[:size])
    return dst


def text_file(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("this is not an image\n" * 8)
    return dst


def write_tiff(dst: Path, pixels: np.ndarray, **profile) -> Path:
    """A GeoTIFF of ``pixels`` ``(bands, rows, cols)`` with a simple UTM georeference."""
    import rasterio
    from affine import Affine

    dst.parent.mkdir(parents=True, exist_ok=True)
    bands, rows, cols = pixels.shape
    prof = dict(driver="GTiff", width=cols, height=rows, count=bands, dtype=pixels.dtype.name,
                crs="EPSG:32618", transform=Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0))
    prof.update(profile)
    with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"):
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for crs=None
        with rasterio.open(dst, "w", **prof) as ds:
            ds.write(pixels)
    return dst


def cog_copy(src: Path, dst: Path) -> Path:
    """``src`` rewritten as a COG: header and tile index first, pixels after."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rio_copy(src, dst, driver="COG", BLOCKSIZE=64, COMPRESS="DEFLATE", OVERVIEWS="NONE")
    return dst


def _ifd_entries(data: bytes) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """Little-endian classic TIFF: (IFD offset, [(entry offset, tag, type, count, value)])."""
    if data[:4] != b"II*\x00":
        raise ValueError("expected a little-endian classic TIFF")
    ifd = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, ifd)[0]
    out = []
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, typ, count, value = struct.unpack_from("<HHII", data, at)
        out.append((at, tag, typ, count, value))
    return ifd, out


def huge_header_tiff(dst: Path, side: int = 10**6) -> Path:
    """A 16 x 16 one-strip TIFF whose ImageWidth/ImageLength/RowsPerStrip say ``side``.

    The file stays a few hundred bytes; any reader that trusts the header and
    allocates the declared raster would need ``side**2`` bytes.
    """
    small = write_tiff(dst.with_suffix(".small.tif"), np.full((1, 16, 16), 7, np.uint8),
                       crs=None, transform=None, BLOCKYSIZE=16)
    data = bytearray(small.read_bytes())
    small.unlink()
    _, entries = _ifd_entries(bytes(data))
    for at, tag, typ, _count, _value in entries:
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip
            if typ == 3:  # SHORT cannot hold 10**6: rewrite the entry as LONG
                struct.pack_into("<HHII", data, at, tag, 4, 1, side)
            else:
                struct.pack_into("<I", data, at + 8, side)
    dst.write_bytes(bytes(data))
    return dst


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def huge_header_png(dst: Path, side: int = 10**6, bit_depth: int = 8) -> Path:
    """A valid-looking gray PNG whose IHDR declares ``side`` x ``side`` pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                    + _png_chunk(b"IEND", b""))
    return dst


def png_of(dst: Path, pixels: np.ndarray) -> Path:
    """A PNG of a ``(rows, cols)`` uint8 array."""
    import PIL.Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(dst)
    return dst


def jpeg_of(dst: Path, rng: np.random.Generator) -> Path:
    import PIL.Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(dst, quality=90)
    return dst


def zarr_image(dst: Path, pixels: np.ndarray) -> Path:
    """A Zarr v3 group with a ``band_data`` array ``(band, y, x)`` of ``pixels``."""
    import zarr

    group = zarr.open_group(dst, mode="w", zarr_format=3)
    arr = group.create_array("band_data", shape=pixels.shape, dtype=pixels.dtype,
                             dimension_names=("band", "y", "x"))
    arr[...] = pixels
    return dst


def broken_zarr(dst: Path) -> Path:
    dst.mkdir(parents=True)
    (dst / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    return dst


def _dicom(src: Path = DICOM):
    import pydicom

    return pydicom.dcmread(src)


def dicom_edit(dst: Path, src: Path = DICOM, **attrs) -> Path:
    """``src`` with some attributes replaced (``file_meta__X`` edits the file meta)."""
    ds = _dicom(src)
    if "file_meta__TransferSyntaxUID" in attrs:  # a compressed syntax needs fragments
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].is_undefined_length = True
    for key, value in attrs.items():
        if key.startswith("file_meta__"):
            setattr(ds.file_meta, key[len("file_meta__"):], value)
        else:
            setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(dst, enforce_file_format=False)
    return dst


def corrupt_rle(dst: Path, rng: np.random.Generator) -> Path:
    """MR_small_RLE with its RLE segment header and some data bytes overwritten."""
    ds = _dicom(DICOM_RLE)
    data = bytearray(ds.PixelData)
    # the single fragment starts after the basic offset table item (8 + 4 bytes) and
    # its own item header (8 bytes): overwrite the RLE header (number of segments)
    start = 8 + 4 + 8 if data[4:8] == b"\x04\x00\x00\x00" else 16
    data[start:start + 4] = struct.pack("<I", 9)
    for i in rng.integers(start + 64, len(data) - 8, 40):
        data[int(i)] = int(rng.integers(0, 256))
    ds.PixelData = bytes(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def dicom_series(folder: Path, positions_mm: list[float], *, sizes: list[int] | None = None,
                 tag: str = "series") -> Path:
    """Single-frame CT slices of one series at ``positions_mm`` along the slice normal.

    ``sizes[k]`` (rows = columns) crops slice ``k`` to a smaller image.
    """
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    base = _dicom()
    orient = np.asarray([float(v) for v in base.ImageOrientationPatient])
    normal = np.cross(orient[:3], orient[3:])
    origin = np.asarray([float(v) for v in base.ImagePositionPatient])
    series_uid = generate_uid(entropy_srcs=[UID_SEED, tag])
    for k, z in enumerate(positions_mm):
        ds = pydicom.dcmread(DICOM)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[UID_SEED, tag, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + z * normal]
        if sizes is not None and sizes[k] != ds.Rows:
            pixels = ds.pixel_array[:sizes[k], :sizes[k]]
            ds.Rows = ds.Columns = sizes[k]
            ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.save_as(folder / f"IM_{k:02d}.dcm", enforce_file_format=True)
    return folder


def kernel_npy(dst: Path, array: np.ndarray) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.save(dst, array, allow_pickle=False)
    return dst


def kernel_mat(dst: Path, **variables: np.ndarray) -> Path:
    from scipy.io import savemat

    dst.parent.mkdir(parents=True, exist_ok=True)
    savemat(dst, variables)
    return dst


def sparse_tiff(dst: Path, side: int) -> Path:
    """A tiled GeoTIFF declaring ``side`` x ``side`` with no tile written (GDAL SPARSE_OK)."""
    import rasterio
    from affine import Affine

    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(
            dst, "w", driver="GTiff", width=side, height=side, count=1, dtype="uint8",
            tiled=True, blockxsize=1024, blockysize=1024, SPARSE_OK=True, crs="EPSG:32633",
            transform=Affine(30.0, 0.0, 0.0, 0.0, -30.0, 0.0)):
        pass
    return dst


def huge_zarr(dst: Path, side: int) -> Path:
    """A Zarr v3 array declaring ``(side, side)`` uint8 with no chunk written."""
    import zarr

    zarr.create_array(store=str(dst), shape=(side, side), chunks=(4096, 4096), dtype="uint8",
                      dimension_names=("y", "x"))
    return dst


def billion_laughs(dst: Path, levels: int = 9) -> Path:
    """The classic YAML alias bomb: a few hundred bytes expanding to 10**levels items."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    lines.append(f"train: {{max_iters: *a{levels - 1}}}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def dicom_series_edit(folder: Path, **attrs) -> Path:
    """The 3-slice test series (``tests/data/dicom/series``) with attributes replaced."""
    import pydicom

    copy(DATA / "dicom" / "series", folder)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for key, value in attrs.items():
            setattr(ds, key, value)
        ds.save_as(path)
    return folder
