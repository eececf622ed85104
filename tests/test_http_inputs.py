"""Inputs by ``http(s)://`` URL (issue 17, item 1) from a real HTTP server on loopback.

A ``ThreadingHTTPServer`` started here serves copies of tests/data files; nothing in
the clients (GDAL's ``/vsicurl/`` for the GeoTIFF, fsspec's HTTP file system for the
DICOM and the PNG) is mocked.  ``zssr upscale URL OUT`` and ``zssr run URL... --out DIR``
give the pixels of the same commands on the local files; a missing URL is one line
naming it, exit 3 (upscale) or a failed image (run, exit 1).  ``gs://`` and ``az://``
have no emulator here and are not tested.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from _run_helpers import pixels
from conftest import DATA

from pipeline.cli.main import main
from pipeline.errors import EXIT

FILES = (DATA / "io" / "plain" / "butterfly_48x64.png", DATA / "dicom" / "CT_small.dcm",
         DATA / "io" / "geotiff" / "landsat_64x80.tif")
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16",
        "--tile", "32", "--scale", "2", "-q"]


class _Ranged(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=a-b`` answered 206, as object stores and CDNs do
    (GDAL reads a GeoTIFF by ranges)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        first, _, last = spec[len("bytes="):].partition("-")
        start, stop = int(first or 0), min(int(last) + 1 if last else len(data), len(data))
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[start:stop])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    for f in FILES:
        shutil.copy(f, root / f.name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Ranged, directory=root))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.mark.parametrize("src", FILES, ids=lambda p: p.suffix)
def test_upscale_by_http_equals_local(server, src: Path, tmp_path: Path) -> None:
    out = tmp_path / f"local{src.suffix}"
    assert main(["upscale", str(src), str(out), *TINY]) == 0
    assert main(["upscale", f"{server}/{src.name}", str(tmp_path / f"url{src.suffix}"),
                 *TINY]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / f"url{src.suffix}"), pixels(out))


def test_missing_url_is_one_line(server, tmp_path: Path, capsys) -> None:
    url = f"{server}/nothing.png"
    assert main(["upscale", url, str(tmp_path / "o.png"), *TINY]) == EXIT["input"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0], err
    assert not (tmp_path / "o.png").exists()


def test_run_by_http_equals_local(server, tmp_path: Path) -> None:
    run = ["--scheduler", "synchronous", "--torch-threads", "1", *TINY]
    assert main(["run", *map(str, FILES), "--out", str(tmp_path / "local"), *run]) == 0
    urls = [f"{server}/{f.name}" for f in FILES]
    assert main(["run", *urls, f"{server}/nothing.dcm", "--out", str(tmp_path / "url"),
                 *run]) == EXIT["batch"]
    failed = [e for e in json.loads((tmp_path / "url" / "report.json").read_text())["images"]
              if e["state"] == "failed"]
    assert [e["input"] for e in failed] == [f"{server}/nothing.dcm"]
    assert f"{server}/nothing.dcm" in failed[0]["error"]
    for f in FILES:
        name = f"{f.stem}_x2{f.suffix}"
        np.testing.assert_array_equal(pixels(tmp_path / "url" / "outputs" / name),
                                      pixels(tmp_path / "local" / "outputs" / name))
