"""DICOM, plain images and Zarr by URL (issue 17, item 1), against the real moto server of
tests/test_s3.py (its ``s3`` fixture; the commands talk to moto directly).

* A DICOM file, a PNG and a Zarr store uploaded to S3 and super-resolved by URL give the
  output of the same file on local disk (``zssr upscale`` and ``zssr run``): the same
  bytes for the PNG, the same pixels and elements (new UIDs, dates and times aside) for the
  DICOM, the same arrays and attributes (the provenance naming the source aside) for the
  Zarr.  The whole-file copies lie in a private temporary folder removed afterwards (the
  test's own ``tempfile.tempdir`` is empty at the end); the Zarr is read where it is.
* ``zssr run`` on a prefix: the DICOM objects directly under it are one series; a Zarr
  store directly under a prefix is one image; a rerun skips them (identity: the objects'
  ETags).
* A missing object or bucket is one line naming the URL, exit 3; an object over the size
  the declared-size guard allows is refused before it is copied.
* A window of a remote Zarr reads only the chunks it covers.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
import zarr
from conftest import DATA
from test_s3 import BUCKET, SECRET, s3  # noqa: F401 - the server fixture

from io_adapters import fetch
from io_adapters.detect import open_reader
from io_adapters.errors import InputNotFoundError, InvalidDataError
from io_adapters.fetch import remote_kind
from io_adapters.vsi import gdal_path
from pipeline.cli.main import main
from pipeline.runs.identity import input_identity
from pipeline.runs.inputs import expand_inputs

DICOM = DATA / "dicom" / "MR_small.dcm"
SERIES = DATA / "dicom" / "series"
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "--seed",
        "0", "-q"]
_VOLATILE = {"UI", "DA", "TM", "DT"}  # new UIDs, creation dates and times


@pytest.fixture
def direct(s3):  # noqa: F811
    """Clients straight to moto (the relay shares this process's GIL with the readers)."""
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.upstream}",
           "AWS_S3_ENDPOINT": f"127.0.0.1:{s3.upstream}"}
    saved = {k: os.environ[k] for k in env}
    os.environ.update(env)
    yield s3
    os.environ.update(saved)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch):
    """``tempfile``'s folder for the test: the copies go there and must not stay."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _left(folder: Path) -> list[Path]:
    """What is in the temporary folder but torch's compile cache (not ours)."""
    return [p for p in folder.iterdir() if not p.name.startswith("torchinductor")]


def _zarr(path: Path) -> Path:
    """A (band, y, x) uint8 store of the butterfly, 16-px chunks (several per window)."""
    with open_reader(PNG) as reader:
        pixels = reader.read()
    arr = zarr.create_array(store=path, shape=pixels.shape, chunks=(3, 16, 16),
                            dtype="uint8", dimension_names=("band", "y", "x"))
    arr[:] = pixels
    return path


def _upload(s3, local: Path, key: str) -> str:  # noqa: F811
    if local.is_dir():
        for f in sorted(local.rglob("*")):
            if f.is_file():
                s3.client.upload_file(str(f), BUCKET, f"{key}/{f.relative_to(local)}")
    else:
        s3.client.upload_file(str(local), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def _same_dicom(a: pydicom.Dataset, b: pydicom.Dataset, where: str = "") -> None:
    """Every element equal but new UIDs, dates and times (sequences walked)."""
    assert [e.tag for e in a] == [e.tag for e in b], where
    for ea, eb in zip(a, b, strict=True):
        if ea.VR == "SQ":
            assert len(ea.value) == len(eb.value), (where, ea.tag)
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value, strict=True)):
                _same_dicom(ia, ib, f"{where}{ea.keyword}[{i}].")
        elif ea.VR not in _VOLATILE:
            assert ea.value == eb.value, (where, ea.tag, ea.keyword)


def _same_output(ref: Path, got: Path) -> None:
    if ref.suffix == ".png":
        assert ref.read_bytes() == got.read_bytes()
    elif ref.suffix == ".dcm":
        _same_dicom(pydicom.dcmread(ref), pydicom.dcmread(got))
    elif ref.suffix == ".zarr":
        a, b = zarr.open_group(ref, mode="r"), zarr.open_group(got, mode="r")
        np.testing.assert_array_equal(a["band_data"][:], b["band_data"][:])
        attrs_a, attrs_b = dict(a.attrs), dict(b.attrs)
        prov_a, prov_b = attrs_a.pop("provenance"), attrs_b.pop("provenance")
        source_a, source_b = prov_a.pop("source"), prov_b.pop("source")
        assert source_b.startswith("s3://") and f"from {source_b} by" in attrs_b["history"]
        attrs_b["history"] = attrs_b["history"].replace(source_b, source_a)
        assert prov_a == prov_b and attrs_a == attrs_b  # only the source named differs
    else:  # a DICOM series folder
        names = sorted(p.name for p in ref.iterdir())
        assert names == sorted(p.name for p in got.iterdir()) and names
        for name in names:
            _same_dicom(pydicom.dcmread(ref / name), pydicom.dcmread(got / name))


