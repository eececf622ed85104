"""scale_dicom_metadata and DicomWriter: derived-DICOM round trips, atomicity, errors
(dciodvfy on every test DICOM: tests/test_dicom_derived_series.py)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import (
    DICOM,
    SERIES_NAMES,
    enhanced_with_groups,
    upsample,
)
from pydicom.uid import ExplicitVRLittleEndian

from io_adapters.base import Metadata, Window, Writer, full_window
from io_adapters.dicom import (
    DicomReader,
    DicomWriter,
    from_real_units,
    scale_dicom_metadata,
    to_real_units,
)
from io_adapters.errors import InvalidDataError, WriteError

# Patient and study attributes that a derived image must copy unchanged.
STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                  "ReferringPhysicianName", "StudyID", "StudyDescription")


def _write_upsampled(reader: DicomReader, out, scale=(2, 2), **kwargs) -> Metadata:
    meta = scale_dicom_metadata(reader.meta, scale)
    with DicomWriter(out, meta, **kwargs) as writer:
        for i in range(meta.frames):
            writer.write(upsample(reader.read(frame=i), *scale), full_window(meta), frame=i)
    return meta


def _assert_patient_and_study_kept(src: pydicom.Dataset, out: pydicom.Dataset) -> None:
    for tag in {e.tag for e in src if e.tag.group == 0x0010} | {
            e.tag for e in out if e.tag.group == 0x0010}:
        assert out[tag] == src[tag]
    for keyword in STUDY_KEYWORDS:
        assert out.get(keyword) == src.get(keyword)


def test_scale_dicom_metadata_geometry():
    meta = DicomReader(DICOM / "CT_small.dcm").meta
    x2 = scale_dicom_metadata(meta, 2)
    assert (x2.rows, x2.cols) == (256, 256)
    assert x2.medical.pixel_spacing == pytest.approx((0.330734, 0.330734))
    # orientation is the identity: x follows the row direction, y the column direction
    shift = -0.25 * 0.661468
    assert x2.medical.positions[0] == pytest.approx(
        (-158.135803 + shift, -179.035797 + shift, -75.699997), abs=1e-9)
    odd = scale_dicom_metadata(meta, (1.5, 3))
    assert (odd.rows, odd.cols) == (192, 384) and odd.extra["scale"] == (1.5, 3.0)
    assert odd.medical.positions[0][0] == pytest.approx(-158.135803 - (1 - 1 / 3) / 2 * 0.661468)
    assert odd.medical.positions[0][1] == pytest.approx(-179.035797 - (1 - 1 / 1.5) / 2 * 0.661468)
    assert scale_dicom_metadata(x2, 2).extra["scale"] == (4.0, 4.0)
    with pytest.raises(ValueError, match=r"^scale must be >= 1 \(a super-resolution factor\), "
                                         r"got 0$"):
        scale_dicom_metadata(meta, 0)
    with pytest.raises(InvalidDataError, match="not DICOM metadata"):
        scale_dicom_metadata(Metadata(path=meta.path, format="plain", bands=1, rows=2, cols=2,
                                      dtype=np.dtype("uint8")), 2)


def test_single_frame_round_trip(tmp_path):
    src_path = DICOM / "CT_small.dcm"
    reader = DicomReader(src_path)
    meta = _write_upsampled(reader, tmp_path / "ct_x2.dcm")
    out = pydicom.dcmread(tmp_path / "ct_x2.dcm")
    src = pydicom.dcmread(src_path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SOPInstanceUID != src.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert "Zero-Shot Super-Resolution x2 (zssr-pipeline" in out.DerivationDescription
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert out.DerivationCodeSequence[0].CodeValue == "113085"
    assert out.SeriesDescription == "ZSSR x2" and "SeriesDescription" not in src
    assert (out.Rows, out.Columns) == (256, 256)
    assert [float(v) for v in out.PixelSpacing] == [0.330734, 0.330734]
    assert [float(v) for v in out.ImagePositionPatient] == pytest.approx(
        meta.medical.positions[0], abs=1e-5)
    assert (out.SliceThickness, out.RescaleSlope, out.RescaleIntercept) == (
        src.SliceThickness, src.RescaleSlope, src.RescaleIntercept)
    _assert_patient_and_study_kept(src, out)
    back = DicomReader(tmp_path / "ct_x2.dcm")
    assert back.meta.dtype == np.int16
    real_in = to_real_units(reader.read(), reader.meta)
    real_out = to_real_units(back.read(), back.meta)
    np.testing.assert_array_equal(real_out[:, ::2, ::2], real_in)
    np.testing.assert_array_equal(from_real_units(real_out, back.meta), back.read())


def test_rle_source_is_written_uncompressed(tmp_path):
    _write_upsampled(DicomReader(DICOM / "MR_small_RLE.dcm"), tmp_path / "mr.dcm")
    out = pydicom.dcmread(tmp_path / "mr.dcm")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out["PixelData"].VR == "OW" and len(out.PixelData) == 128 * 128 * 2
    expected = upsample(DicomReader(DICOM / "MR_small.dcm").read(), 2, 2)
    np.testing.assert_array_equal(DicomReader(tmp_path / "mr.dcm").read(), expected)


def test_lossy_source_stays_marked_lossy(tmp_path):
    reader = DicomReader(DICOM / "JPEGLSNearLossless_08.dcm")  # no LossyImageCompression
    _write_upsampled(reader, tmp_path / "ls.dcm")
    out = pydicom.dcmread(tmp_path / "ls.dcm")
    assert (out.LossyImageCompression, out.LossyImageCompressionMethod) == ("01", "ISO_14495_1")
    np.testing.assert_array_equal(DicomReader(tmp_path / "ls.dcm").read()[:, ::2, ::2],
                                  reader.read())


def test_rgb_from_ybr_is_written_as_interleaved_rgb(tmp_path):
    reader = DicomReader(DICOM / "SC_ybr_full_422_uncompressed.dcm")
    _write_upsampled(reader, tmp_path / "rgb.dcm", scale=(3, 2))
    out = pydicom.dcmread(tmp_path / "rgb.dcm")
    assert (out.PhotometricInterpretation, out.PlanarConfiguration) == ("RGB", 0)
    assert out["PixelData"].VR == "OB"
    np.testing.assert_array_equal(DicomReader(tmp_path / "rgb.dcm").read(),
                                  upsample(reader.read(), 3, 2))


def test_odd_length_pixel_data_is_padded(tmp_path):
    reader = DicomReader(DICOM / "SC_rgb_small_odd.dcm")  # 3x3 RGB: 27 bytes
    _write_upsampled(reader, tmp_path / "odd.dcm", scale=(3, 1))  # 9x3x3 = 81 bytes
    assert len(pydicom.dcmread(tmp_path / "odd.dcm").PixelData) == 82
    np.testing.assert_array_equal(DicomReader(tmp_path / "odd.dcm").read(),
                                  upsample(reader.read(), 3, 1))


def test_enhanced_multiframe_functional_groups(tmp_path):
    reader = DicomReader(enhanced_with_groups(tmp_path))
    meta = _write_upsampled(reader, tmp_path / "enh_x2.dcm")
    out = pydicom.dcmread(tmp_path / "enh_x2.dcm")
    assert int(out.NumberOfFrames) == 10 and list(out.ImageType)[:2] == ["DERIVED", "PRIMARY"]
    shared = out.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.25, 0.3]
    for i, item in enumerate(out.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([-10 - 0.25 * 0.6, -20 - 0.25 * 0.5, 1.2 * i])
        assert position == pytest.approx(meta.medical.positions[i])
        assert float(item.PixelValueTransformationSequence[0].RescaleSlope) == 1 + 0.5 * i
        assert item.MRImageFrameTypeSequence[0].FrameType[:2] == ["DERIVED", "PRIMARY"]
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedFrameNumber == i + 1
    back = DicomReader(tmp_path / "enh_x2.dcm")
    for i in (0, 9):
        np.testing.assert_array_equal(
            to_real_units(back.read(frame=i), back.meta, frame=i)[:, ::2, ::2],
            to_real_units(reader.read(frame=i), reader.meta, frame=i))


def test_series_round_trip(tmp_path):
    reader = DicomReader(DICOM / "series")
    meta = _write_upsampled(reader, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(SERIES_NAMES)
    outs = [pydicom.dcmread(tmp_path / "out" / n) for n in SERIES_NAMES]
    srcs = [pydicom.dcmread(DICOM / "series" / n) for n in SERIES_NAMES]
    assert len({o.SeriesInstanceUID for o in outs}) == 1
    assert outs[0].SeriesInstanceUID != srcs[0].SeriesInstanceUID
    assert len({o.SOPInstanceUID for o in outs} | {s.SOPInstanceUID for s in srcs}) == 6
    for k, (out, src) in enumerate(zip(outs, srcs, strict=True)):
        _assert_patient_and_study_kept(src, out)
        assert [float(v) for v in out.ImagePositionPatient] == pytest.approx(
            meta.medical.positions[k], abs=1e-5)
    back = DicomReader(tmp_path / "out")
    for k in range(3):
        np.testing.assert_array_equal(back.read(frame=k)[:, ::2, ::2], reader.read(frame=k))


def test_writer_is_atomic(tmp_path):
    reader = DicomReader(DICOM / "MR_small.dcm")
    meta = scale_dicom_metadata(reader.meta, 2)
    writer = DicomWriter(tmp_path / "mr.dcm", meta)
    assert isinstance(writer, Writer)
    writer.write(upsample(reader.read(), 2, 2)[:, :64], Window(0, 0, 128, 64))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match=r"frames \[0\] were not completely written"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), DicomWriter(tmp_path / "mr.dcm", meta) as writer:
        writer.write(upsample(reader.read(), 2, 2), full_window(meta))
        raise RuntimeError("engine failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match="writer is aborted"):
        writer.write(upsample(reader.read(), 2, 2), full_window(meta))
    with pytest.raises(WriteError, match="was aborted; nothing to commit"):
        writer.commit()


def test_commit_failure_leaves_nothing(tmp_path, monkeypatch):
    """A slice goes to disk when its frame is complete: the disk filling up on the second
    slice, after the first was saved, fails that write and leaves nothing behind."""
    reader = DicomReader(DICOM / "series")
    meta = scale_dicom_metadata(reader.meta, 2)
    real = pydicom.dcmwrite
    saved = []

    def disk_full(path, *args, **kwargs):
        if saved:
            raise OSError("No space left on device")
        real(path, *args, **kwargs)
        saved.append(path)

    monkeypatch.setattr(pydicom, "dcmwrite", disk_full)
    writer = DicomWriter(tmp_path / "out", meta)
    writer.write(upsample(reader.read(frame=0), 2, 2), full_window(meta), frame=0)
    assert len(saved) == 1 and saved[0].is_file()  # the first slice is on disk, in a temporary
    with pytest.raises(WriteError, match="cannot write derived DICOM: No space left"):
        writer.write(upsample(reader.read(frame=1), 2, 2), full_window(meta), frame=1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WriteError, match="writer was aborted"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_replaced_on_commit(tmp_path):
    reader = DicomReader(DICOM / "series")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.dcm").write_bytes(b"old")
    with pytest.raises(WriteError, match="not a folder of DICOM files written by zssr"):
        _write_upsampled(reader, tmp_path / "out", overwrite=True)  # the output rule
    (tmp_path / "out" / "stale.dcm").write_bytes(bytes(128) + b"DICM")  # an earlier output
    with pytest.raises(WriteError, match="output already exists"):
        _write_upsampled(reader, tmp_path / "out")
    _write_upsampled(reader, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SERIES_NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    first = _write_upsampled(DicomReader(DICOM / "MR_small.dcm"), tmp_path / "a.dcm")
    before = (tmp_path / "a.dcm").read_bytes()
    DicomWriter(tmp_path / "a.dcm", first, overwrite=True).abort()  # old file is kept
    assert (tmp_path / "a.dcm").read_bytes() == before


def test_writer_rejects_bad_input(tmp_path):
    reader = DicomReader(DICOM / "MR_small.dcm")
    meta = scale_dicom_metadata(reader.meta, 2)
    writer = DicomWriter(tmp_path / "mr.dcm", meta)
    good = upsample(reader.read(), 2, 2)
    with pytest.raises(InvalidDataError, match="takes stored values.*from_real_units"):
        writer.write(good.astype(np.float32), full_window(meta))
    with pytest.raises(InvalidDataError, match=r"outside the stored range -32768\.\.32767"):
        writer.write(good.astype(np.int32) + 40000, full_window(meta))
    with pytest.raises(ValueError, match="writes must be in bounds"):
        writer.write(good, Window(1, 0, 128, 128))
    with pytest.raises(ValueError, match="does not fit window"):
        writer.write(good[:, :64], full_window(meta))
    with pytest.raises(ValueError, match="frame 1 out of range"):
        writer.write(good, full_window(meta), frame=1)
    writer.write(good, full_window(meta))
    assert writer.commit() == writer.commit() == (tmp_path / "mr.dcm").resolve()
    writer.abort()  # a committed output stays
    assert (tmp_path / "mr.dcm").exists()


def test_writer_refuses_bad_paths_and_metadata(tmp_path):
    meta = scale_dicom_metadata(DicomReader(DICOM / "MR_small.dcm").meta, 2)
    with pytest.raises(WriteError, match="output path equals the input"):
        DicomWriter(DICOM / "MR_small.dcm", meta)
    with pytest.raises(WriteError, match="is a folder; give a .dcm file name"):
        DicomWriter(tmp_path, meta, overwrite=True)
    series = scale_dicom_metadata(DicomReader(DICOM / "series").meta, 2)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(WriteError, match="a series is written as a folder, but a file exists"):
        DicomWriter(tmp_path / "file", series, overwrite=True)
    plain = Metadata(path=tmp_path, format="plain", bands=1, rows=2, cols=2,
                     dtype=np.dtype("uint8"))
    with pytest.raises(InvalidDataError, match="needs DICOM metadata from DicomReader"):
        DicomWriter(tmp_path / "x.dcm", plain)
