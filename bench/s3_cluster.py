"""``zssr run`` on local disk against the run folder on object storage, side by side.

The same batch (tests/data: a PNG, a 4-band GeoTIFF, a CT DICOM slice and the 144^2
bird PNG, x2, the tests' tiny network) is run, each configuration as a user would run it
(``zssr run`` subprocesses):

* ``local-sync``: local files in, local ``--out``, ``--scheduler synchronous``;
* ``local-cluster``: the same, on a 2-worker ``dask scheduler``/``dask worker`` cluster
  sharing this machine's disk (working directory the repository);
* ``s3-sync``: inputs and ``--out s3://bucket/prefix`` on a moto S3 server on loopback,
  ``--scheduler synchronous``;
* ``s3-cluster``: inputs and ``--out`` on S3, the 2-worker cluster without a shared disk
  (each process in an empty folder of its own with its own TMPDIR,
  ``tests/_run_helpers.dask_cluster(isolated=True)``).

The S3 configurations talk to moto straight (their wall time), then once more through
an HTTP relay in this process (tests/test_s3.py's) that counts requests (by method and
by the run folder's top-level name) and the bytes sent and received; the relay's own
latency makes those runs slower, so their wall time is reported apart.  The outputs of
every configuration are compared with ``local-sync``'s (pixels; the S3 runs' GeoTIFF
names its URL as source, so not its bytes).  Wall time, CPU seconds of all processes
(driver, scheduler, workers: ``RUSAGE_CHILDREN``) and the machine's load average go to
``bench/results/s3_cluster_<date>.json``::

    .venv/bin/python bench/s3_cluster.py                       # every configuration
    .venv/bin/python bench/s3_cluster.py --configs local-sync,s3-cluster --repeat 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import numpy as np  # noqa: E402
from _run_helpers import dask_cluster, pixels, zssr_argv  # noqa: E402
from test_s3 import Relay  # noqa: E402

DATA = ROOT / "tests" / "data"
INPUTS = [DATA / "io" / "plain" / "butterfly_48x64.png",
          DATA / "io" / "geotiff" / "landsat_64x80.tif",
          DATA / "dicom" / "CT_small.dcm",
          DATA / "sr" / "bird_SRF_2_LR.png"]
BUCKET = "zssr-bench"
CONFIGS = ("local-sync", "local-cluster", "s3-sync", "s3-cluster")


class CountingRelay(Relay):
    """tests/test_s3.py's relay, also counting request bodies and requests by area."""

    def _handle(self) -> None:
        sent = int(self.headers.get("Content-Length") or 0)
        parts = urlsplit(self.path)
        keys = parts.path.lstrip("/").split("/")
        if len(keys) == 1:  # a LIST of the bucket: the area of its prefix
            keys += unquote(dict(parse_qsl(parts.query)).get("prefix", "")).split("/")
        area = "bucket"
        if len(keys) > 1 and keys[1] == "in":
            area = "inputs"
        elif len(keys) > 3:  # /bucket/runs/<id>/<area>/...
            area = keys[3] or "prefix"
        method = self.command
        if method == "GET" and ("list-type" in parts.query or "uploads" in parts.query):
            method = "LIST"
        with self.server.lock:
            self.server.bytes_in += sent
            by = self.server.by_area.setdefault(area, {})
            by[method] = by.get(method, 0) + 1
        super()._handle()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@contextmanager