@pytest.mark.parametrize("kind", ["dcm", "png", "zarr"])
def test_upscale_by_url_equals_local(direct, tmp_path: Path, private_tmp: Path,
                                     kind: str) -> None:
    source = {"dcm": DICOM, "png": PNG}.get(kind) or _zarr(tmp_path / "in.zarr")
    url = _upload(direct, source, f"fetch/in.{kind}")
    out = {"dcm": ".dcm", "png": ".png", "zarr": ".zarr"}[kind]
    ref, got = tmp_path / f"ref{out}", tmp_path / f"got{out}"
    assert main(["upscale", str(source), str(ref), "--scale", "2", *TINY]) == 0
    assert main(["upscale", url, str(got), "--scale", "2", *TINY]) == 0
    _same_output(ref, got)
    assert _left(private_tmp) == []  # the copy is gone
    with open_reader(source) as a, open_reader(url) as b:  # the format's own reader
        assert (a.meta.format, a.meta.shape, a.meta.dtype) == (b.meta.format, b.meta.shape,
                                                               b.meta.dtype)
    assert remote_kind(gdal_path(url)) == {"dcm": "file", "png": "file", "zarr": "zarr"}[kind]


def test_missing_objects_are_one_line(direct, tmp_path: Path, private_tmp: Path,
                                      capsys) -> None:
    for url, what in ((f"s3://{BUCKET}/fetch/gone.dcm", "no such object"),
                      (f"s3://{BUCKET}/fetch/gone.png", "no such object"),
                      ("s3://no-such-bucket-zq/x.dcm", "the bucket does not exist"),
                      (f"s3://{BUCKET}/fetch/gone.zarr", "no such object")):
        capsys.readouterr()
        assert main(["upscale", url, str(tmp_path / "o.png"), "--scale", "2", *TINY]) == 3
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"zssr upscale: error: {url}: {what}"), err
    assert _left(private_tmp) == [] and not (tmp_path / "o.png").exists()
    with pytest.raises(InputNotFoundError, match=r"^s3://no-such-bucket-zq/x\.zarr: the "
                                                 r"bucket does not exist$"):
        open_reader("s3://no-such-bucket-zq/x.zarr")


def test_size_guard_before_the_copy(direct, private_tmp: Path, monkeypatch) -> None:
    url = _upload(direct, DICOM, "fetch/guard.dcm")
    with monkeypatch.context() as patch, pytest.raises(
            InvalidDataError, match=r"guard\.dcm: 9830 bytes to read whole, more than the "
                                    r"8000 bytes an input of --max-pixels 1e\+03 may take"):
        patch.setattr(fetch, "HEADER_ALLOWANCE", 0)
        open_reader(url, max_pixels=1000)  # 8 bytes a pixel: below the file's 9830
    assert _left(private_tmp) == []
    with open_reader(url) as reader:  # the copy lives as long as the reader
        assert len(_left(private_tmp)) == 1
        assert reader.meta.path == Path(gdal_path(url))
        assert reader.meta.medical.sources == (url,)
        with pickle.loads(pickle.dumps(reader)) as copy:  # a Dask worker fetches its own
            assert len(_left(private_tmp)) == 2
            np.testing.assert_array_equal(copy.read(), reader.read())
    assert _left(private_tmp) == []


def test_remote_zarr_reads_only_the_chunks_of_a_window(s3, tmp_path: Path) -> None:  # noqa: F811
    url = _upload(s3, _zarr(tmp_path / "w.zarr"), "fetch/window.zarr")
    with open_reader(url) as reader:
        s3.requests = []
        got = reader.read(_window(16, 16, 16, 16))
    chunk_gets = [r for r in s3.requests if r[0] == "GET" and "/c/" in r[1]]
    with open_reader(PNG) as local:
        np.testing.assert_array_equal(got, local.read(_window(16, 16, 16, 16)))
    assert len(chunk_gets) == 1, s3.requests  # one 16-px chunk of 3 x 4 x 3


def _window(col: int, row: int, width: int, height: int):
    from rasterio.windows import Window

    return Window(col, row, width, height)


