"""DicomReader: layouts, decoding, geometry, real units and every error path."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import DICOM, SERIES_NAMES, add_slice, copy_series, enhanced_with_groups
from pydicom.pixels import convert_color_space

import io_adapters._dicom_header as dicom_header
import io_adapters.dicom as dicom_mod
from io_adapters.base import Reader, Window
from io_adapters.dicom import (
    DicomReader,
    from_real_units,
    open_dicom,
    sniff_dicom,
    stored_range,
    to_real_units,
)
from io_adapters.errors import CorruptFileError, InvalidDataError, UnsupportedFormatError


def _pixels(path) -> np.ndarray:
    a = pydicom.dcmread(path).pixel_array
    return a[np.newaxis] if a.ndim == 2 else a


def test_sniff_files_and_folders(tmp_path):
    (tmp_path / "note.txt").write_text("not dicom")
    assert sniff_dicom(DICOM / "CT_small.dcm")
    assert sniff_dicom(DICOM / "series")
    assert not sniff_dicom(tmp_path / "note.txt")
    assert not sniff_dicom(tmp_path)
    assert not sniff_dicom(tmp_path / "missing.dcm")


def test_single_frame_ct_metadata_and_pixels():
    with open_dicom(DICOM / "CT_small.dcm") as reader:
        assert isinstance(reader, Reader)
        m = reader.meta
        assert (m.format, m.bands, m.rows, m.cols, m.frames, m.dtype) == (
            "dicom", 1, 128, 128, 1, np.dtype("int16"))
        med = m.medical
        assert med.modality == "CT" and med.photometric == "MONOCHROME2"
        assert med.pixel_spacing == (0.661468, 0.661468)
        assert med.positions == ((-158.135803, -179.035797, -75.699997),)
        assert (med.rescale_slope, med.rescale_intercept, med.bits_stored) == (1.0, -1024.0, 16)
        assert m.extra["layout"] == "single" and "PixelData" not in m.extra["dataset"]
        np.testing.assert_array_equal(reader.read(), _pixels(DICOM / "CT_small.dcm"))


def test_window_read_is_boundless():
    with DicomReader(DICOM / "MR_small.dcm") as reader:
        full = reader.read()
        part = reader.read(Window(-2, 60, 8, 8))
        assert part.shape == (1, 8, 8)
        np.testing.assert_array_equal(part[:, :4, 2:], full[:, 60:64, 0:6])
        assert not part[:, 4:].any() and not part[:, :, :2].any()
        mask = reader.read_mask(Window(-2, 60, 8, 8))
        assert mask.dtype == bool and mask[:4, 2:].all() and not mask[4:].any()
        assert reader.read_mask().shape == (64, 64)
        with pytest.raises(ValueError, match="frame 1 out of range"):
            reader.read_mask(frame=1)
        with pytest.raises(ValueError, match="integer offsets"):
            reader.read(Window(0.5, 0, 4, 4))


def test_compressed_sources_decode_to_the_uncompressed_pixels():
    plain = DicomReader(DICOM / "MR_small.dcm").read()
    np.testing.assert_array_equal(DicomReader(DICOM / "MR_small_RLE.dcm").read(), plain)
    np.testing.assert_array_equal(DicomReader(DICOM / "MR_small_jp2klossless.dcm").read(), plain)


def test_ybr_is_converted_to_rgb_and_rgb_bands_selectable():
    path = DICOM / "SC_ybr_full_422_uncompressed.dcm"
    reader = DicomReader(path)
    assert reader.meta.bands == 3 and reader.meta.medical.photometric == "RGB"
    assert reader.meta.extra["source_photometric"] == "YBR_FULL_422"
    ybr = pydicom.dcmread(path).pixel_array  # pydicom converts by default
    np.testing.assert_array_equal(reader.read(), np.moveaxis(ybr, -1, 0))
    raw = pydicom.pixels.pixel_array(str(path), raw=True)
    rgb = convert_color_space(raw, "YBR_FULL", "RGB")
    np.testing.assert_array_equal(reader.read(bands=[2]), np.moveaxis(rgb, -1, 0)[[2]])
    with pytest.raises(InvalidDataError, match="band index 3 out of range"):
        reader.read(bands=[3])


def test_monochrome1_is_recorded_not_inverted(tmp_path):
    path = _modified(tmp_path, PhotometricInterpretation="MONOCHROME1")
    reader = DicomReader(path, cache_frames=1)
    assert reader.meta.medical.photometric == "MONOCHROME1"
    np.testing.assert_array_equal(reader.read(), DicomReader(DICOM / "MR_small.dcm").read())
    assert pickle.loads(pickle.dumps(reader))._cache_frames == 1


def test_enhanced_multiframe_frames_and_functional_groups(tmp_path):
    plain = DicomReader(DICOM / "emri_small.dcm")
    assert plain.meta.frames == 10 and plain.meta.extra["layout"] == "multiframe"
    assert plain.meta.medical.bits_stored == 12 and plain.meta.medical.positions == ()
    stack = _pixels(DICOM / "emri_small.dcm")
    for i in (0, 9):
        np.testing.assert_array_equal(plain.read(frame=i)[0], stack[i])
    with pytest.raises(ValueError, match="frame 10 out of range; the image has 10 frame"):
        plain.read(frame=10)
    reader = DicomReader(enhanced_with_groups(tmp_path))
    frames = reader.meta.extra["dicom_frames"]
    assert reader.meta.medical.pixel_spacing == (0.5, 0.6)
    assert [f.position[2] for f in frames] == pytest.approx([1.2 * i for i in range(10)])
    assert frames[3].slope == 2.5 and frames[3].intercept == -3.0
    assert frames[3].orientation == (1, 0, 0, 0, 1, 0) and frames[3].slice_thickness == 1.2


def test_series_folder_is_sorted_along_the_normal():
    reader = DicomReader(DICOM / "series")
    m = reader.meta
    assert (m.frames, m.extra["layout"]) == (3, "series")
    assert [p.rsplit("/", 1)[-1] for p in m.medical.sources] == list(SERIES_NAMES)
    assert [p[2] for p in m.medical.positions] == pytest.approx([-75.7, -70.7, -65.7])
    base = _pixels(DICOM / "CT_small.dcm")
    for k in range(3):
        np.testing.assert_array_equal(reader.read(frame=k), np.roll(base, 4 * k, axis=2))
    assert reader.header(2).SOPInstanceUID == pydicom.dcmread(
        DICOM / "series" / SERIES_NAMES[2]).SOPInstanceUID


def test_series_without_positions_falls_back_to_instance_number(tmp_path):
    series = copy_series(tmp_path)
    for name in SERIES_NAMES:
        ds = pydicom.dcmread(series / name)
        del ds.ImagePositionPatient
        ds.save_as(series / name)
    reader = DicomReader(series)
    assert [p.rsplit("/", 1)[-1] for p in reader.meta.medical.sources] == list(SERIES_NAMES)
    assert reader.meta.medical.positions == ()


def test_frames_are_decoded_once_and_cached(monkeypatch):
    reader = DicomReader(DICOM / "MR_small_RLE.dcm")
    calls = []
    original = reader._decode
    monkeypatch.setattr(reader, "_decode", lambda f: calls.append(f) or original(f))
    for col in range(0, 64, 16):
        reader.read(Window(col, 0, 16, 16))
    assert calls == [0]


def test_metadata_and_reader_pickle():
    reader = DicomReader(DICOM / "series")
    meta = pickle.loads(pickle.dumps(reader.meta))
    assert meta.extra["datasets"][1].SOPInstanceUID == reader.header(1).SOPInstanceUID
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(frame=1), reader.read(frame=1))
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read()


def test_real_units_round_trip_exactly(tmp_path):
    ct = DicomReader(DICOM / "CT_small.dcm")
    stored = ct.read()
    hu = to_real_units(stored, ct.meta)
    assert hu.dtype == np.float32 and hu.min() == stored.min() - 1024
    np.testing.assert_array_equal(from_real_units(hu, ct.meta), stored)
    mr = DicomReader(enhanced_with_groups(tmp_path))  # 12-bit unsigned, slope 1 + 0.5 i
    assert stored_range(mr.meta) == (0, 4095)
    values = np.arange(4096, dtype=np.uint16).reshape(1, 64, 64)
    for frame in (0, 7):
        real = to_real_units(values, mr.meta, frame=frame)
        np.testing.assert_array_equal(from_real_units(real, mr.meta, frame=frame), values)
    clipped = from_real_units(np.array([-50.0, 1e6, 10.4, np.nan]), mr.meta, frame=0)
    assert clipped.dtype == np.uint16 and clipped.tolist() == [0, 4095, 10, 0]


def test_zero_slope_cannot_be_inverted(tmp_path):
    ds = pydicom.dcmread(DICOM / "CT_small.dcm")
    ds.RescaleSlope = 0
    ds.save_as(tmp_path / "zero.dcm")
    with pytest.raises(InvalidDataError, match="RescaleSlope 0"):
        from_real_units(np.zeros(3), DicomReader(tmp_path / "zero.dcm").meta)


# -- errors -----------------------------------------------------------------------------

def _truncate(tmp_path, name: str, keep: int):
    data = (DICOM / name).read_bytes()
    out = tmp_path / f"cut_{name}"
    out.write_bytes(data[:keep])  # a negative keep drops bytes from the end
    return out


def test_not_dicom_and_missing_path(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(UnsupportedFormatError, match=r"x\.dcm: not a DICOM Part 10 file"):
        DicomReader(tmp_path / "x.dcm")
    with pytest.raises(UnsupportedFormatError, match="no such DICOM file"):
        DicomReader(tmp_path / "nothing.dcm")
    with pytest.raises(UnsupportedFormatError, match="holds no DICOM Part 10 files"):
        DicomReader(tmp_path)


def test_dicom_without_pixel_data():
    with pytest.raises(InvalidDataError, match=r"reportsi\.dcm: .*Basic Text SR.*no PixelData"):
        DicomReader(DICOM / "reportsi.dcm")


@pytest.mark.parametrize(("name", "keep", "what"), [
    ("CT_small.dcm", -3000, "element \\(7FE0,0010\\) needs"),  # inside the pixel data
    ("CT_small.dcm", 1998, "ends inside an element header"),
    ("CT_small.dcm", 500, "element \\(0008,0018\\) needs"),
    ("MR_small_RLE.dcm", 4790, "ends inside a sequence"),  # inside encapsulated frames
])
def test_truncated_files(tmp_path, name, keep, what):
    with pytest.raises(CorruptFileError, match=f"cut_{name}: truncated or damaged.*{what}"):
        DicomReader(_truncate(tmp_path, name, keep))


def test_short_native_pixel_data(tmp_path):
    ds = pydicom.dcmread(DICOM / "MR_small.dcm")
    ds.PixelData = ds.PixelData[:-200]
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(CorruptFileError, match=r"short\.dcm: truncated pixel data: 7992 bytes"):
        DicomReader(tmp_path / "short.dcm")


def test_corrupt_rle_frame_fails_on_read(tmp_path):
    ds = pydicom.dcmread(DICOM / "MR_small_RLE.dcm")
    data = bytearray(ds.PixelData)
    data[100:400] = b"\xff" * 300
    ds.PixelData = bytes(data)
    ds.save_as(tmp_path / "bad_rle.dcm")
    reader = DicomReader(tmp_path / "bad_rle.dcm")
    with pytest.raises(CorruptFileError, match=r"bad_rle\.dcm: frame 0 cannot be decoded \(RLE"):
        reader.read()


def test_damaged_header(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("bad tag")

    monkeypatch.setattr(pydicom, "dcmread", broken)
    with pytest.raises(CorruptFileError, match="damaged DICOM header: 'bad tag'"):
        DicomReader(DICOM / "MR_small.dcm")


def test_unreadable_file(monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError("permission denied")

    monkeypatch.setattr(pydicom, "dcmread", denied)
    with pytest.raises(CorruptFileError, match="cannot read DICOM file: permission denied"):
        DicomReader(DICOM / "MR_small.dcm")


def _modified(tmp_path, name="MR_small.dcm", **changes):
    ds = pydicom.dcmread(DICOM / name)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(tmp_path / "modified.dcm")
    return tmp_path / "modified.dcm"


@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"PhotometricInterpretation": "PALETTE COLOR"}, InvalidDataError, "PALETTE COLOR"),
    ({"BitsAllocated": 1}, InvalidDataError, "BitsAllocated 1 is not supported"),
    ({"Rows": None}, InvalidDataError, "image pixel module lacks Rows"),
    ({"Columns": 0}, InvalidDataError, "empty image"),
])
def test_unsupported_pixel_modules(tmp_path, changes, error, match):
    with pytest.raises(error, match=match):
        DicomReader(_modified(tmp_path, **changes))


def test_unsupported_and_missing_transfer_syntax(tmp_path):
    ds = pydicom.dcmread(DICOM / "MR_small_RLE.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    ds.save_as(tmp_path / "mpeg.dcm")
    with pytest.raises(UnsupportedFormatError, match="MPEG2 .* cannot be decoded; supported"):
        DicomReader(tmp_path / "mpeg.dcm")
    ds = pydicom.dcmread(DICOM / "MR_small.dcm")
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(tmp_path / "nots.dcm", implicit_vr=False, little_endian=True)
    with pytest.raises(InvalidDataError, match="file meta lacks TransferSyntaxUID"):
        DicomReader(tmp_path / "nots.dcm")


def test_missing_decoder_plugin(monkeypatch):
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg-rle - requires pylibjpeg-rle"]

    monkeypatch.setattr(dicom_header, "get_decoder", lambda uid: Unavailable())  # at open
    with pytest.raises(UnsupportedFormatError, match="no decoder installed for RLE.*pylibjpeg"):
        DicomReader(DICOM / "MR_small_RLE.dcm")


def test_decoded_shape_mismatch(monkeypatch):
    reader = DicomReader(DICOM / "MR_small.dcm")

    class Wrong:
        def as_array(self, ds, index):
            return np.zeros((32, 64), np.int16), {}

    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: Wrong())
    with pytest.raises(CorruptFileError, match=r"frame 0 decodes to \(1, 32, 64\)"):
        reader.read()


def test_per_frame_groups_must_match_frame_count(tmp_path):
    path = enhanced_with_groups(tmp_path)
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:4]
    ds.save_as(path)
    with pytest.raises(InvalidDataError, match="PerFrameFunctionalGroupsSequence has 4 items "
                                               "for 10 frames"):
        DicomReader(path)


def test_series_errors(tmp_path):
    series = copy_series(tmp_path)
    add_slice(series, "IM_z.dcm", z=-75.7 + 20.0)  # slices at 0, 5, 10 and 20 mm
    with pytest.raises(InvalidDataError, match="irregular slice spacing: 10.000 mm between "
                                               "IM_b.dcm and IM_z.dcm.*missing slice"):
        DicomReader(series)
    add_slice(series, "IM_z.dcm", z=-70.7)
    with pytest.raises(InvalidDataError, match="share the position"):
        DicomReader(series)
    shutil.copy(DICOM / "MR_small.dcm", series / "IM_z.dcm")
    with pytest.raises(InvalidDataError, match=r"slice IM_z\.dcm is 1 frame\(s\) of 64x64.*"
                                               "all slices must match"):
        DicomReader(series)
    add_slice(series, "IM_z.dcm", z=-60.7, SeriesInstanceUID="1.2.3.4")
    with pytest.raises(InvalidDataError, match="SeriesInstanceUID 1.2.3.4.*one series"):
        DicomReader(series)
    add_slice(series, "IM_z.dcm", z=-60.7, PixelSpacing=[0.5, 0.5])
    with pytest.raises(InvalidDataError, match=r"IM_z\.dcm has pixel spacing \(0\.5, 0\.5\)"):
        DicomReader(series)
    add_slice(series, "IM_z.dcm", z=-60.7, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    with pytest.raises(InvalidDataError, match="share one orientation"):
        DicomReader(series)


def test_series_of_multiframe_files_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    shutil.copy(DICOM / "emri_small.dcm", tmp_path / "s" / "a.dcm")
    with pytest.raises(InvalidDataError, match="has 10 frames; a folder series must hold"):
        DicomReader(tmp_path / "s")


def test_series_that_cannot_be_ordered(tmp_path):
    series = copy_series(tmp_path)
    for name in SERIES_NAMES:
        ds = pydicom.dcmread(series / name)
        del ds.ImagePositionPatient
        ds.InstanceNumber = 7
        ds.save_as(series / name)
    with pytest.raises(InvalidDataError, match="share InstanceNumber 7 and have no position"):
        DicomReader(series)
    for name in SERIES_NAMES:
        ds = pydicom.dcmread(series / name)
        del ds.InstanceNumber
        ds.save_as(series / name)
    with pytest.raises(InvalidDataError, match="cannot order the slices"):
        DicomReader(series)
