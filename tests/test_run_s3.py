"""``zssr run`` with inputs on S3 (issue 17, item 1 for batches), against the real moto
server of tests/test_s3.py (its ``s3`` fixture; the runs talk to moto directly, not
through the relay, which shares this process's GIL with GDAL).

* ``s3://bucket/prefix/`` lists the GeoTIFFs directly under it (a ``.txt`` and a
  sub-folder's object are left out); the run's outputs are pixel-identical to the same
  run on local copies of the files, with the same tags but ``ZSSR_SOURCE``, which names
  the URL.  A missing object and a missing bucket in the same command fail their image
  only: one FAILED line each, naming the URL, of an input error's class (exit 3 on its
  own); the batch exits 1.  The rerun skips the finished images (identity: size + ETag).
* Patterns: ``**``, ``*`` and ``[!…]`` on keys, duplicates kept once; a pattern without
  matches, a missing bucket and a ``gs://`` prefix are failed items naming the spec.  An
  object replaced under the same key has a new identity (a rerun computes it again).
* ``--output-prefix s3://bucket/runout/ --stac-item``: each output, its Item and the
  Collection are uploaded, byte-identical to the run folder's files, with no pending
  multipart upload; a deleted object comes back on the rerun (the image itself skipped);
  another run folder meeting those objects needs ``--overwrite`` (its image fails with a
  line naming the URL); a missing bucket stops the run before any work (exit 7).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import rasterio
from conftest import DATA
from test_s3 import BUCKET, LANDSAT, s3  # noqa: F401 - the server fixture

from io_adapters.errors import InputNotFoundError
from pipeline.cli.main import main
from pipeline.errors import EXIT, UsageError, exit_code
from pipeline.runs.identity import input_identity
from pipeline.runs.inputs import expand_inputs

RGB = DATA / "io" / "geotiff" / "rgb_byte_96x128.tif"
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16",
        "--tile", "32", "--torch-threads", "1", "--seed", "0"]


def _direct(s3) -> dict[str, str]:  # noqa: F811
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.upstream}",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{s3.upstream}"}


def _upload(s3, tmp_path: Path) -> Path:  # noqa: F811
    """Local copies in ``tmp_path/local``; the same files under ``runin/`` on S3."""
    local = tmp_path / "local"
    local.mkdir()
    for src, name in ((LANDSAT, "landsat.tif"), (RGB, "rgb.tif")):
        shutil.copy(src, local / name)
        s3.client.upload_file(str(src), BUCKET, f"runin/a/{name}")
    s3.client.upload_file(str(RGB), BUCKET, "runin/a/sub/deep.tif")
    s3.client.put_object(Bucket=BUCKET, Key="runin/a/notes.txt", Body=b"not an image")
    return local


def _run(out: Path, *inputs: str | Path) -> int:
    return main(["run", *map(str, inputs), "--out", str(out), "--scale", "2", "--scheduler",
                 "synchronous", *TINY])


def test_run_on_s3_inputs_equals_the_local_run(s3, tmp_path: Path, capsys) -> None:  # noqa: F811
    local = _upload(s3, tmp_path)
    assert _run(tmp_path / "local_run", local / "landsat.tif", local / "rgb.tif") == 0
    missing, nobucket = f"s3://{BUCKET}/runin/missing.tif", "s3://no-such-bucket-zz/x.tif"
    saved = {k: os.environ[k] for k in _direct(s3)}
    os.environ.update(_direct(s3))
    try:
        capsys.readouterr()
        assert _run(tmp_path / "s3_run", f"s3://{BUCKET}/runin/a/", missing,
                    nobucket) == EXIT["batch"]
        out = capsys.readouterr().out
        assert _run(tmp_path / "s3_run", f"s3://{BUCKET}/runin/a/", missing,
                    nobucket) == EXIT["batch"]  # resume: nothing left to compute
        again = json.loads((tmp_path / "s3_run" / "report.json").read_text())
    finally:
        os.environ.update(saved)
    failed = [line.strip() for line in out.splitlines() if line.strip().startswith("FAILED")]
    assert failed == [f"FAILED {missing}: InputNotFoundError: {missing}: no such object",
                      f"FAILED {nobucket}: InputNotFoundError: {nobucket}: the bucket does "
                      "not exist"]
    assert exit_code(InputNotFoundError("x")) == EXIT["input"] == 3  # the class's code
    assert again["summary"]["counts"]["images_skipped"] == 2
    for name in ("landsat_x2.tif", "rgb_x2.tif"):
        ref, got = (tmp_path / run / "outputs" / name for run in ("local_run", "s3_run"))
        with rasterio.open(ref) as a, rasterio.open(got) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.profile == b.profile
            tags_a, tags_b = a.tags(), b.tags()
        assert tags_b.pop("ZSSR_SOURCE") == f"s3://{BUCKET}/runin/a/{name[:-7]}.tif"
        assert tags_a.pop("ZSSR_SOURCE") == str((local / f"{name[:-7]}.tif").resolve())
        assert tags_a == tags_b
    assert sorted(p.name for p in (tmp_path / "s3_run" / "outputs").iterdir()) == [
        "landsat_x2.tif", "rgb_x2.tif"]  # notes.txt and sub/deep.tif not listed


def test_s3_patterns(s3, tmp_path: Path) -> None:  # noqa: F811
    _upload(s3, tmp_path)
    items = expand_inputs([f"s3://{BUCKET}/runin/**/*.tif", f"s3://{BUCKET}/runin/a/l*.tif",
                           f"s3://{BUCKET}/runin/a/[!l]*.tif", f"s3://{BUCKET}/runin/*.png",
                           "s3://no-such-bucket-zz/*.tif", "gs://bucket/scenes/"])
    ok = [it.location for it in items if it.ok]
    assert ok == [f"s3://{BUCKET}/runin/a/{k}" for k in ("landsat.tif", "rgb.tif",
                                                          "sub/deep.tif")]
    assert [it.stem for it in items if it.ok] == ["landsat", "rgb", "deep"]
    assert [(it.error_class, it.error) for it in items if not it.ok] == [
        ("InputNotFoundError", f"s3://{BUCKET}/runin/*.png: pattern matches no object"),
        ("InputNotFoundError", "s3://no-such-bucket-zz/*.tif: the bucket does not exist"),
        ("UsageError", "gs://bucket/scenes/: prefixes and patterns are listed on s3:// only; "
                       "name the objects one by one")]
    assert exit_code(UsageError("x")) == 2
    path = Path(f"/vsis3/{BUCKET}/runin/a/rgb.tif")  # resume knows a replaced object
    first = input_identity(path)
    s3.client.upload_file(str(LANDSAT), BUCKET, "runin/a/rgb.tif")
    assert input_identity(path)["etag"] != first["etag"]
    assert input_identity(path)["url"] == f"s3://{BUCKET}/runin/a/rgb.tif"


def test_run_outputs_uploaded_under_a_prefix(s3, tmp_path: Path, capsys) -> None:  # noqa: F811
    prefix, run = f"s3://{BUCKET}/runout/", tmp_path / "run"
    names = ["landsat_64x80_x2.tif", "butterfly_48x64_x2.png"]
    files = [*names, *(n + ".stac-item.json" for n in names), "collection.json"]

    def objects() -> dict[str, bytes]:
        listed = s3.direct.list_objects_v2(Bucket=BUCKET, Prefix="runout/").get("Contents", [])
        return {o["Key"][len("runout/"):]: s3.direct.get_object(
            Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}

    saved = {k: os.environ[k] for k in _direct(s3)}
    os.environ.update(_direct(s3))
    try:
        assert _run(run, LANDSAT, PNG, "--output-prefix", prefix, "--stac-item", "-q") == 0
        first = objects()
        assert first == {n: (run / "outputs" / n).read_bytes() for n in files}
        head = s3.direct.head_object(Bucket=BUCKET, Key=f"runout/{names[0]}")
        assert head["Metadata"] == {"zssr-output": "1"}
        assert s3.direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
        s3.direct.delete_object(Bucket=BUCKET, Key=f"runout/{names[1]}")
        assert _run(run, LANDSAT, PNG, "--output-prefix", prefix, "--stac-item", "-q") == 0
        assert objects() == first
        assert json.loads((run / "report.json").read_text())["summary"]["counts"][
            "images_skipped"] == 2
        capsys.readouterr()
        assert _run(tmp_path / "other", LANDSAT, "--output-prefix", prefix) == EXIT["batch"]
        out = capsys.readouterr().out
        assert _run(tmp_path / "none", LANDSAT, "--output-prefix",
                    "s3://no-such-bucket-zz/x/") == EXIT["write"]
        err = capsys.readouterr().err
    finally:
        os.environ.update(saved)
    assert f"{prefix}{names[0]}: output exists; pass --overwrite to replace it" in out
    assert err.strip().splitlines() == ["zssr run: error: s3://no-such-bucket-zz/x/: the "
                                        "bucket does not exist"]
    assert not (tmp_path / "none").exists()
