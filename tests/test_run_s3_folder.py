"""``zssr run --out s3://bucket/prefix``: the run folder on object storage (issue 17, item 3).

Against the real moto server of tests/test_s3.py (its ``s3`` fixture), with a real
``dask scheduler`` and two ``dask worker`` processes that share no disk: each cluster
process, and each ``zssr run`` driver, starts in an empty working directory of its own
with a ``TMPDIR`` of its own (``_run_helpers.dask_cluster(isolated=True)``); inputs and
``--out`` are on the S3 server only.  The reference is the same batch (the same S3
inputs) run with ``--scheduler synchronous`` into a local ``--out``, in this process.

* Acceptance: PNG + GeoTIFF + DICOM through the two workers: the objects under
  ``outputs/`` are byte-identical to the local run's files (the DICOM: pixels and every
  tag but the new instance UIDs, dates and times); the run folder's pieces are objects
  under the prefix (manifest records, config, log, weights, the Zarr stores, tile
  markers, entries, claims, report), nothing outside it; no process left a file behind
  in its working directory or ``TMPDIR`` (the cluster processes: dask's own two lock
  files).
* A worker SIGKILLed among the tiles: the run completes on the other worker (or fails);
  the same command again completes, redoing no finished tile, with identical outputs.
* A second ``zssr run`` on the prefix while the first holds its lease (renewed: the TTL
  is shorter than the wait) exits 9 with one line naming the prefix; the first gives the
  lease back at its end; a stale lease written by hand, and the lease of a holder that
  was SIGKILLed (once older than its TTL), are taken over.
* A driver SIGKILLed while its output's upload is held at the server: no object under
  ``outputs/``, and the rerun aborts the pending multipart upload left and completes
  without training or inferring again (weights and tile markers read back from the
  bucket).  (SIGTERM during an upload: tests/test_s3.py; a driver killed among the tiles
  and resumed from the bucket: tests/test_remote_rundir.py, in process, to keep this
  file's cluster runs few.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _run_helpers import (
    BIG,
    DCM,
    OUTPUTS,
    PNG,
    ROOT,
    TIF,
    dask_cluster,
    node_dirs,
    pixels,
    tiny,
    wait_until,
    zssr_argv,
)
from test_s3 import BUCKET, s3  # noqa: F401 - the server fixture

from pipeline.cli.main import main

pytestmark = pytest.mark.slow

TILES = {PNG: 4, TIF: 6, DCM: 16, BIG: 25}
#: what ``dask scheduler``/``dask worker`` leave in their TMPDIR after a clean shutdown
DASK_LEFTOVERS = {"dask-scratch-space", "dask-scratch-space/global.lock",
                  "dask-scratch-space/purge.lock"}
#: the names directly under a run folder's prefix (issue 17, item 3)
RUN_NAMES = {".lock", "manifest", "manifest.jsonl", "config.yaml", "log.jsonl", "weights", "kernels", "work",
             "tiles", "entries", "claims", "report_assets", "report.json", "report.html",
             "outputs"}
SLOW_TILES = {"io_adapters.zarr_regions:write_region": 0.3}
TINY_FLAGS = tiny(5)  # what zssr_argv gives the drivers


# ----------------------------------------------------------------------------- helpers


def direct(s3) -> dict[str, str]:  # noqa: F811
    """Straight to the moto server, not through the relay (which lives in this process)."""
    return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.upstream}",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{s3.upstream}"}


def url(prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}"


def objects(s3, prefix: str = "") -> dict[str, dict]:  # noqa: F811
    """``{key: listing entry}`` of every object under ``prefix``."""
    pages = s3.direct.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def exists(s3, key: str) -> bool:  # noqa: F811
    return key in objects(s3, key)


def pending(s3, prefix: str) -> list[str]:  # noqa: F811
    """The keys under ``prefix`` with a pending multipart upload."""
    uploads = s3.direct.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return [u["Key"] for u in uploads.get("Uploads", [])]


def s3_markers(s3, prefix: str, key: str = "") -> dict[str, dict]:  # noqa: F811
    """The tile markers of the first step (of keys starting with ``key``)."""
    return {k: o for k, o in objects(s3, f"{prefix}/tiles/{key}").items()
            if "/s0/" in k and k.endswith(".done")}


def report(s3, prefix: str) -> dict:  # noqa: F811
    body = s3.direct.get_object(Bucket=BUCKET, Key=f"{prefix}/report.json")["Body"]
    return json.loads(body.read())


def fetch(s3, key: str, dest: Path) -> Path:  # noqa: F811
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(s3.direct.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return dest


def node_env(tmp_path: Path, name: str, extra: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The environment and (fresh, empty) working directory of a driver process ``name``."""
    cwd, tmp = node_dirs(tmp_path, name)
    cwd.mkdir(parents=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", **extra, "TMPDIR": str(tmp)}
    return env, cwd


def start(tmp_path: Path, name: str, *args: str | Path, env: dict[str, str],
          slow: dict[str, float] | None = None) -> subprocess.Popen:
    """``zssr run ARGS`` (tiny network) as a driver process in its own empty folders."""
    full, cwd = node_env(tmp_path, name, env)
    return subprocess.Popen(zssr_argv(*args, slow=slow), env=full, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    """Wait for ``proc``; ``(exit code, stdout + stderr)``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out + err


def run(tmp_path: Path, name: str, *args: str | Path, env: dict[str, str]) -> tuple[int, str]:
    return finish(start(tmp_path, name, *args, env=env))


def leftovers(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_clean(tmp_path: Path, name: str, tmp_expected: set[str] = frozenset()) -> None:
    """The process ``name`` left nothing in its working directory, and in its TMPDIR
    nothing but ``tmp_expected``."""
    cwd, tmp = node_dirs(tmp_path, name)
    assert leftovers(cwd) == set(), (name, "cwd")
    assert leftovers(tmp) == set(tmp_expected), (name, "TMPDIR")


def dicom_tags(path: Path) -> list[tuple[str, object]]:
    """Every element (file meta and nested sequences too) but the instance UIDs a derived
    series gets anew and the dates and times of its making."""
    ds = pydicom.dcmread(path)
    out: list[tuple[str, object]] = []

    def walk(dataset, where: str) -> None:
        for elem in dataset:
            if elem.VR in ("DA", "TM", "DT") or elem.keyword.endswith("InstanceUID"):
                continue
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    walk(item, f"{where}{elem.keyword}[{i}].")
            else:
                out.append((f"{where}{elem.keyword or elem.tag}", elem.value))

    walk(ds.file_meta, "meta.")
    walk(ds, "")
    return out


def assert_same_outputs(got: Path, ref: Path, sources) -> None:
    for src in sources:
        name = OUTPUTS[src]
        np.testing.assert_array_equal(pixels(got / name), pixels(ref / name), err_msg=name)
        if name.endswith(".dcm"):
            assert dicom_tags(got / name) == dicom_tags(ref / name), name
        else:
            assert (got / name).read_bytes() == (ref / name).read_bytes(), name


def fetch_outputs(s3, prefix: str, dest: Path) -> Path:  # noqa: F811
    for key in objects(s3, f"{prefix}/outputs/"):
        fetch(s3, key, dest / key[len(f"{prefix}/outputs/"):])
    return dest


def _worker_running(client, prefix: str) -> str | None:
    """The address of a worker with a task whose key starts with ``prefix``."""
    for address, keys in client.processing().items():
        if any(str(k).startswith(prefix) for k in keys):
            return address
    return None


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def urls(s3) -> dict[Path, str]:  # noqa: F811
    """The four inputs, uploaded under ``in/`` (their names kept)."""
    for src in OUTPUTS:
        s3.client.upload_file(str(src), BUCKET, f"in/{src.name}")
    return {src: url(f"in/{src.name}") for src in OUTPUTS}


@pytest.fixture(scope="module")
def reference(s3, urls, tmp_path_factory) -> Path:  # noqa: F811
    """The run folder of the same S3 inputs run synchronously into a local --out, in this
    process (torch threads 1)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    endpoint = {k: v for k, v in direct(s3).items() if k.startswith("AWS_")}
    saved = {k: os.environ[k] for k in endpoint}
    os.environ.update(endpoint)
    try:
        assert main(["run", *(urls[s] for s in (PNG, TIF, DCM, BIG)), "--out", str(out),
                     "--scale", "2", "--scheduler", "synchronous", "-q", *TINY_FLAGS]) == 0
    finally:
        os.environ.update(saved)
    return out


def local_manifest(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- a. acceptance


def test_two_workers_without_shared_disk_equal_the_local_run(s3, urls, reference,  # noqa: F811
                                                             tmp_path: Path):
    prefix, env = "runs/accept", direct(s3)
    batch = (PNG, TIF, DCM)
    before = objects(s3)
    with dask_cluster(tmp_path, isolated=True, env=env) as (address, _):
        t0 = time.perf_counter()
        rc, text = run(tmp_path, "driver", *(urls[s] for s in batch), "--out", url(prefix),
                       "--scale", "2", "--scheduler", address, "--batch-tiles", "4", env=env)
        seconds = time.perf_counter() - t0
    assert rc == 0, text[-3000:]
    summary = report(s3, prefix)["summary"]
    assert summary["scheduler"] == address and summary["counts"]["finalized"] == 3
    assert seconds < 120, seconds

    # the outputs: byte for byte the local run's (the DICOM: pixels and tags)
    got = fetch_outputs(s3, prefix, tmp_path / "fetched")
    assert sorted(p.name for p in got.iterdir()) == sorted(OUTPUTS[s] for s in batch)
    assert_same_outputs(got, reference / "outputs", batch)

    # every object the run wrote is under the prefix, at a name of the run folder
    after = objects(s3)
    new = set(after) - set(before)
    assert all(k.startswith(f"{prefix}/") for k in new), sorted(new)[:20]
    tops = {k[len(prefix) + 1:].split("/")[0] for k in new}
    assert tops <= RUN_NAMES, tops - RUN_NAMES
    for name in ("config.yaml", "log.jsonl", "report.json", "report.html"):
        assert f"{prefix}/{name}" in after, name
    assert not pending(s3, f"{prefix}/")

    # per image: weights, the step's Zarr store, every tile marker, the entry, a claim;
    # the keys are the local run's (same inputs, same settings)
    keys = {r["key"] for r in local_manifest(reference)
            if r["state"] == "queued" and r["input"] in {urls[s] for s in batch}}
    records = [r for r in local_manifest(reference) if r["key"] in keys]
    assert len(keys) == 3
    for key in keys:
        assert f"{prefix}/weights/{key}_s0.pt" in after, key
        assert f"{prefix}/entries/{key}.json" in after, key
        assert f"{prefix}/work/{key}/s0.zarr/zarr.json" in after, key
        local = {p.name for p in (reference / "tiles" / key / "s0").glob("*.done")}
        assert {k.rsplit("/", 1)[1] for k in s3_markers(s3, prefix, key)} == local, key
        assets = {p.name for p in (reference / "report_assets").glob(f"{key}_*")}
        assert {k.rsplit("/", 1)[1] for k in objects(s3, f"{prefix}/report_assets/{key}_")
                } == assets, key
    assert len(objects(s3, f"{prefix}/claims/")) == 3
    # the manifest: one object per record while the run goes, compacted into
    # manifest.jsonl at its end; the records the local run wrote for these keys
    assert objects(s3, f"{prefix}/manifest/") == {}
    body = s3.direct.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.jsonl")["Body"].read()
    manifest = [json.loads(line) for line in body.decode().splitlines()]
    assert sorted((r["key"], r["state"]) for r in manifest) == sorted(
        (r["key"], r["state"]) for r in records)
    assert f"{prefix}/.lock" not in after  # the lease is given back at the end

    # no process left a file behind (dask's own lock files apart)
    for name in ("scheduler", "w0", "w1"):
        assert_clean(tmp_path, name, DASK_LEFTOVERS)
    assert_clean(tmp_path, "driver")


# ----------------------------------------------------------------------------- b. killed worker


def test_killed_worker_then_rerun_completes_identically(s3, urls, reference,  # noqa: F811
                                                        tmp_path: Path):
    from distributed import Client

    prefix, env = "runs/killworker", direct(s3)
    args = (urls[BIG], "--out", url(prefix), "--scale", "2", "--batch-tiles", "2")
    with dask_cluster(tmp_path, isolated=True, env=env, slow=SLOW_TILES) as (address, workers), \
            Client(address, timeout="30s", set_as_default=False) as client:
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        pids = client.run(os.getpid)
        proc = start(tmp_path, "driver", *args, "--scheduler", address, env=env)
        try:
            wait_until(lambda: len(s3_markers(s3, prefix)) >= 3, proc, "3 tile markers on S3",
                       timeout=120, poll=0.2)
            victim = _worker_running(client, "zssr-infer-")
            assert victim is not None, "no worker is running an infer task"
            os.kill(pids[victim], signal.SIGKILL)
        finally:
            first, first_text = finish(proc)
        killed = next(w for w in workers if w.pid == pids[victim])
        assert killed.wait(timeout=10) == -signal.SIGKILL
        done = s3_markers(s3, prefix)
        assert 3 <= len(done) <= 25
        rc, text = run(tmp_path, "driver2", *args, "--scheduler", address, env=env)
    assert rc == 0, (first, first_text[-2000:], text[-3000:])
    counts = report(s3, prefix)["summary"]["counts"]
    if first == 0:  # completed on the other worker: the rerun has nothing to do
        assert len(done) == 25 and counts["images_skipped"] == 1
        assert counts["tiles_inferred"] == 0 and counts["steps_trained"] == 0
    else:
        assert counts["tiles_skipped"] == len(done), (counts, len(done))
        assert counts["tiles_inferred"] == 25 - len(done)
    after = s3_markers(s3, prefix)
    assert len(after) == 25
    assert {k: after[k]["LastModified"] for k in done} == {
        k: o["LastModified"] for k, o in done.items()}  # no finished tile redone
    got = fetch_outputs(s3, prefix, tmp_path / "fetched")
    assert_same_outputs(got, reference / "outputs", [BIG])
    survivor = next(n for a, n in names.items() if a != victim)
    for name in ("scheduler", survivor):
        assert_clean(tmp_path, name, DASK_LEFTOVERS)
    assert_clean(tmp_path, "driver2")


# ----------------------------------------------------------------------------- c. the lease


def test_second_run_is_refused_and_a_stale_lease_taken_over(s3, urls, tmp_path: Path):  # noqa: F811
    prefix = "runs/lease"
    env = {**direct(s3), "ZSSR_LEASE_SECONDS": "3"}  # renewed every second
    args = (urls[PNG], "--out", url(prefix), "--scale", "2", "--scheduler", "synchronous")
    first = start(tmp_path, "first", *args, env=env,
                  slow={"pipeline.runs.tasks:train_stage": 10.0})
    try:
        wait_until(lambda: exists(s3, f"{prefix}/.lock"), first, "the lease", poll=0.1)
        time.sleep(3.5)  # past one TTL: the second meets a lease that was renewed
        rc, text = run(tmp_path, "second", *args, env=env)
        assert first.poll() is None  # still running, still holding the prefix
    finally:
        rc_first, text_first = finish(first)
    assert rc == 9, text[-2000:]
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zssr run: error: ") and \
        url(prefix) in lines[0], lines
    assert rc_first == 0, text_first[-3000:]
    assert_clean(tmp_path, "second")
    assert not exists(s3, f"{prefix}/.lock")  # the first gave it back
    # a stale lease written by hand (its holder's TTL 1 s, written 2 s ago): taken over
    s3.direct.put_object(Bucket=BUCKET, Key=f"{prefix}/.lock",
                         Body=json.dumps({"holder": "a test", "ttl_seconds": 1}).encode())
    time.sleep(2.2)
    rc, text = run(tmp_path, "third", *args, env=env)
    assert rc == 0, text[-3000:]
    assert report(s3, prefix)["summary"]["counts"]["images_skipped"] == 1
    assert not exists(s3, f"{prefix}/.lock")

    # a holder SIGKILLed: its lease is taken over once it is older than the TTL
    args = (urls[TIF], "--out", url(prefix), "--scale", "2", "--scheduler", "synchronous")
    holder = start(tmp_path, "holder", *args, env=env,
                   slow={"pipeline.runs.tasks:train_stage": 60.0})
    try:
        wait_until(lambda: exists(s3, f"{prefix}/.lock"), holder, "the lease", poll=0.1)
    finally:
        holder.kill()
        finish(holder)
    assert holder.returncode == -signal.SIGKILL
    assert exists(s3, f"{prefix}/.lock")  # nobody gave it back
    time.sleep(3.5)
    rc, text = run(tmp_path, "taker", *args, env=env)
    assert rc == 0, text[-3000:]
    assert report(s3, prefix)["summary"]["counts"]["finalized"] == 1
    assert not exists(s3, f"{prefix}/.lock")


# ----------------------------------------------------------------------------- d. interrupted


@pytest.mark.parametrize("sig", [signal.SIGKILL], ids=["SIGKILL"])
def test_driver_killed_during_the_upload(s3, urls, reference, tmp_path: Path,  # noqa: F811
                                         sig: int):
    """The upload of the output is held at the server (the relay) when the driver is
    killed: no object, no pending upload (SIGKILL: the rerun aborts it)."""
    prefix = f"runs/upload-{sig.name}"
    key = f"{prefix}/outputs/{OUTPUTS[TIF]}"
    held: list[str] = []
    started = threading.Event()

    def hold(method: str, path: str):
        if method == "PUT" and f"/{BUCKET}/{key}" in path:
            held.append(path)
            started.set()
            return 2.0
        return None

    # through the relay (os.environ's endpoint); SIGKILL: a lease short enough to expire
    env = {"ZSSR_LEASE_SECONDS": "3"} if sig == signal.SIGKILL else {}
    args = (urls[TIF], "--out", url(prefix), "--scale", "2", "--scheduler", "synchronous")
    s3.faults.append(hold)
    try:
        proc = start(tmp_path, "driver", *args, env=env)
        try:
            while not started.wait(0.2):
                assert proc.poll() is None, finish(proc)[1][-3000:]
            proc.send_signal(sig)
        finally:
            rc, text = finish(proc, timeout=60)
    finally:
        s3.faults.clear()
    assert rc == (143 if sig == signal.SIGTERM else -signal.SIGKILL), text[-3000:]
    assert any("partNumber=" in p for p in held), held  # held inside a multipart upload
    time.sleep(4.5)  # the held part reaches the server after the kill; the lease expires
    assert objects(s3, f"{prefix}/outputs/") == {}
    if sig == signal.SIGTERM:
        assert pending(s3, f"{prefix}/") == []
        assert_clean(tmp_path, "driver")  # the local copy removed too
        assert not exists(s3, f"{prefix}/.lock")  # given back on the way out
    else:
        # a SIGKILL cannot abort: the output's upload may be left pending (the log is one
        # PUT); the next upload of the key aborts it
        assert pending(s3, f"{prefix}/") in ([], [key])
        # the manifest so far: one object per record, not compacted (the driver never exited)
        records = [json.loads(s3.direct.get_object(Bucket=BUCKET, Key=k)["Body"].read())
                   for k in sorted(objects(s3, f"{prefix}/manifest/"))]
        assert [r["state"] for r in records] == ["queued", "trained", "inferred"], records
    rc, text = run(tmp_path, "rerun", *args, env={**direct(s3), **env})
    assert rc == 0, text[-3000:]
    assert pending(s3, f"{prefix}/") == []
    counts = report(s3, prefix)["summary"]["counts"]
    assert counts["finalized"] == 1 and counts["steps_trained"] == 0
    assert counts["tiles_inferred"] == 0 and counts["tiles_skipped"] == TILES[TIF]
    got = fetch_outputs(s3, prefix, tmp_path / "fetched")
    assert_same_outputs(got, reference / "outputs", [TIF])
    assert_clean(tmp_path, "rerun")
