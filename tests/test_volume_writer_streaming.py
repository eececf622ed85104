"""The NIfTI and DICOM writers stream: memory bounded by a frame, not by the volume (issue 18).

Two claims, each against a reference made here, not by the writer under test:

* **The same files as before.**  The NIfTI writer's ``.nii``/``.nii.gz`` are byte for
  byte what ``nib.save`` writes of the whole array, the header set here by hand (affine,
  sform/qform codes, units, scl_slope/inter, dtype).  The DICOM writer's files are byte
  for byte the whole-array derivation (``derive_dataset``/``derive_thin_frames`` given
  the whole ``(frames, bands, rows, cols)`` array, pydicom's ``Dataset.compress`` for
  RLE and JPEG 2000, ``pydicom.dcmwrite``), SOP Instance UIDs aside (each derivation
  makes a new one); their native PixelData are the test volume's little-endian bytes and
  their compressed frames decode to it.  Frames go in as tiles, out of order.
* **Bounded memory.**  While a volume many frames large is written, Python's heap
  (``tracemalloc``: numpy's buffers are traced) grows by a few frames at most, the
  writer keeps no array larger than a frame, and the NIfTI disk buffer's pages are given
  back (``RssFile`` of ``/proc/self/status`` stays flat).  A whole-volume buffer, a
  ``np.zeros`` of the output or a list of its frames, fails each of these.
"""

from __future__ import annotations

import copy
import gc
import gzip
import io
import os
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _dicom_fixtures import enhanced_with_groups, thick_enhanced, thick_series
from rasterio.windows import Window

from io_adapters._dicom_derive import derive_dataset
from io_adapters._dicom_encode import frame_payload, pixel_data_value
from io_adapters._dicom_frames import stored_range
from io_adapters._dicom_slices import derive_thin_frames, set_slice_attributes, slice_file_names
from io_adapters.base import MedicalInfo, Metadata
from io_adapters.detect import open_reader
from io_adapters.dicom_writer import DicomWriter, scale_dicom_metadata
from io_adapters.errors import WriteError
from io_adapters.nifti import NiftiReader, NiftiWriter
from pipeline.image.volume import through_plane_metadata

AFFINE = np.array([[0.0, -0.8, 0.0, 10.0], [0.72, 0.0, -1.8, -5.0],
                   [0.54, 0.0, 2.4, 7.0], [0.0, 0.0, 0.0, 1.0]])


def _tiles(meta: Metadata, th: int = 5, tw: int = 4):
    """Every ``(frame, window)`` of ``meta`` in tiles, last frame first, tiles reversed."""
    for k in reversed(range(meta.frames)):
        wins = [Window(c, r, min(tw, meta.cols - c), min(th, meta.rows - r))
                for r in range(0, meta.rows, th) for c in range(0, meta.cols, tw)]
        for win in reversed(wins):
            yield k, win


def _fill(writer, meta: Metadata, volume: np.ndarray) -> None:
    """``volume`` ``(frames, bands, rows, cols)`` into ``writer`` tile by tile."""
    for k, w in _tiles(meta):
        r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        writer.write(volume[k, :, r:r + h, c:c + wd], w, frame=k)