def s3_server():
    """moto_server on a free loopback port and a counting relay in front of it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-p",
                             str(port), "-H", "127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.1)
        relay = ThreadingHTTPServer(("127.0.0.1", 0), CountingRelay)
        relay.upstream, relay.faults, relay.lock = port, [], threading.Lock()
        relay.daemon_threads = True
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        base = {"AWS_ACCESS_KEY_ID": "zssrbench", "AWS_SECRET_ACCESS_KEY": "zssrbench",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_HTTPS": "NO",
                "AWS_VIRTUAL_HOSTING": "FALSE", "GDAL_HTTP_TIMEOUT": "60"}
        direct = {**base, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                  "AWS_S3_ENDPOINT": f"127.0.0.1:{port}"}
        relayed = {**base, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.server_port}",
                   "AWS_S3_ENDPOINT": f"127.0.0.1:{relay.server_port}"}
        client = boto3.client("s3", endpoint_url=direct["AWS_ENDPOINT_URL"],
                              aws_access_key_id="zssrbench", aws_secret_access_key="zssrbench",
                              region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for src in INPUTS:
            client.upload_file(str(src), BUCKET, f"in/{src.name}")
        yield relay, direct, relayed, client
        relay.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)


def reset(relay) -> None:
    with relay.lock:
        relay.bytes_out, relay.bytes_in, relay.requests, relay.by_area = 0, 0, [], {}


def node(work: Path, name: str, extra: dict[str, str]) -> tuple[dict[str, str], Path]:
    cwd, tmp = work / "nodes" / name / "cwd", work / "nodes" / name / "tmp"
    cwd.mkdir(parents=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", **extra, "TMPDIR": str(tmp)}
    return env, cwd


def one(config: str, work: Path, iters: int, env: dict[str, str]) -> dict:
    """One run of ``config`` in the fresh folder ``work``: wall, CPU, exit code."""
    remote = config.startswith("s3")
    inputs = [f"s3://{BUCKET}/in/{p.name}" for p in INPUTS] if remote else INPUTS
    out = f"s3://{BUCKET}/runs/{work.name}" if remote else work / "run"
    args = [*inputs, "--out", out, "--scale", "2", "--batch-tiles", "2"]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if config.endswith("sync"):
        full, cwd = node(work, "driver", env) if remote else ({**os.environ, **env}, ROOT)
        proc = subprocess.run(zssr_argv(*args, "--scheduler", "synchronous", iters=iters),
                              env=full, cwd=cwd, capture_output=True, text=True)
    else:
        with dask_cluster(work, isolated=remote, env=env or None) as (address, _):
            full, cwd = node(work, "driver", env) if remote else ({**os.environ, **env}, ROOT)
            proc = subprocess.run(zssr_argv(*args, "--scheduler", address, iters=iters),
                                  env=full, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{config}: zssr run exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-6000:]}")
    return {"wall_s": round(seconds, 2),
            "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
            "out": str(out)}


def outputs_of(result: dict, client, dest: Path) -> Path:
    """A local folder with the run's outputs (downloaded from S3)."""
    out = result["out"]
    if not out.startswith("s3://"):
        return Path(out) / "outputs"
    prefix = out[len(f"s3://{BUCKET}/"):] + "/outputs/"
    dest.mkdir(parents=True, exist_ok=True)
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        (dest / obj["Key"][len(prefix):]).write_bytes(
            client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
    return dest


def same_pixels(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()) or len(names) != len(INPUTS):
        return False
    return all(np.array_equal(pixels(a / n), pixels(b / n)) for n in names)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5, help="training iterations (tiny net)")
    ap.add_argument("--no-relay", action="store_true", help="skip the counted S3 runs")
    ap.add_argument("--json", type=Path, default=None,
                    help="default bench/results/s3_cluster_<date>.json")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configurations {sorted(unknown)}; choose from {CONFIGS}")
    path = args.json or ROOT / "bench" / "results" / f"s3_cluster_{dt.date.today()}.json"
    scratch = Path(tempfile.mkdtemp(prefix="s3_cluster_"))
    results: dict = {"commit": commit(), "date": dt.datetime.now().isoformat(timespec="seconds"),
                     "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} "
                                f"CPUs, {platform.python_version()}",
                     "load_average_before": os.getloadavg(),
                     "batch": [p.name for p in INPUTS], "scale": 2,
                     "flags": zssr_argv("x", iters=args.iters)[5:] + ["--batch-tiles", "2"],
                     "runs": {}}
    try:
        with s3_server() as (relay, direct, relayed, client):
            n = 0
            for rep in range(args.repeat):
                for config in configs:
                    n += 1
                    work = scratch / f"{config}-{n}"
                    work.mkdir()
                    env = direct if config.startswith("s3") else {}
                    res = one(config, work, args.iters, env)
                    res["load_average_after"] = os.getloadavg()
                    results["runs"].setdefault(config, []).append(res)
                    print(f"{config} #{rep + 1}: {res['wall_s']} s wall, {res['cpu_s']} CPU s",
                          flush=True)
            if not args.no_relay:
                for config in (c for c in configs if c.startswith("s3")):
                    n += 1
                    work = scratch / f"{config}-relay-{n}"
                    work.mkdir()
                    reset(relay)
                    res = one(config, work, args.iters, relayed)
                    with relay.lock:
                        res.update(requests=len(relay.requests), bytes_sent=relay.bytes_in,
                                   bytes_received=relay.bytes_out,
                                   requests_by_area=relay.by_area)
                    results["runs"][f"{config}-relay"] = [res]
                    print(f"{config} through the relay: {res['wall_s']} s, "
                          f"{res['requests']} requests, {res['bytes_sent']} B sent, "
                          f"{res['bytes_received']} B received", flush=True)
            if "local-sync" in configs:
                ref = outputs_of(results["runs"]["local-sync"][0], client, scratch / "ref")
                for config, runs in results["runs"].items():
                    for i, res in enumerate(runs):
                        got = outputs_of(res, client, scratch / f"got-{config}-{i}")
                        res["pixels_equal_local_sync"] = same_pixels(got, ref)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for runs in results["runs"].values():
        for res in runs:
            res.pop("out", None)
    summary = {c: {"median_wall_s": float(np.median([r["wall_s"] for r in runs])),
                   "median_cpu_s": float(np.median([r["cpu_s"] for r in runs]))}
               for c, runs in results["runs"].items()}
    results["summary"] = summary
    results["load_average_after"] = os.getloadavg()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
