"""Inputs and outputs on S3 (issue 17, items 1, 2, 6) against a real S3 server.

The server is moto in server mode, started here as a subprocess on loopback
(``moto_server -p0``); nothing in the client libraries (GDAL's /vsis3/, boto3) is mocked.
A small HTTP relay on loopback sits between the clients and the server: it counts the
response bytes (what the window-read figure reports: bytes that crossed the network)
and injects the faults a real server has (a 500 on every attempt at one part of a
multipart upload, a slowed part, a 403 for one key).

* A 256-px window read of a remote COG through the pipeline's reader transfers at most
  twice the compressed bytes of the block(s) it covers (``block_size`` from the TIFF's
  own tile byte counts); the figures go to ``bench/results/s3_window_read.json``.
* A missing bucket, a missing object, denied access and an unreachable endpoint give one
  line naming the URL, exit 3 for ``zssr upscale`` (7 for an output); neither the secret
  nor the access key id appears, in errors or in debug logs (botocore's signed requests).
* Uploads: a server failing one part, SIGTERM during the upload (a subprocess) leave no
  object and no pending multipart upload; SIGKILL leaves a pending upload, which the
  next upload of the key aborts; every rerun completes.
* ``zssr upscale s3://… s3://… --stac-item`` gives the pixels, profile and tags of the
  same run on local disk (only ``ZSSR_SOURCE`` differs: it names the URL), and its Item
  is uploaded beside the object.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pystac
import pytest
import rasterio
from rasterio.windows import Window

from io_adapters.errors import InputNotFoundError, WriteError
from io_adapters.geotiff import GeoTiffReader
from io_adapters.objstore import check_remote_output, upload_atomic
from pipeline.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
LANDSAT = Path(__file__).parent / "data" / "io" / "geotiff" / "landsat_64x80.tif"
SECRET = "zssr-test-secret-never-printed"
BUCKET = "zssr-test"
RESULTS = ROOT / "bench" / "results" / "s3_window_read.json"
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "-q"]
MIB = 1024 * 1024


class Relay(BaseHTTPRequestHandler):
    """Forwards to the S3 server; counts response bytes; applies ``server.faults``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        for fault in list(self.server.faults):
            action = fault(self.command, self.path)
            if action == "500":
                return self._reply(500, b"<Error><Code>InternalError</Code></Error>")
            if action == "403":
                return self._reply(403, b"<Error><Code>AccessDenied</Code><Message>Access "
                                        b"Denied</Message></Error>")
            if isinstance(action, float):
                time.sleep(action)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        with self.server.lock:
            self.server.bytes_out += len(data)
            self.server.requests.append((self.command, self.path,
                                         self.headers.get("Range"), len(data)))
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server subprocess on loopback, a relay in front of it, and the client
    environment (GDAL and boto3) pointing at the relay."""
    # a free port chosen here and polled with a deadline: nothing here can block forever
    # (reading the server's "Running on" line once did, under load, in a full run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-p",
                             str(port), "-H", "127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, up = time.monotonic() + 60, False
    while not up and time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            up = True
        except OSError:
            time.sleep(0.1)
    if not up:
        proc.kill()
    assert up, f"moto_server did not start on port {port} (exit {proc.poll()})"
    relay = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    relay.upstream, relay.faults, relay.lock = port, [], threading.Lock()
    relay.bytes_out, relay.requests = 0, []
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    env = {"AWS_ACCESS_KEY_ID": "zssrtestkey", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.server_port}",
           "AWS_S3_ENDPOINT": f"127.0.0.1:{relay.server_port}", "AWS_HTTPS": "NO",
           "AWS_VIRTUAL_HOSTING": "FALSE",
           # a stuck request fails the test instead of hanging the suite
           "GDAL_HTTP_TIMEOUT": "60", "GDAL_HTTP_CONNECTTIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    relay.client, relay.direct = client, boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}")
    yield relay
    relay.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(10)


def _pending(s3, key: str) -> list:
    uploads = s3.direct.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return [u for u in uploads if u["Key"] == key]


def _exists(s3, key: str) -> bool:
    return "Contents" in s3.direct.list_objects_v2(Bucket=BUCKET, Prefix=key)


def _cog(path: Path, side: int = 1024) -> Path:
    """A single-band uint16 COG, 256-px blocks, of the Landsat blue band tiled and
    upsampled (real texture, DEFLATE as zssr writes it)."""
    with rasterio.open(LANDSAT) as src:
        band, profile = src.read(1).astype(np.float64), src.profile
    reps = (side // 64 // 4 + 1, side // 80 // 4 + 1)
    big = np.kron(np.tile(band, reps), np.ones((4, 4)))[:side, :side]
    big += np.random.default_rng(3).normal(0, 20, big.shape)
    tmp = path.with_suffix(".tmp.tif")
    profile.update(width=side, height=side, count=1, tiled=True, blockxsize=256,
                   blockysize=256)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.clip(big, 1, 65535).astype(np.uint16)[None])
    rasterio.shutil.copy(tmp, path, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                         BLOCKSIZE=256)
    tmp.unlink()
    return path


def test_window_read_transfers_about_the_blocks_it_covers(s3, tmp_path: Path) -> None:
    cog = _cog(tmp_path / "scene.tif")
    size = cog.stat().st_size
    s3.client.upload_file(str(cog), BUCKET, "window/scene.tif")
    window = Window(256, 512, 256, 256)  # exactly block (row 2, col 1)
    with rasterio.open(cog) as ds:
        block_bytes = ds.block_size(1, 2, 1)
        expected = ds.read(1, window=window)
    s3.bytes_out, s3.requests = 0, []
    reader = GeoTiffReader(Path("/vsis3/") / BUCKET / "window/scene.tif")
    opened = s3.bytes_out
    got = reader.read(window)
    reader.close()
    total = s3.bytes_out
    np.testing.assert_array_equal(got[0], expected)
    figures = {"object_bytes": size, "block_compressed_bytes": block_bytes,
               "bytes_at_open": opened, "bytes_for_window": total - opened,
               "bytes_total": total, "ratio_total_to_block": round(total / block_bytes, 3),
               "requests": len(s3.requests), "gdal": rasterio.__gdal_version__,
               "window": "256 x 256 at row 512, col 256 of a 1024^2 uint16 COG, 256-px "
                         "DEFLATE blocks, moto server on loopback, counted at a relay"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")
    assert total <= 2 * block_bytes, figures
    assert [r[2] for r in s3.requests if r[0] == "GET"] == [r[2] for r in s3.requests], \
        s3.requests
    assert not [r for r in s3.requests if "delimiter=" in r[1] or "list-type" in r[1]], \
        s3.requests  # no LIST of the object's prefix (GDAL's sidecar search)
    assert all(r[2] for r in s3.requests), s3.requests  # every GET a range request
    assert total < size / 4, figures  # not the whole object


def test_remote_input_errors_name_the_url(s3, tmp_path: Path, capsys) -> None:
    s3.client.upload_file(str(LANDSAT), BUCKET, "err/ok.tif")
    with pytest.raises(InputNotFoundError, match=r"^s3://no-such-bucket/x\.tif: the bucket "
                                                 r"does not exist$"):
        GeoTiffReader(Path("/vsis3/no-such-bucket/x.tif"))
    with pytest.raises(InputNotFoundError, match=rf"^s3://{BUCKET}/err/gone\.tif: no such "):
        GeoTiffReader(Path(f"/vsis3/{BUCKET}/err/gone.tif"))
    s3.faults.append(lambda method, path: "403" if "denied" in path else None)
    try:
        with pytest.raises(InputNotFoundError, match=rf"^s3://{BUCKET}/err/denied\.tif: "
                                                     r"access denied"):
            GeoTiffReader(Path(f"/vsis3/{BUCKET}/err/denied.tif"))
        out = tmp_path / "o.tif"
        assert main(["upscale", f"s3://{BUCKET}/err/denied.tif", str(out), "--scale", "2",
                     *TINY]) == 3
    finally:
        s3.faults.clear()
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"zssr upscale: error: s3://{BUCKET}/err/denied.tif: access "
                                        "denied (check the credentials and the object's "
                                        "permissions)"]
    assert SECRET not in err and not out.exists()
    endpoint = os.environ["AWS_S3_ENDPOINT"]
    os.environ["AWS_S3_ENDPOINT"] = "127.0.0.1:9"  # discard port: nothing listens
    try:
        with pytest.raises(InputNotFoundError, match=r"err/ok2\.tif: the endpoint cannot be "
                                                     r"reached"):
            GeoTiffReader(Path(f"/vsis3/{BUCKET}/err/ok2.tif"))
    finally:
        os.environ["AWS_S3_ENDPOINT"] = endpoint


def test_stac_item_on_s3_is_an_input(s3, tmp_path: Path) -> None:
    """An Item on S3 whose assets (relative hrefs) are COGs beside it: stacked by common
    name, read by /vsis3/ windows; the output's Item points back at the Item's URL."""
    with rasterio.open(LANDSAT) as src:
        profile, data = src.profile, src.read()
    profile.update(count=1)
    item = pystac.Item(id="on-s3", geometry=None, bbox=None, properties={},
                       datetime=pystac.utils.str_to_datetime("2020-10-31T14:32:10Z"))
    for i, common in ((2, "red"), (3, "nir08")):
        name = f"B{i + 2}.tif"
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            dst.write(data[i:i + 1])
        s3.client.upload_file(str(tmp_path / name), BUCKET, f"stac/{name}")
        asset = pystac.Asset(href=name, media_type=pystac.MediaType.GEOTIFF)
        asset.extra_fields["eo:bands"] = [{"name": f"B{i + 2}", "common_name": common}]
        item.add_asset(f"B{i + 2}", asset)
    s3.client.put_object(Bucket=BUCKET, Key="stac/item.json",
                         Body=json.dumps(item.to_dict(include_self_link=False)).encode())
    url, out = f"s3://{BUCKET}/stac/item.json", tmp_path / "sr.tif"
    # straight to the server: GDAL opens a VRT's sources inside calls that hold the GIL
    # (rasterio's overviews()), which would starve the relay's threads in this process
    direct = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.upstream}",
              "AWS_S3_ENDPOINT": f"127.0.0.1:{s3.upstream}"}
    saved = {k: os.environ[k] for k in direct}
    os.environ.update(direct)
    try:
        assert main(["upscale", url, str(out), "--assets", "nir08,red", "--scale", "2",
                     *TINY]) == 0
        assert main(["upscale", f"s3://{BUCKET}/stac/none.json", str(tmp_path / "x.tif"),
                     "--assets", "red", "--scale", "2", *TINY]) == 3
    finally:
        os.environ.update(saved)
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("B5", "B4") and ds.tags()["ZSSR_SOURCE"] == url
    written = json.loads((tmp_path / "sr.tif.stac-item.json").read_text())
    assert [link["href"] for link in written["links"] if link["rel"] == "derived_from"] == [
        url]


def test_vanished_object_is_named(s3, tmp_path: Path) -> None:
    cog = _cog(tmp_path / "v.tif", side=512)
    s3.client.upload_file(str(cog), BUCKET, "vanish/v.tif")
    reader = GeoTiffReader(Path(f"/vsis3/{BUCKET}/vanish/v.tif"))
    reader.read(Window(0, 0, 256, 256))
    s3.client.delete_object(Bucket=BUCKET, Key="vanish/v.tif")
    with pytest.raises(InputNotFoundError, match=rf"^s3://{BUCKET}/vanish/v\.tif: the object "
                                                 r"vanished or changed while it was read$"):
        reader.read(Window(256, 256, 256, 256))  # a block not read yet
    reader.close()


def test_output_checks_before_any_work(s3, tmp_path: Path, capsys, caplog) -> None:
    with pytest.raises(WriteError, match=r"s3://nobucket-x/a\.tif: the bucket does not exist"):
        check_remote_output("s3://nobucket-x/a.tif", overwrite=False)
    s3.client.put_object(Bucket=BUCKET, Key="chk/theirs.tif", Body=b"not ours")
    with pytest.raises(WriteError, match=r"chk/theirs\.tif: output exists; pass --overwrite"):
        check_remote_output(f"s3://{BUCKET}/chk/theirs.tif", overwrite=False)
    with pytest.raises(WriteError, match=r"chk/theirs\.tif: an object zssr did not write"):
        check_remote_output(f"s3://{BUCKET}/chk/theirs.tif", overwrite=True)
    with pytest.raises(WriteError, match=r"chk/series: a DICOM series output cannot go to "
                                         r"object storage yet"):
        check_remote_output(f"s3://{BUCKET}/chk/series", overwrite=False)
    s3.faults.append(lambda method, path: "403" if method == "HEAD" else None)
    try:
        with pytest.raises(WriteError, match=r"chk/a\.tif: access denied while checking the "
                                             r"bucket"):
            check_remote_output(f"s3://{BUCKET}/chk/a.tif", overwrite=False)
    finally:
        s3.faults.clear()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens
    try:
        assert main(["upscale", str(LANDSAT), f"s3://{BUCKET}/chk/a.tif", "--scale", "2",
                     *TINY]) == 7
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zssr upscale: error: s3://{BUCKET}/chk/a.tif: the endpoint cannot be "
                   "reached while checking the bucket"]
    caplog.set_level(logging.DEBUG)  # botocore logs its signed requests at debug level
    assert main(["upscale", str(LANDSAT), "s3://nobucket-y/a.tif", "--scale", "2", "-vv",
                 *TINY[:-1]]) == 7
    err = capsys.readouterr().err
    assert "s3://nobucket-y/a.tif: the bucket does not exist" in err
    assert "Authorization" in caplog.text and "Credential=***" in caplog.text
    for text in (err, caplog.text):
        assert SECRET not in text and "zssrtestkey" not in text


def test_failed_part_leaves_no_object_and_no_pending_upload(s3, tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(6 * MIB)
    local = tmp_path / "big.tif"
    local.write_bytes(data)
    key = "up/big.tif"
    s3.faults.append(lambda m, p: "500" if m == "PUT" and "partNumber=2" in p else None)
    try:
        with pytest.raises(WriteError, match=rf"s3://{BUCKET}/{key}: uploading failed"):
            upload_atomic(local, f"s3://{BUCKET}/{key}", part_size=5 * MIB)
    finally:
        s3.faults.clear()
    assert not _exists(s3, key) and _pending(s3, key) == []
    upload_atomic(local, f"s3://{BUCKET}/{key}", part_size=5 * MIB)  # the rerun completes
    body = s3.direct.get_object(Bucket=BUCKET, Key=key)
    assert body["Body"].read() == data and body["Metadata"] == {"zssr-output": "1"}
    assert _pending(s3, key) == []


_UPLOADER = """
import signal, sys
from pathlib import Path
from io_adapters.objstore import upload_atomic
def stop(signum, frame):
    raise SystemExit(143)
