"""The run folder on object storage (issue 17, item 3), in this process, against the moto
server of tests/test_s3.py (its ``s3`` fixture; talked to directly, not through the relay).

* The lease (:class:`pipeline.runs.remote.RemoteLease`): a second holder is refused with
  :class:`LockedError` naming the URL and the holder; released, it can be taken; a lease
  whose last write is older than its time to live (by the server's clock) is taken over,
  a fresh one is not; a holder whose lease was replaced behind its back learns it at its
  next renewal and ``check()`` raises.
* :class:`RunPaths` on ``/vsis3/…`` does what it does on a local folder: files written,
  read and listed, tile markers, ``clear_tiles`` and ``clear_work`` leaving other keys'
  objects alone (the same script runs on both and the results are compared).
* ``zssr run IN... --out s3://bucket/prefix --scheduler synchronous`` writes outputs
  byte-identical (PNG, GeoTIFF) and pixel-identical (DICOM: new UIDs) to the same run
  with a local ``--out``; every part of the run folder is an object; the report embeds
  the crops the tasks uploaded; the manifest is compacted; the rerun redoes nothing;
  a second run while the lease is held exits 9 naming the prefix; what is not supported
  there yet is refused in one line (exit 2) before any object is written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import pixels
from conftest import DATA
from test_s3 import BUCKET, s3  # noqa: F401 - the server fixture

from io_adapters.s3_objects import put_bytes
from pipeline.cli.main import main
from pipeline.errors import EXIT, LockedError
from pipeline.runs.remote import RemoteLease
from pipeline.runs.rundir import RunPaths, run_root

PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"
DCM = DATA / "dicom" / "CT_small.dcm"
TINY = ["--set", "train.max_iters=3", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16",
        "--tile", "32", "--torch-threads", "1", "--seed", "0", "--scale", "2", "-q"]


@pytest.fixture
def direct(s3, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{s3.upstream}")
    monkeypatch.setenv("AWS_S3_ENDPOINT", f"127.0.0.1:{s3.upstream}")
    return s3


def _keys(s3, prefix: str) -> list[str]:  # noqa: F811
    pages = s3.direct.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for p in pages for o in p.get("Contents", []))


def _refusal(holder: str) -> str:
    return f"held by {holder}"


# ----------------------------------------------------------------------------- the lease


def test_second_holder_refused_until_released(direct) -> None:
    url = f"s3://{BUCKET}/lease-a/.lock"
    with RemoteLease(url, _refusal, seconds=30) as first:
        with pytest.raises(LockedError, match=r"held by .* pid \d+, renewed \d+ s ago"):
            RemoteLease(url, _refusal, seconds=30).__enter__()
        body = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="lease-a/.lock")[
            "Body"].read())
        assert body["holder"] == first.holder
    assert _keys(direct, "lease-a/") == []  # released: the object is gone
    with RemoteLease(url, _refusal, seconds=30):
        assert _keys(direct, "lease-a/") == [".lock"]


def test_stale_lease_taken_over_fresh_one_not(direct, caplog) -> None:
    url = f"s3://{BUCKET}/lease-b/.lock"
    stale = json.dumps({"holder": "gone-host pid 1", "ttl_seconds": 3}).encode()
    put_bytes(url, stale)
    with pytest.raises(LockedError, match="gone-host pid 1"):  # written just now
        RemoteLease(url, _refusal, seconds=3).__enter__()
    time.sleep(4.5)  # older than its 3 s by the server's clock (1 s resolution)
    with RemoteLease(url, _refusal, seconds=30) as lease:
        body = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="lease-b/.lock")[
            "Body"].read())
        assert body["holder"] == lease.holder
    assert any("took over a lease not renewed" in r.getMessage() for r in caplog.records)


def test_holder_learns_its_lease_was_taken(direct) -> None:
    url = f"s3://{BUCKET}/lease-c/.lock"
    lease = RemoteLease(url, _refusal, seconds=3).__enter__()
    try:
        lease.check()  # held
        put_bytes(url, b'{"holder": "a new run"}')  # taken over behind its back
        deadline = time.monotonic() + 10
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(LockedError, match="taken over by another run"):
            lease.check()
    finally:
        lease.__exit__(None, None, None)
    # the new holder's lease is left alone
    assert direct.direct.get_object(Bucket=BUCKET, Key="lease-c/.lock")["Body"].read() == \
        b'{"holder": "a new run"}'


# ----------------------------------------------------------------------------- RunPaths


def _exercise(paths: RunPaths) -> dict:
    """The same operations on a local and a remote run folder; what they observed."""
    seen: dict = {}
    w = paths.weights("img-1", 0)
    seen["before"] = (paths.exists(w), paths.read_bytes(w))
    paths.write_file(w, b"weights")
    paths.write_file(paths.weights("img-2", 0), b"other")
    paths.write_file(paths.entry("img-1"), b"{}")
    paths.write_file(paths.kernel("img-1").with_suffix(".npy"), b"k")
    seen["after"] = (paths.exists(w), paths.read_bytes(w))
    for f, t in ((0, 3), (2, 11), (0, 4)):
        paths.mark_tile("img-1", 0, f, t)
    paths.mark_tile("img-2", 0, 0, 1)
    seen["done"] = paths.done_tiles("img-1", 0)
    paths.clear_tiles("img-1", 0)
    seen["cleared"] = (paths.done_tiles("img-1", 0), paths.done_tiles("img-2", 0))
    paths.mark_tile("img-1", 1, 1, 1)
    paths.clear_work("img-1")
    seen["work"] = (paths.exists(w), paths.exists(paths.entry("img-1")),
                    paths.exists(paths.kernel("img-1").with_suffix(".npy")),
                    paths.done_tiles("img-1", 1), paths.read_bytes(paths.weights("img-2", 0)))
    return seen


def test_remote_paths_behave_as_local(direct, tmp_path: Path) -> None:
    remote = RunPaths(run_root(f"s3://{BUCKET}/paths-run"))
    assert remote.remote and str(remote.root) == f"/vsis3/{BUCKET}/paths-run"
    (tmp_path / "run").mkdir()  # RunDir makes it
    local = _exercise(RunPaths(tmp_path / "run"))
    assert local == _exercise(remote)
    assert local["done"] == {(0, 3), (2, 11), (0, 4)}
    assert local["work"] == (False, False, False, set(), b"other")
    assert _keys(direct, "paths-run/") == ["tiles/img-2/s0/f0_t1.done", "weights/img-2_s0.pt"]


# ----------------------------------------------------------------------------- zssr run


@pytest.fixture(scope="module")
def inputs(s3) -> list[str]:  # noqa: F811
    for src in (PNG, TIF, DCM):
        s3.client.upload_file(str(src), BUCKET, f"rf-in/{src.name}")
    return [f"s3://{BUCKET}/rf-in/{src.name}" for src in (PNG, TIF, DCM)]


def _run(out: str | Path, inputs: list[str], *extra: str) -> int:
    return main(["run", *inputs, "--out", str(out), "--scheduler", "synchronous", *TINY,
                 *extra])


def test_run_folder_on_s3_equals_local(direct, inputs, tmp_path: Path) -> None:
    assert _run(tmp_path / "local", inputs) == 0
    url = f"s3://{BUCKET}/rf-run"
    assert _run(url, inputs) == 0
    keys = _keys(direct, "rf-run/")
    outputs = sorted(p.name for p in (tmp_path / "local" / "outputs").iterdir())
    assert outputs == ["CT_small_x2.dcm", "butterfly_48x64_x2.png", "landsat_64x80_x2.tif"]
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in outputs:
        assert f"outputs/{name}" in keys
        direct.direct.download_file(BUCKET, f"rf-run/outputs/{name}", str(fetched / name))
        local = tmp_path / "local" / "outputs" / name
        np.testing.assert_array_equal(pixels(fetched / name), pixels(local), err_msg=name)
        if not name.endswith(".dcm"):
            assert (fetched / name).read_bytes() == local.read_bytes(), name
    for part in ("config.yaml", "log.jsonl", "manifest.jsonl", "report.html", "report.json"):
        assert part in keys
    for folder in ("weights/", "entries/", "claims/", "tiles/", "work/", "report_assets/"):
        assert any(k.startswith(folder) for k in keys), folder
    assert not any(k.startswith("manifest/") for k in keys)  # compacted
    assert ".lock" not in keys  # released
    report = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="rf-run/report.json")[
        "Body"].read())
    assert report["summary"]["counts"]["finalized"] == 3
    html = direct.direct.get_object(Bucket=BUCKET, Key="rf-run/report.html")["Body"].read()
    assert html.count(b"data:image/png;base64,") >= 6  # the workers' crops, embedded
    states = [json.loads(line)["state"] for line in direct.direct.get_object(
        Bucket=BUCKET, Key="rf-run/manifest.jsonl")["Body"].read().splitlines()]
    assert states.count("finalized") == 3 and states.count("queued") == 3

    # the rerun: everything finished, nothing redone; the manifest grows by its records
    assert _run(url, inputs) == 0
    again = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="rf-run/report.json")[
        "Body"].read())["summary"]["counts"]
    assert again["images_skipped"] == 3 and again["tiles_inferred"] == 0
    direct.direct.download_file(BUCKET, "rf-run/outputs/butterfly_48x64_x2.png",
                                str(tmp_path / "again.png"))
    assert (tmp_path / "again.png").read_bytes() == (fetched / "butterfly_48x64_x2.png"
                                                     ).read_bytes()

    # killed between the upload and its "finalized" record: the claims say whose outputs
    # they are, so the run finishes them again instead of refusing them
    lines = direct.direct.get_object(Bucket=BUCKET, Key="rf-run/manifest.jsonl")["Body"].read()
    kept = b"".join(line + b"\n" for line in lines.splitlines()
                    if json.loads(line)["state"] != "finalized")
    direct.direct.put_object(Bucket=BUCKET, Key="rf-run/manifest.jsonl", Body=kept)
    assert _run(url, inputs) == 0
    third = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="rf-run/report.json")[
        "Body"].read())["summary"]["counts"]
    assert third["finalized"] == 3 and third["images_skipped"] == 0
    assert third["tiles_inferred"] == 0  # every tile was there
    direct.direct.download_file(BUCKET, "rf-run/outputs/landsat_64x80_x2.tif",
                                str(tmp_path / "third.tif"))
    assert (tmp_path / "third.tif").read_bytes() == (fetched / "landsat_64x80_x2.tif"
                                                     ).read_bytes()


def test_resume_from_s3_redoes_only_missing_tiles(direct, inputs, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/rf-resume"
    assert _run(url, inputs[:1]) == 0
    ref = direct.direct.get_object(Bucket=BUCKET, Key="rf-resume/outputs/butterfly_48x64_x2.png"
                                   )["Body"].read()
    markers = [k for k in _keys(direct, "rf-resume/") if k.startswith("tiles/")]
    assert len(markers) == 4  # 48 x 64 LR in 32 px tiles: 2 x 2
    # as if killed: the output, two markers and the finalized record gone
    direct.direct.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "rf-resume/outputs/butterfly_48x64_x2.png"},
        {"Key": "rf-resume/" + markers[0]}, {"Key": "rf-resume/" + markers[3]}]})
    assert _run(url, inputs[:1]) == 0
    counts = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="rf-resume/report.json")[
        "Body"].read())["summary"]["counts"]
    assert (counts["tiles_inferred"], counts["tiles_skipped"]) == (2, 2)
    assert counts["steps_resumed"] == 1 and counts["steps_trained"] == 0
    assert direct.direct.get_object(Bucket=BUCKET, Key="rf-resume/outputs/butterfly_48x64_x2.png"
                                    )["Body"].read() == ref


def test_second_run_exits_9(direct, inputs, capsys) -> None:
    url = f"s3://{BUCKET}/rf-busy"
    with RemoteLease(f"{url}/.lock", _refusal, seconds=30):
        assert _run(url, inputs[:1]) == EXIT["locked"] == 9
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "another zssr run" in err[0], err
    assert _keys(direct, "rf-busy/") == []  # nothing written by the refused run


@pytest.mark.parametrize("flag", [["--stac-item"], ["--output-prefix", f"s3://{BUCKET}/x/"]])
def test_unsupported_with_s3_out_refused(direct, inputs, capsys, flag) -> None:
    url = f"s3://{BUCKET}/rf-refused"
    assert _run(url, inputs[:1], *flag) == EXIT["usage"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "not supported" in err[0], err
    assert _keys(direct, "rf-refused/") == []


def test_out_needs_a_prefix(direct, inputs, capsys) -> None:
    assert _run(f"s3://{BUCKET}", inputs[:1]) == EXIT["usage"]
    assert "needs a prefix" in capsys.readouterr().err


def test_zarr_outputs_on_s3(direct, inputs, tmp_path: Path) -> None:
    """A Zarr output in a run folder on S3 is written straight to the bucket (its
    ``zarr.json`` documents last); ``zssr upscale … s3://….zarr`` uploads it whole; both
    read back equal to the local outputs, georeference included."""
    from io_adapters.zarr_reader import ZarrReader

    assert _run(tmp_path / "local", inputs[1:2], "--format", "zarr") == 0
    assert _run(f"s3://{BUCKET}/rf-zarr", inputs[1:2], "--format", "zarr") == 0
    local = ZarrReader(tmp_path / "local" / "outputs" / "landsat_64x80_x2.zarr")
    remote = ZarrReader(f"/vsis3/{BUCKET}/rf-zarr/outputs/landsat_64x80_x2.zarr")
    np.testing.assert_array_equal(remote.read(), local.read())
    assert remote.meta.geo == local.meta.geo and remote.meta.nodata == local.meta.nodata
    keys = _keys(direct, "rf-zarr/outputs/landsat_64x80_x2.zarr/")
    assert "zarr.json" in keys and any(k.startswith("band_data/c/") for k in keys)

    up = ["upscale", str(TIF), "--scale", "2", *TINY[:10], "-q"]  # the --set flags, --tile
    assert main([*up[:2], str(tmp_path / "up.zarr"), *up[2:]]) == 0
    assert main([*up[:2], f"s3://{BUCKET}/up/up.zarr", *up[2:]]) == 0
    np.testing.assert_array_equal(ZarrReader(f"/vsis3/{BUCKET}/up/up.zarr").read(),
                                  ZarrReader(tmp_path / "up.zarr").read())
    # an existing store needs --overwrite, and one zssr did not write is never replaced
    assert main([*up[:2], f"s3://{BUCKET}/up/up.zarr", *up[2:]]) == EXIT["write"]
    direct.direct.put_object(Bucket=BUCKET, Key="up/theirs.zarr/zarr.json",
                             Body=b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert main([*up[:2], f"s3://{BUCKET}/up/theirs.zarr", *up[2:], "--overwrite"]) == \
        EXIT["write"]
    assert _keys(direct, "up/theirs.zarr/") == ["zarr.json"]


def test_zarr_metadata_written_last(s3, tmp_path: Path) -> None:  # noqa: F811
    """Through the relay (every PUT seen): a Zarr writer on S3 sends chunks as they come
    and no ``zarr.json`` before its commit, the root's last; an aborted one leaves
    nothing; :func:`upload_tree` uploads in the same order."""
    from dataclasses import replace

    from rasterio.windows import Window

    from io_adapters.detect import open_reader
    from io_adapters.objstore import upload_tree
    from io_adapters.zarr_store import ZarrWriter

    puts: list[str] = []
    s3.faults.append(lambda method, path: puts.append(path.split("?")[0]) if method == "PUT"
                     else None)
    try:
        with open_reader(TIF) as reader:
            meta, values = replace(reader.meta, format="zarr"), reader.read()
        writer = ZarrWriter(f"s3://{BUCKET}/ml/a.zarr", meta, chunks=(32, 32))
        writer.write(values[:, :32, :32], Window(0, 0, 32, 32))
        writer.write(values[:, 32:, :], Window(0, 32, meta.cols, meta.rows - 32))
        before = _keys(s3, "ml/a.zarr/")
        assert before and not [k for k in before if k.endswith("zarr.json")], before
        writer.commit()
        meta_puts = [i for i, p in enumerate(puts) if p.endswith("/zarr.json")]
        chunk_puts = [i for i, p in enumerate(puts) if "/band_data/c/" in p]
        assert chunk_puts and meta_puts and max(chunk_puts) < min(meta_puts)
        assert puts[-1] == f"/{BUCKET}/ml/a.zarr/zarr.json"

        aborted = ZarrWriter(f"s3://{BUCKET}/ml/b.zarr", meta, chunks=(32, 32))
        aborted.write(values[:, :32, :32], Window(0, 0, 32, 32))
        assert _keys(s3, "ml/b.zarr/")
        aborted.abort()
        assert _keys(s3, "ml/b.zarr/") == []

        local = ZarrWriter(tmp_path / "c.zarr", meta, chunks=(32, 32))
        local.write(values, Window(0, 0, meta.cols, meta.rows))
        puts.clear()
        upload_tree(local.commit(), f"s3://{BUCKET}/ml/c.zarr")
        meta_puts = [i for i, p in enumerate(puts) if p.endswith("/zarr.json")]
        chunk_puts = [i for i, p in enumerate(puts) if "/c/" in p.split(".zarr/", 1)[1]]
        assert chunk_puts and max(chunk_puts) < min(meta_puts)
        assert puts[-1] == f"/{BUCKET}/ml/c.zarr/zarr.json"
    finally:
        s3.faults.clear()
