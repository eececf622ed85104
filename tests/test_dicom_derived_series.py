"""Derived DICOM that passes (issue 18.5): the new series, the creating software, lossless
compressed transfer syntaxes, and dciodvfy finding no new errors on every DICOM image of
tests/data/dicom (single-frame, RGB, YBR, lossy-compressed sources, a folder series, the
enhanced MR with and without functional groups) in every transfer syntax."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom_fixtures import DICOM, SERIES_NAMES, dciodvfy_errors, enhanced_with_groups, upsample
from conftest import require_tool
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

import io_adapters._dicom_encode as encode
from io_adapters.base import full_window
from io_adapters.dicom import DicomReader, DicomWriter, scale_dicom_metadata
from io_adapters.errors import InvalidDataError
from io_adapters.provenance import Provenance

SYNTAXES = {"explicit-little": ExplicitVRLittleEndian, "rle": RLELossless,
            "jpeg2000-lossless": JPEG2000Lossless}
# Every image in tests/data/dicom (reportsi.dcm is a Basic Text SR: no pixels), a folder
# series and the enhanced MR given functional groups.
SOURCES = ("CT_small.dcm", "JPEGLSNearLossless_08.dcm", "MR_small.dcm", "MR_small_RLE.dcm",
           "MR_small_jp2klossless.dcm", "SC_rgb_small_odd.dcm",
           "SC_ybr_full_422_uncompressed.dcm", "emri_small.dcm", "series", "enhanced")
PROVENANCE = Provenance(software="zssr-pipeline", version="9.8.7", source="x", scale="2",
                        kernel="bicubic", config_sha256="0" * 64)


def _source(name: str, tmp_path: Path) -> Path:
    return enhanced_with_groups(tmp_path) if name == "enhanced" else DICOM / name


def _write(src: Path, out: Path, **options) -> Path:
    reader = DicomReader(src)
    meta = scale_dicom_metadata(reader.meta, 2)
    with DicomWriter(out, meta, **options) as writer:
        for i in range(meta.frames):
            writer.write(upsample(reader.read(frame=i), 2, 2), full_window(meta), frame=i)
    return out


def _pairs(src: Path, out: Path) -> list[tuple[Path, Path]]:
    return [(src / n, out / n) for n in SERIES_NAMES] if src.is_dir() else [(src, out)]


def _output(name: str, tmp_path: Path, syntax: str) -> Path:
    return tmp_path / (syntax if name == "series" else f"{syntax}.dcm")


@pytest.mark.parametrize("name", ["CT_small.dcm", "series", "enhanced"])
def test_in_plane_output_is_a_new_series_made_now_by_zssr(tmp_path, name):
    src = _source(name, tmp_path)
    before = datetime.datetime.now().replace(microsecond=0)
    out = _write(src, _output(name, tmp_path, "explicit-little"), provenance=PROVENANCE)
    after = datetime.datetime.now()
    series_uids = set()
    for source_file, output_file in _pairs(src, out):
        old, new = pydicom.dcmread(source_file), pydicom.dcmread(output_file)
        series_uids.add(new.SeriesInstanceUID)
        assert new.SeriesInstanceUID != old.SeriesInstanceUID
        assert int(new.SeriesNumber) == int(old.get("SeriesNumber") or 0) + 1000
        assert new.SeriesDescription == f"ZSSR x2 {old.get('SeriesDescription', '')}".strip()
        for day, clock in (("SeriesDate", "SeriesTime"), ("ContentDate", "ContentTime")):
            made = datetime.datetime.strptime(new[day].value + new[clock].value, "%Y%m%d%H%M%S")
            assert before <= made <= after, (day, made)
        # the scanner stays the General Equipment; zssr is the Processing Equipment
        assert new.get("Manufacturer") == old.get("Manufacturer")
        assert new.get("SoftwareVersions") == old.get("SoftwareVersions")
        added = new.ContributingEquipmentSequence[-1]
        assert len(new.ContributingEquipmentSequence) == len(
            old.get("ContributingEquipmentSequence") or ()) + 1
        code = added.PurposeOfReferenceCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "109102", "DCM", "Processing Equipment")
        assert (added.Manufacturer, added.SoftwareVersions) == ("zssr-pipeline", "9.8.7")
        assert added.ContributionDescription == (
            f"Zero-Shot Super-Resolution x2 (zssr-pipeline 9.8.7; config sha256:{'0' * 64})")
    assert len(series_uids) == 1  # one new series for all files of a folder series


def test_series_description_keeps_within_64_characters(tmp_path):
    ds = pydicom.dcmread(DICOM / "MR_small.dcm")
    ds.SeriesDescription, ds.SeriesNumber = "T1 " + "x" * 61, 2**31 - 10  # 64 characters
    ds.save_as(tmp_path / "long.dcm")
    out = pydicom.dcmread(_write(tmp_path / "long.dcm", tmp_path / "out.dcm"))
    assert out.SeriesDescription == ("ZSSR x2 T1 " + "x" * 61)[:64]
    assert int(out.SeriesNumber) == 1000  # the source's + 1000 would leave IS's range


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000-lossless"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm", "series", "enhanced"])
def test_compressed_output_decodes_to_the_uncompressed_pixels(tmp_path, name, syntax):
    src = _source(name, tmp_path)
    plain = _write(src, _output(name, tmp_path, "explicit-little"))
    packed = _write(src, _output(name, tmp_path, syntax), transfer_syntax=syntax)
    for (_, a), (_, b) in zip(_pairs(src, plain), _pairs(src, packed), strict=True):
        ref, ds = pydicom.dcmread(a), pydicom.dcmread(b)
        assert ds.file_meta.TransferSyntaxUID == SYNTAXES[syntax]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PhotometricInterpretation == ref.PhotometricInterpretation
        np.testing.assert_array_equal(ds.pixel_array, ref.pixel_array)
    reader = DicomReader(packed)  # and our reader gives the stored values written
    meta = reader.meta
    assert meta.frames == DicomReader(plain).meta.frames
    for i in range(meta.frames):
        np.testing.assert_array_equal(reader.read(frame=i), DicomReader(plain).read(frame=i))


@pytest.mark.parametrize("syntax", list(SYNTAXES))
@pytest.mark.parametrize("name", SOURCES)
def test_dciodvfy_finds_no_new_errors(tmp_path, name, syntax):
    require_tool("dciodvfy")
    src = _source(name, tmp_path)
    if syntax == "jpeg2000-lossless" and min(DicomReader(src).meta.shape[1:]) < 16:
        with pytest.raises(InvalidDataError, match=r"needs at least 32 on each side; choose "
                                                   r"rle"):
            _write(src, _output(name, tmp_path, syntax), transfer_syntax=syntax)
        return
    out = _write(src, _output(name, tmp_path, syntax), transfer_syntax=syntax,
                 provenance=PROVENANCE)
    for before, after in _pairs(src, out):
        assert pydicom.dcmread(after).file_meta.TransferSyntaxUID == SYNTAXES[syntax]
        new = dciodvfy_errors(after) - dciodvfy_errors(before)
        assert not new, f"{after}: new dciodvfy errors: {sorted(new)}"


class _NoEncoder:
    available_plugins = ()
    missing_dependencies = ["pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.2"]


def test_transfer_syntax_refused_in_one_line_before_any_write(tmp_path, monkeypatch):
    meta = scale_dicom_metadata(DicomReader(DICOM / "MR_small.dcm").meta, 2)
    with pytest.raises(InvalidDataError, match=r"transfer syntax 'jpeg-ls' unknown; choose "
                                               r"one of explicit-little, rle, jpeg2000"):
        DicomWriter(tmp_path / "a.dcm", meta, transfer_syntax="jpeg-ls")
    monkeypatch.setattr(encode, "get_encoder", lambda uid: _NoEncoder())
    with pytest.raises(InvalidDataError, match=r"a.dcm: transfer syntax jpeg2000-lossless "
                       r"needs an encoder that is not installed \(pylibjpeg>=2.0; "
                       r"pylibjpeg-openjpeg>=2.2\); install pylibjpeg and pylibjpeg-openjpeg"):
        DicomWriter(tmp_path / "a.dcm", meta, transfer_syntax="jpeg2000-lossless")
    assert not list(tmp_path.iterdir())


def test_cli_transfer_syntax_and_software_version(tmp_path, capsys):
    from pipeline.cli.main import main
    from zssr import __version__

    tiny = ["--set", "train.max_iters=2", "--set", "train.crop_size=16", "--set",
            "net.depth=2", "--set", "net.width=4", "--set", "infer.back_projection_iters=0",
            "-q"]
    out = tmp_path / "mr.dcm"
    assert main(["upscale", str(DICOM / "MR_small.dcm"), str(out), "--scale", "2",
                 "--transfer-syntax", "rle", *tiny]) == 0
    ds = pydicom.dcmread(out)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    added = ds.ContributingEquipmentSequence[-1]
    assert (added.Manufacturer, added.SoftwareVersions) == ("zssr-pipeline", __version__)
    assert re.search(r"\(zssr-pipeline [^;]+; config sha256:[0-9a-f]{64}\)$",
                     added.ContributionDescription)  # the job's provenance reached the writer
    assert ds.pixel_array.shape == (128, 128)
    assert main(["upscale", str(DICOM / "MR_small.dcm"), str(tmp_path / "mr.png"), "--scale",
                 "2", "--transfer-syntax", "rle", *tiny]) == 2
    assert "--transfer-syntax rle:" in capsys.readouterr().err
    assert not (tmp_path / "mr.png").exists()


def test_private_tags_are_copied_unless_deidentified(tmp_path):
    """The README's policy: private elements (vendor acquisition parameters) are copied as
    they are; --deidentify removes them all; overlays: tests/test_mut_scale_metadata.py."""
    def private(path: Path) -> dict:
        ds = pydicom.dcmread(path)
        return {e.tag: e.value for e in ds.iterall() if e.tag.is_private}

    kept = private(_write(DICOM / "CT_small.dcm", tmp_path / "kept.dcm"))
    assert kept == private(DICOM / "CT_small.dcm") and len(kept) > 100
    assert private(_write(DICOM / "CT_small.dcm", tmp_path / "anon.dcm", deidentify=True)) == {}