def test_run_by_url_equals_local(direct, tmp_path: Path, private_tmp: Path,
                                 capsys) -> None:
    zstore = _zarr(tmp_path / "local" / "cube.zarr")
    local = tmp_path / "local"
    for src in (DICOM, PNG):
        (local / src.name).write_bytes(src.read_bytes())
    (local / "series").mkdir()
    for f in sorted(SERIES.iterdir()):
        (local / "series" / f.name).write_bytes(f.read_bytes())
    urls = [_upload(direct, local / DICOM.name, "runf/one/MR_small.dcm"),
            _upload(direct, local / PNG.name, "runf/one/butterfly_48x64.png"),
            _upload(direct, zstore, "runf/one/cube.zarr")]
    _upload(direct, local / "series", "runf/series")
    run = ["--scale", "2", "--scheduler", "synchronous", "--tile", "64", "--torch-threads",
           "1", *TINY]
    inputs = [local / DICOM.name, local / PNG.name, zstore, local / "series"]
    assert main(["run", *map(str, inputs), "--out", str(tmp_path / "ref"), *run]) == 0
    specs = [f"s3://{BUCKET}/runf/one/", f"s3://{BUCKET}/runf/series/"]
    assert [it.location for it in expand_inputs(specs)] == [*urls, f"s3://{BUCKET}/runf/series"]
    assert main(["run", *specs, "--out", str(tmp_path / "got"), *run]) == 0
    names = sorted(p.name for p in (tmp_path / "ref" / "outputs").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "got" / "outputs").iterdir())
    assert names == ["MR_small_x2.dcm", "butterfly_48x64_x2.png", "cube.zarr_x2.zarr",
                     "series_x2"]
    for name in names:
        _same_output(tmp_path / "ref" / "outputs" / name, tmp_path / "got" / "outputs" / name)
    capsys.readouterr()
    assert main(["run", *specs, "--out", str(tmp_path / "got"), *run[:-1]]) == 0
    assert "4/4 images done (4 by an earlier run)" in capsys.readouterr().out
    assert _left(private_tmp) == []
    series = Path(gdal_path(f"s3://{BUCKET}/runf/series"))  # a slice replaced: a new identity
    first = input_identity(series)
    assert first["etag"].startswith("prefix:3:") and input_identity(series) == first
    direct.client.upload_file(str(SERIES / "IM_a.dcm"), BUCKET, "runf/series/IM_c.dcm")
    assert input_identity(series)["etag"] != first["etag"]


def test_batch_by_url_equals_local(direct, tmp_path: Path, private_tmp: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    for src in (DICOM, PNG):
        (local / src.name).write_bytes(src.read_bytes())
        _upload(direct, src, f"batchf/{src.name}")
    tiny = {"train.max_iters": 2, "net.depth": 3, "net.width": 4, "seed": 0, "tile": 64,
            "infer.back_projection_iters": 0, "train.crop_size": 16}
    ref_inputs = [str(local / DICOM.name), str(local / PNG.name)]  # (a local folder holding
    # a .dcm is one DICOM series; a prefix is one only when all its images are DICOM)
    for name, inputs in (("ref", ref_inputs), ("got", [f"s3://{BUCKET}/batchf/"])):
        job = tmp_path / f"{name}.yaml"
        job.write_text(yaml.safe_dump({"inputs": inputs, "output": name, "scale": 2,
                                       "scheduler": "synchronous", "set": tiny}))
        assert main(["batch", str(job)]) == 0
    names = ["MR_small_x2.dcm", "butterfly_48x64_x2.png"]
    for out in names:
        _same_output(tmp_path / "ref" / out, tmp_path / "got" / out)
    assert sorted(p.name for p in (tmp_path / "got").iterdir() if not p.name.startswith(
        ".")) == names
    assert _left(private_tmp) == []


def test_denied_and_unreachable_are_one_line(s3, tmp_path: Path, private_tmp: Path,  # noqa: F811
                                             capsys) -> None:
    url = _upload(s3, DICOM, "fetch/denied.dcm")
    s3.faults.append(lambda method, path: "403" if "denied" in path else None)
    try:
        capsys.readouterr()
        assert main(["upscale", url, str(tmp_path / "o.dcm"), "--scale", "2", *TINY]) == 3
    finally:
        s3.faults.clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zssr upscale: error: {url}: access denied (check the credentials and the "
                   "object's permissions)"]
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens
    try:
        assert main(["upscale", url, str(tmp_path / "o.dcm"), "--scale", "2", *TINY]) == 3
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zssr upscale: error: {url}: the endpoint cannot be reached"]
    assert SECRET not in "".join(err) and _left(private_tmp) == []