signal.signal(signal.SIGTERM, stop)
upload_atomic(Path(sys.argv[1]), sys.argv[2], part_size=5 * 1024 * 1024)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_upload(s3, tmp_path: Path, sig: int) -> None:
    """SIGTERM: aborted at once; SIGKILL: a pending upload stays, the rerun aborts it."""
    local = tmp_path / "big.tif"
    local.write_bytes(np.random.default_rng(2).bytes(6 * MIB))
    key = f"kill/{sig.name}.tif"
    started = threading.Event()

    def slow_second_part(method: str, path: str):
        if method == "PUT" and "partNumber=2" in path and key in path:
            started.set()
            return 1.0
        return None

    s3.faults.append(slow_second_part)
    proc = subprocess.Popen([sys.executable, "-c", _UPLOADER, str(local),
                             f"s3://{BUCKET}/{key}"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stderr=subprocess.PIPE, text=True)
    try:
        assert started.wait(30), "the upload never reached part 2"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        s3.faults.clear()
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), err
    time.sleep(1.2)  # the slowed part reaches the server after the kill
    assert not _exists(s3, key)
    assert len(_pending(s3, key)) == (0 if sig == signal.SIGTERM else 1)
    upload_atomic(local, f"s3://{BUCKET}/{key}", part_size=5 * MIB)
    assert _exists(s3, key) and _pending(s3, key) == []
    assert SECRET not in err


