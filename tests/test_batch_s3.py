"""``zssr batch`` with inputs on S3, ``output_prefix`` and ``stac_items`` (issue 17, items 1,
2 and 4 for batches), against the real moto server of tests/test_s3.py (its ``s3``
fixture; the batches talk to moto directly, as in tests/test_run_s3.py).

* A job over ``s3://bucket/batchin/a/`` (and a pattern naming the same objects: kept once)
  gives outputs pixel-identical, with the same profile, to the same job over local copies;
  the template's sub-folder (``{parent}``: the key's folder) is kept on S3: each output,
  its Item and ``collection.json`` are uploaded under the prefix, byte-identical to the
  local files, marked as zssr's, with no pending multipart upload.  The state file
  records the inputs by URL; the output folder, lock and state stay local.
* The Items and the Collection pass pystac's offline validation; each Item names the
  Collection (``collection`` id and a relative ``collection`` link that resolves to it)
  and derives from its input's URL; the Collection's extent is the union of the Items'
  bboxes and spans their times.
* The rerun does nothing new: both skipped, no object written again, no local file
  rewritten.  A missing bucket in ``output_prefix`` fails before any work: exit 7, one
  line naming the URL, no output folder.
* Job files: URL inputs (in the job and in list files) are kept as given, never joined
  to the job's folder; a bad ``output_prefix`` is one line naming the key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from conftest import DATA
from test_s3 import BUCKET, LANDSAT, s3  # noqa: F401 - the server fixture
from test_stac import offline_validator  # noqa: F401 - a fixture

from pipeline.cli.main import main
from pipeline.errors import EXIT, UsageError
from workflows.batch import STATE_FILE, expand_job_inputs, run_job_file
from workflows.jobspec import job_from_dict

RGB = DATA / "io" / "geotiff" / "rgb_byte_96x128.tif"
TINY = {"train.max_iters": 2, "net.depth": 3, "net.width": 4,
        "infer.back_projection_iters": 0, "train.crop_size": 16, "tile": 32, "seed": 0}
NAMES = ["a/landsat_sr.tif", "a/rgb_sr.tif"]


def _job(folder: Path, name: str, inputs: list[str], **extra) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"inputs": inputs, "output": name, "scale": 2,
                                    "name": "{parent}/{stem}_sr{suffix}", "set": TINY,
                                    "scheduler": "synchronous", **extra}))
    return path


def _objects(s3, prefix: str) -> dict[str, dict]:  # noqa: F811
    listed = s3.direct.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: {"etag": o["ETag"], "modified": o["LastModified"]}
            for o in listed}


def _body(s3, key: str) -> bytes:  # noqa: F811
    return s3.direct.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_batch_over_s3_equals_local_and_uploads_items(s3, tmp_path: Path, capsys,  # noqa: F811
                                                      offline_validator) -> None:  # noqa: F811
    (tmp_path / "local" / "a").mkdir(parents=True)
    for src, name in ((LANDSAT, "landsat.tif"), (RGB, "rgb.tif")):
        shutil.copy(src, tmp_path / "local" / "a" / name)
        s3.client.upload_file(str(src), BUCKET, f"batchin/a/{name}")
    s3.client.put_object(Bucket=BUCKET, Key="batchin/a/notes.txt", Body=b"not an image")
    prefix = f"s3://{BUCKET}/batchout/"
    local = _job(tmp_path, "out_local", ["local/a/"])
    remote = _job(tmp_path, "out_s3", [f"s3://{BUCKET}/batchin/a/",
                                       f"s3://{BUCKET}/batchin/a/*.tif"],
                  output_prefix=prefix, stac_items=True)
    nobucket = _job(tmp_path, "out_none", [f"s3://{BUCKET}/batchin/a/"],
                    output_prefix="s3://no-such-bucket-zz/x/")
    direct = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.upstream}",
              "AWS_S3_ENDPOINT": f"127.0.0.1:{s3.upstream}"}
    saved = {k: os.environ[k] for k in direct}
    os.environ.update(direct)
    try:
        assert run_job_file(local).counts == {"processed": 2, "skipped": 0, "failed": 0}
        first = run_job_file(remote)
        assert first.counts == {"processed": 2, "skipped": 0, "failed": 0}, first.failed
        uploaded = _objects(s3, "batchout/")
        bodies = {k: _body(s3, "batchout/" + k) for k in uploaded}
        heads = [s3.direct.head_object(Bucket=BUCKET, Key="batchout/" + n)["Metadata"]
                 for n in NAMES]
        pending = s3.direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        out = tmp_path / "out_s3"
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
                  and ".zssr-batch" not in str(p)}
        again = run_job_file(remote)
        assert again.counts == {"processed": 0, "skipped": 2, "failed": 0}
        assert _objects(s3, "batchout/") == uploaded  # nothing uploaded again
        assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
        capsys.readouterr()
        assert main(["batch", str(nobucket)]) == EXIT["write"] == 7
        err = capsys.readouterr().err
    finally:
        os.environ.update(saved)
    assert err.strip().splitlines() == ["zssr batch: error: s3://no-such-bucket-zz/x/: the "
                                        "bucket does not exist"]
    assert not (tmp_path / "out_none").exists()

    files = [*NAMES, *(n + ".stac-item.json" for n in NAMES), "collection.json"]
    assert sorted(uploaded) == sorted(files)
    assert bodies == {n: (out / n).read_bytes() for n in files}
    assert heads == [{"zssr-output": "1"}] * 2 and pending == []
    for name in NAMES:
        with rasterio.open(tmp_path / "out_local" / name) as a, rasterio.open(out / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.profile == b.profile
    state = json.loads((out / STATE_FILE).read_text())["inputs"]
    assert sorted(state) == [f"s3://{BUCKET}/batchin/a/{n}" for n in ("landsat.tif",
                                                                       "rgb.tif")]
    _check_stac(out, [f"s3://{BUCKET}/batchin/a/{n}" for n in ("landsat.tif", "rgb.tif")])


def _check_stac(out: Path, sources: list[str]) -> None:
    collection = out / "collection.json"
    coll = pystac.Collection.from_file(str(collection))
    assert coll.validate() and coll.id == "zssr-batch-out_s3"
    links = [link["href"] for link in json.loads(collection.read_text())["links"]
             if link["rel"] == "item"]
    assert links == [n + ".stac-item.json" for n in NAMES]
    items = []
    for name, source in zip(NAMES, sources, strict=True):
        path = out / (name + ".stac-item.json")
        item = pystac.Item.from_file(str(path))
        assert item.validate()
        assert item.id == Path(name).name and item.assets["data"].href == Path(name).name
        assert item.get_single_link("derived_from").href == source
        assert item.collection_id == coll.id
        link = json.loads(path.read_text())["links"]
        href = next(ln["href"] for ln in link if ln["rel"] == "collection")
        assert (path.parent / href).resolve() == collection.resolve()
        items.append(item)
    boxes = [i.bbox for i in items]
    assert all(boxes) and coll.extent.spatial.bboxes[0] == [
        min(b[0] for b in boxes), min(b[1] for b in boxes),
        max(b[2] for b in boxes), max(b[3] for b in boxes)]
    start, end = coll.extent.temporal.intervals[0]
    for item in items:
        assert start <= item.common_metadata.start_datetime <= item.common_metadata.end_datetime \
            <= end


def test_job_file_urls_are_kept(tmp_path: Path) -> None:
    urls = ["s3://bucket/prefix/", "s3://bucket/a/*.tif", "https://example.org/x.tif",
            "/vsis3/bucket/k.tif"]
    (tmp_path / "list.txt").write_text("gs://bucket/one.tif\nlocal.tif\n")
    spec = job_from_dict({"inputs": [*urls, "list.txt", "rel/*.tif"], "output": "out",
                          "scale": 2, "output_prefix": "s3://bucket/pre"}, base=tmp_path)
    assert spec.inputs == (*urls, str(tmp_path / "list.txt"), str(tmp_path / "rel/*.tif"))
    assert spec.output_prefix == "s3://bucket/pre/" and spec.stac_items is False
    assert [it.spec for it in expand_job_inputs(spec)][-3:-1] == [
        "gs://bucket/one.tif", str(tmp_path / "local.tif")]
    with pytest.raises(UsageError, match=r"^job: 'output_prefix' = '/tmp/x'; expected "
                                         r"s3://bucket/ or s3://bucket/prefix/$"):
        job_from_dict({"inputs": ["a.tif"], "output": "o", "scale": 2,
                       "output_prefix": "/tmp/x"}, base=tmp_path)
    with pytest.raises(UsageError, match=r"^job: 'stac_items': expected"):
        job_from_dict({"inputs": ["a.tif"], "output": "o", "scale": 2,
                       "stac_items": "yes"}, base=tmp_path)