def _rng_volume(meta: Metadata, *, lo: float = -500, hi: float = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (meta.frames, meta.bands, meta.rows, meta.cols)
    if meta.dtype.kind == "f":
        return rng.normal(0, 100, shape).astype(meta.dtype)
    info = np.iinfo(meta.dtype)
    return rng.integers(max(lo, info.min), min(hi, info.max) + 1, shape).astype(meta.dtype)


# ------------------------------------------------------------------ NIfTI: same bytes


def _nifti_source(tmp_path: Path, case: str) -> tuple[Metadata, dict]:
    """Source metadata, and what the reference header holds (set here, by hand)."""
    if case == "uint8-not-nifti":  # e.g. from a DICOM or a Zarr: affine from the spacing
        med = MedicalInfo(modality="OT", photometric="MONOCHROME2", pixel_spacing=(0.5, 0.25),
                          slice_thickness=2.0, orientation=None)
        meta = Metadata(path=tmp_path / "src.zarr", format="zarr", bands=1, rows=11, cols=13,
                        dtype=np.dtype("uint8"), frames=6, medical=med)
        return meta, {"affine": np.diag([0.25, 0.5, 2.0, 1.0]), "codes": (1, 1),
                      "units": ("mm", "sec"), "slope": None}
    shape, dtype, slope = {"int16-slope": ((13, 11, 6), np.int16, (0.5, 3.0)),
                           "float32-4d": ((13, 11, 6, 2), np.float32, None)}[case]
    img = nib.Nifti1Image(np.zeros(shape, dtype), AFFINE)
    img.header.set_sform(AFFINE, code=2)
    img.header.set_qform(AFFINE, code=1)
    img.header.set_xyzt_units("mm", "msec")
    if slope:
        img.header.set_slope_inter(*slope)
    nib.save(img, tmp_path / "src.nii")
    stored = nib.load(tmp_path / "src.nii").affine  # AFFINE as float32 sform, read back
    return NiftiReader(tmp_path / "src.nii").meta, {
        "affine": stored, "codes": (2, 1), "units": ("mm", "msec"), "slope": slope}


def _nib_reference(path: Path, volume: np.ndarray, ref: dict) -> bytes:
    """``nib.save`` of the whole array (NIfTI axes ``(i, j, k[, t])``), header by hand."""
    data = volume.transpose(3, 2, 0, 1)  # (frames, bands, rows, cols) -> (i, j, k, t)
    data = data[..., 0] if volume.shape[1] == 1 else data
    img = nib.Nifti1Image(np.ascontiguousarray(data), ref["affine"])
    img.header.set_sform(ref["affine"], code=ref["codes"][0])
    img.header.set_qform(ref["affine"], code=ref["codes"][1])
    img.header.set_xyzt_units(*ref["units"])
    if ref["slope"]:
        img.header.set_slope_inter(*ref["slope"])
    img.header["descrip"] = b"zssr super-resolution"
    img.set_data_dtype(volume.dtype)
    nib.save(img, path)
    return path.read_bytes()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("case", ["int16-slope", "float32-4d", "uint8-not-nifti"])
def test_nifti_bytes_equal_nib_save_of_the_whole_array(tmp_path, case, suffix) -> None:
    meta, ref = _nifti_source(tmp_path, case)
    volume = _rng_volume(meta)
    out = tmp_path / f"out{suffix}"
    with NiftiWriter(out, meta) as writer:
        _fill(writer, meta, volume)
    (tmp_path / "ref").mkdir()
    expected = _nib_reference(tmp_path / "ref" / f"ref{suffix}", volume, ref)
    assert out.read_bytes() == expected
    raw = gzip.decompress(out.read_bytes()) if suffix == ".nii.gz" else out.read_bytes()
    vox = int(nib.load(out).dataobj.offset)
    stored = np.frombuffer(raw[vox:], dtype=volume.dtype)
    np.testing.assert_array_equal(stored, volume.transpose(1, 0, 2, 3).ravel())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_nifti_abort_and_failure_leave_nothing(tmp_path, monkeypatch) -> None:
    meta, _ = _nifti_source(tmp_path, "int16-slope")
    before = set(tmp_path.iterdir())
    writer = NiftiWriter(tmp_path / "out.nii.gz", meta)
    writer.write(_rng_volume(meta)[0], Window(0, 0, meta.cols, meta.rows), frame=0)
    assert [p.name for p in set(tmp_path.iterdir()) - before][0].startswith(".out.nii.gz.")
    writer.abort()
    assert set(tmp_path.iterdir()) == before
    writer = NiftiWriter(tmp_path / "out.nii.gz", meta)
    _fill(writer, meta, _rng_volume(meta))

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(gzip.GzipFile, "write", disk_full)
    with pytest.raises(WriteError, match="cannot write the NIfTI volume"):
        writer.commit()
    assert set(tmp_path.iterdir()) == before


# ------------------------------------------------------------------ DICOM: same bytes


def _dicom_case(tmp_path: Path, case: str, *, factor: float = 2.5, slices: int = 11,
                **geometry) -> Metadata:
    if case == "series":
        with open_reader(thick_series(tmp_path, **geometry)["path"]) as reader:
            return through_plane_metadata(reader.meta, factor, slices)
    if case == "enhanced":
        with open_reader(thick_enhanced(tmp_path, **geometry)["path"]) as reader:
            return through_plane_metadata(reader.meta, factor, slices)
    with open_reader(enhanced_with_groups(tmp_path)) as reader:  # in-plane multi-frame
        return scale_dicom_metadata(reader.meta, geometry.get("scale", 2))


def _dicom_volume(meta: Metadata, seed: int = 0) -> np.ndarray:
    lo, hi = stored_range(meta)
    return _rng_volume(meta, lo=max(lo, -1000), hi=min(hi, 3000), seed=seed)


def _write_bytes(ds: pydicom.Dataset, like: pydicom.Dataset) -> bytes:
    """``ds`` as ``pydicom.dcmwrite`` writes it, with ``like``'s SOP Instance UID."""
    ds.SOPInstanceUID = like.SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = like.SOPInstanceUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


CASES = [("series", "explicit-little"), ("series", "rle"), ("enhanced", "explicit-little"),
         ("enhanced", "rle"), ("multiframe", "explicit-little"), ("multiframe", "rle"),
         ("multiframe", "jpeg2000-lossless")]


@pytest.mark.parametrize(("case", "syntax"), CASES)
def test_dicom_bytes_equal_the_whole_array_derivation(tmp_path, case, syntax) -> None:
    meta = _dicom_case(tmp_path, case)
    volume = _dicom_volume(meta)
    out = tmp_path / ("thin" if case == "series" else "out.dcm")
    writer = DicomWriter(out, meta, transfer_syntax=syntax)
    _fill(writer, meta, volume)
    series = writer._derived  # the new series' UID, number and time, shared with the reference
    writer.commit()
    headers, frames = meta.extra["datasets"], meta.extra["dicom_frames"]
    little = volume.astype(volume.dtype.newbyteorder("<"))
    if case == "series":
        names = slice_file_names(meta.frames)
        assert sorted(p.name for p in out.iterdir()) == names
        for i, name in enumerate(names):
            got = pydicom.dcmread(out / name)
            ref = derive_dataset(headers[frames[i].source], volume[i:i + 1], [frames[i]], meta,
                                 series=series)
            set_slice_attributes(ref, i, meta)
            assert (out / name).read_bytes() == _write_bytes(ref, got), name
            np.testing.assert_array_equal(got.pixel_array, volume[i, 0])
            if syntax == "explicit-little":
                assert got.PixelData == little[i].tobytes()
        return
    got = pydicom.dcmread(out)
    ref = derive_thin_frames(headers[0], volume, meta, series=series) if case == "enhanced" \
        else derive_dataset(headers[0], volume, list(frames), meta, series=series)
    assert out.read_bytes() == _write_bytes(ref, got)
    np.testing.assert_array_equal(got.pixel_array, volume[:, 0])
    if syntax == "explicit-little":
        assert got.PixelData == little.tobytes() + b"\x00" * (little.nbytes % 2)
    else:
        assert got["PixelData"].is_undefined_length
        assert got.PixelData == ref.PixelData  # pydicom's compress() of the whole array
    assert not list(tmp_path.glob(".out.dcm.*"))


def test_extended_offset_table_as_compress_writes_it(tmp_path) -> None:
    """Past the Basic Offset Table's 4 GiB (lowered here), the frames' offsets and lengths
    go into the Extended Offset Table, as ``pydicom.encaps.encapsulate_extended``."""
    from pydicom.encaps import encapsulate_extended

    meta = _dicom_case(tmp_path, "enhanced")
    writer = DicomWriter(tmp_path / "o.dcm", meta, transfer_syntax="rle")
    ds = writer._file_dataset()
    volume = _dicom_volume(meta)
    payloads = [frame_payload(ds, volume[k], "rle") for k in range(meta.frames)]
    spool = tmp_path / "spool"
    spool.write_bytes(b"".join(payloads))
    parts, at = [], 0
    for p in payloads:
        parts.append((at, len(p)))
        at += len(p)
    fd = os.open(spool, os.O_RDONLY)
    try:
        value = pixel_data_value(ds, fd, parts, "rle", bot_limit=100).read()
    finally:
        os.close(fd)
    frames = [p[8:8 + int.from_bytes(p[4:8], "little")] for p in payloads]
    encapsulated, offsets, lengths = encapsulate_extended(frames)
    assert value == encapsulated
    assert (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths) == (offsets, lengths)
    writer.abort()


def test_dicom_failure_on_a_frame_leaves_nothing(tmp_path, monkeypatch) -> None:
    """A slice that cannot be written fails at its write (not later, after the rest has
    been computed) and leaves no folder and no temporary; so does an abort."""
    meta = _dicom_case(tmp_path, "series")
    volume = _dicom_volume(meta)
    before = set(tmp_path.iterdir())
    writer = DicomWriter(tmp_path / "thin", meta)
    full = Window(0, 0, meta.cols, meta.rows)
    for k in range(3):
        writer.write(volume[k], full, frame=k)
    assert len(set(tmp_path.iterdir()) - before) == 1  # the private temporary folder
    writer.abort()
    assert set(tmp_path.iterdir()) == before
    real = pydicom.dcmwrite
    calls = []

    def disk_full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmwrite", disk_full)
    writer = DicomWriter(tmp_path / "thin", meta)
    for k in range(3):
        writer.write(volume[k], full, frame=k)
    with pytest.raises(WriteError, match="cannot write derived DICOM: No space left"):
        writer.write(volume[3], full, frame=3)
    assert set(tmp_path.iterdir()) == before
    with pytest.raises(WriteError, match="writer is aborted"):
        writer.write(volume[4], full, frame=4)


# ------------------------------------------------------------------ bounded memory


def _rss_file_kib() -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((x for x in text.splitlines() if x.startswith("RssFile:")), None)
    return int(line.split()[1]) if line else None


def _largest_array(writer) -> int:
    """Bytes of the largest in-memory array or bytes object the writer holds (one level
    into its dicts and lists); a disk-backed memmap is not memory."""
    def size(value) -> int:
        if isinstance(value, np.memmap):
            return 0
        if isinstance(value, np.ndarray):
            return value.nbytes
        if isinstance(value, bytes | bytearray):
            return len(value)
        return 0

    sizes = [0]
    for value in vars(writer).values():
        items = value.values() if isinstance(value, dict) else value \
            if isinstance(value, list | tuple) else [value]
        sizes += [size(v) for v in items]
    return max(sizes)


def _write_measured(writer, meta: Metadata, frames) -> tuple[int, int, int]:
    """Write whole frames; returns (heap growth from the 2nd frame to the last, heap peak
    above the start, largest array the writer held between writes)."""
    full = Window(0, 0, meta.cols, meta.rows)
    for header in meta.extra.get("datasets", ()):  # CPython makes an object's __dict__ at
        copy.deepcopy(header)  # its first deepcopy, once: per source file, not per frame
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        held, after_first = 0, 0
        for k in range(meta.frames):
            writer.write(frames(k), full, frame=k)
            held = max(held, _largest_array(writer))
            if k == 1:
                gc.collect()  # pydicom datasets hold cycles: count live memory only
                after_first = tracemalloc.get_traced_memory()[0]
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - after_first, peak - start, held


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_memory_is_a_frame_not_the_volume(tmp_path, suffix) -> None:
    med = MedicalInfo(modality="OT", photometric="MONOCHROME2", pixel_spacing=(1.0, 1.0),
                      slice_thickness=1.0, orientation=None)
    meta = Metadata(path=tmp_path / "src.zarr", format="zarr", bands=1, rows=128, cols=256,
                    dtype=np.dtype("int16"), frames=256, medical=med)
    frame_bytes = meta.rows * meta.cols * 2  # 64 KiB; the volume is 16 MiB
    volume_bytes = frame_bytes * meta.frames
    writer = NiftiWriter(tmp_path / f"big{suffix}", meta)
    rss0 = _rss_file_kib()
    growth, peak, held = _write_measured(
        writer, meta, lambda k: np.full((1, meta.rows, meta.cols), k, np.int16))
    rss1 = _rss_file_kib()
    assert held <= frame_bytes, f"writer holds a {held} B array; a frame is {frame_bytes} B"
    assert growth < 2 * frame_bytes, f"heap grew {growth} B over {meta.frames} frames"
    assert peak < 4 * frame_bytes, f"heap peak {peak} B; a frame is {frame_bytes} B"
    if rss0 is not None:  # the disk buffer's pages are given back
        assert (rss1 - rss0) * 1024 < volume_bytes / 8, f"RssFile grew {rss1 - rss0} KiB"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        writer.commit()
        commit_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert commit_peak < volume_bytes / 4, f"commit peak {commit_peak} B"
    data = np.asarray(nib.load(tmp_path / f"big{suffix}").dataobj)
    np.testing.assert_array_equal(data[0, 0, :], np.arange(meta.frames))


@pytest.mark.parametrize(("case", "syntax"), [("series", "explicit-little"),
                                              ("multiframe", "explicit-little"),
                                              ("multiframe", "rle"),
                                              ("enhanced", "explicit-little")])
def test_dicom_memory_is_a_frame_not_the_volume(tmp_path, case, syntax) -> None:
    if case == "series":  # 41 thin slices of 80 x 78
        meta = _dicom_case(tmp_path, case, factor=10, slices=41, rows=80, cols=78)
    elif case == "enhanced":  # 81 thin frames of 44 x 42
        meta = _dicom_case(tmp_path, case, factor=20, slices=81, rows=44, cols=42)
    else:  # 10 frames of 512 x 512 (256 x 256 for pydicom's slow RLE encoder)
        meta = _dicom_case(tmp_path, case, scale=4 if syntax == "rle" else 8)
    frame_bytes = meta.rows * meta.cols * meta.dtype.itemsize
    volume = _dicom_volume(meta, seed=1)
    writer = DicomWriter(tmp_path / ("thin" if case == "series" else "o.dcm"), meta,
                         transfer_syntax=syntax)
    growth, peak, held = _write_measured(writer, meta, lambda k: volume[k])
    writer.commit()
    assert held <= frame_bytes, f"writer holds a {held} B array; a frame is {frame_bytes} B"
    # the frames after the 2nd add at most a frame's worth (bookkeeping: a few bytes each)
    assert growth < max(frame_bytes, 512 * meta.frames), f"heap grew {growth} B"
    if case == "multiframe":  # frames large against the dataset: the peak is a few frames
        bound = (8 if syntax == "rle" else 4) * frame_bytes  # pydicom's RLE encoder copies
        assert peak < bound, f"heap peak {peak} B; a frame is {frame_bytes} B"
    got = pydicom.dcmread(tmp_path / "o.dcm").pixel_array if case != "series" else \
        np.stack([pydicom.dcmread(p).pixel_array for p in sorted((tmp_path / "thin").iterdir())])
    np.testing.assert_array_equal(got, volume[:, 0])