def test_upscale_s3_to_s3_equals_local(s3, tmp_path: Path) -> None:
    s3.client.upload_file(str(LANDSAT), BUCKET, "e2e/in.tif")
    local_out = tmp_path / "local.tif"
    assert main(["upscale", str(LANDSAT), str(local_out), "--scale", "2", *TINY]) == 0
    url = f"s3://{BUCKET}/e2e/out.tif"
    assert main(["upscale", f"s3://{BUCKET}/e2e/in.tif", url, "--scale", "2", "--stac-item",
                 *TINY]) == 0
    fetched = tmp_path / "fetched.tif"
    fetched.write_bytes(s3.direct.get_object(Bucket=BUCKET, Key="e2e/out.tif")["Body"].read())
    with rasterio.open(fetched) as got, rasterio.open(local_out) as ref:
        np.testing.assert_array_equal(got.read(), ref.read())
        np.testing.assert_array_equal(got.read_masks(), ref.read_masks())
        assert got.profile == ref.profile and got.descriptions == ref.descriptions
        tags, ref_tags = got.tags(), ref.tags()
    assert tags.pop("ZSSR_SOURCE") == f"s3://{BUCKET}/e2e/in.tif"  # the URL, not /vsis3/
    assert ref_tags.pop("ZSSR_SOURCE") == str(LANDSAT)
    assert tags == ref_tags  # config, its hash, scale, kernel, software: the same
    item = json.loads(s3.direct.get_object(Bucket=BUCKET, Key="e2e/out.tif.stac-item.json")[
        "Body"].read())
    assert [link["href"] for link in item["links"] if link["rel"] == "derived_from"] == [
        f"s3://{BUCKET}/e2e/in.tif"]
    assert item["assets"]["data"]["href"] == "out.tif"
    assert _pending(s3, "e2e/out.tif") == []
    assert main(["upscale", f"s3://{BUCKET}/e2e/in.tif", url, "--scale", "2", *TINY]) == 7
    check_remote_output(url, overwrite=True)  # ours: --overwrite may replace it
