"""The per-process cache of whole-file inputs by URL (:mod:`io_adapters.fetch_cache`, issue 17),
against the real moto server of tests/test_s3.py (its ``s3`` fixture; the relay in front of
it counts the requests, ``s3.requests``: ``(method, path, range, bytes)``).

* The same ``s3://`` PNG, DICOM file and DICOM series opened three times (and by threads
  at once) are downloaded once (one GET each at the relay) and read the same pixels as
  the local files; a reader's copy is its own (removed on close), the cached files are
  read-only in a 0700 folder.
* An object replaced under the same key, even by one of the same size within the same
  second (only the ETag differs), is fetched again and the new pixels are read; a reader
  still open on the old version keeps reading it.  One replaced while it is copied is read
  but not kept under the identity it no longer has.
* ``ZSSR_FETCH_CACHE_BYTES``: a limit that holds one input evicts the least recently used
  unreferenced one (never one a reader holds); an input over the limit is read through a
  private copy each time; ``0`` disables the cache: one GET per open, no cache folder.
* A subprocess that used the cache leaves nothing in its ``TMPDIR`` after it exits.
* ``zssr run`` of an ``s3://`` PNG with one tile per infer batch GETs the object once (one
  process), where the uncached run GETs it once per task; the outputs are the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DATA
from PIL import Image
from test_s3 import BUCKET, ROOT, s3  # noqa: F401 - the server fixture

from io_adapters import fetch, fetch_cache
from io_adapters.detect import open_reader
from pipeline.cli.main import main

PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
DICOM = DATA / "dicom" / "MR_small.dcm"
SERIES = DATA / "dicom" / "series"
TINY = ["--set", "train.max_iters=3", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16",
        "--tile", "32", "--torch-threads", "1", "--seed", "0", "--scale", "2", "-q"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch):
    """A fresh process cache, its folder under ``tmp_path/cachetmp``; the default limit."""
    parent = tmp_path / "cachetmp"
    parent.mkdir()
    fresh = fetch_cache.FetchCache(parent)
    monkeypatch.setattr(fetch_cache, "_CACHE", fresh)
    monkeypatch.delenv(fetch_cache.CACHE_ENV, raising=False)
    yield fresh
    fresh.close()
    assert list(parent.iterdir()) == []


def _put(s3, local: Path | bytes, key: str) -> str:  # noqa: F811
    if isinstance(local, bytes):
        s3.client.put_object(Bucket=BUCKET, Key=key, Body=local)
    elif local.is_dir():
        for f in sorted(local.iterdir()):
            s3.client.upload_file(str(f), BUCKET, f"{key}/{f.name}")
    else:
        s3.client.upload_file(str(local), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def _gets(s3, key: str) -> int:  # noqa: F811
    """GETs of the object ``key`` (or of the objects under the prefix ``key/``)."""
    return sum(1 for method, path, _, _ in s3.requests
               if method == "GET" and (path.split("?")[0] == f"/{BUCKET}/{key}"
                                       or path.split("?")[0].startswith(f"/{BUCKET}/{key}/")))


def _pixels(source: str | Path) -> np.ndarray:
    """Every frame (a series: every slice)."""
    with open_reader(source) as reader:
        return np.stack([reader.read(frame=i) for i in range(reader.meta.frames)])


def _bmp(flip: bool) -> bytes:
    """The butterfly as a BMP (uncompressed: the flipped one has the same size)."""
    import io

    image = Image.open(PNG).convert("RGB")
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = io.BytesIO()
    image.save(out, format="BMP")
    return out.getvalue()


@pytest.mark.parametrize("kind", ["png", "dcm", "series"])
def test_opened_three_times_downloaded_once(s3, cache, kind: str) -> None:  # noqa: F811
    local = {"png": PNG, "dcm": DICOM, "series": SERIES}[kind]
    key = f"cache/once/{kind}" + ("" if kind == "series" else f".{kind}")
    url = _put(s3, local, key)
    objects = len(list(SERIES.iterdir())) if kind == "series" else 1
    expected = _pixels(local)
    s3.requests = []
    readers = []
    for _ in range(3):
        reader = open_reader(url)
        readers.append(reader)
        np.testing.assert_array_equal(
            np.stack([reader.read(frame=i) for i in range(reader.meta.frames)]), expected)
        if kind == "dcm":
            assert reader.meta.medical.sources == (url,)
    copies = {r._folder for r in readers}
    assert len(copies) == 3  # each reader its own folder (hard links to the cache's files)
    for r in readers:
        r.close()
    assert not any(folder.exists() for folder in copies)
    np.testing.assert_array_equal(_pixels(url), expected)  # closed: still cached
    assert _gets(s3, key) == objects, s3.requests
    assert cache.fetches == 1 and cache.used == sum(
        f.stat().st_size for f in ([local] if local.is_file() else local.iterdir()))
    root = cache.root()
    assert root.parent == cache.parent and (root.stat().st_mode & 0o777) == 0o700
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == objects and all((p.stat().st_mode & 0o777) == 0o400 for p in files)

    key2 = key.replace("once/", "once/threads-")  # readers at once share one download
    url2 = _put(s3, local, key2)
    s3.requests = []
    got, errors = [], []

    def one() -> None:
        try:
            got.append(_pixels(url2))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(got) == 4
    for pixels in got:
        np.testing.assert_array_equal(pixels, expected)
    assert _gets(s3, key2) == objects, s3.requests


def test_replaced_object_fetched_again(s3, cache, tmp_path: Path) -> None:  # noqa: F811
    old, new = _bmp(False), _bmp(True)
    assert len(old) == len(new) and old != new  # only the ETag tells them apart
    url = _put(s3, old, "cache/replaced.bmp")
    s3.requests = []
    held = open_reader(url)
    before = held.read()
    np.testing.assert_array_equal(before, _pixels(PNG)[0])
    _put(s3, new, "cache/replaced.bmp")
    after = _pixels(url)[0]
    np.testing.assert_array_equal(after, before[:, :, ::-1])  # the new pixels
    np.testing.assert_array_equal(held.read(), before)  # an open reader keeps its version
    held.close()
    np.testing.assert_array_equal(_pixels(url)[0], after)  # and now from the cache
    assert _gets(s3, "cache/replaced.bmp") == 2, s3.requests
    assert cache.fetches == 2 and cache.used == len(new)  # the old version is dropped

    series = _put(s3, SERIES, "cache/series")  # a slice replaced under a series prefix
    first = _pixels(series)
    names = sorted(p.name for p in SERIES.iterdir())
    ds = pydicom.dcmread(SERIES / names[1])
    pixels = ds.pixel_array
    ds.PixelData = (pixels.max() - pixels).astype(pixels.dtype).tobytes()
    ds.save_as(tmp_path / "inverted.dcm")
    s3.client.upload_file(str(tmp_path / "inverted.dcm"), BUCKET, f"cache/series/{names[1]}")
    second = _pixels(series)
    np.testing.assert_array_equal(second, _pixels(series))
    assert not np.array_equal(first, second)
    assert cache.fetches == 4


def test_replaced_while_read_is_not_kept(s3, cache, monkeypatch) -> None:  # noqa: F811
    """Replaced between our HEAD and the copy: read (privately) but not cached under the
    identity it does not have."""
    old, new = _bmp(False), _bmp(True)
    url = _put(s3, old, "cache/racing.bmp")
    real_copy, calls = fetch._copy, []

    def racing_copy(*args, **kwargs):
        if not calls:
            _put(s3, new, "cache/racing.bmp")
        calls.append(1)
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(fetch, "_copy", racing_copy)
    flipped = _pixels(PNG)[0][:, :, ::-1]
    np.testing.assert_array_equal(_pixels(url)[0], flipped)
    assert len(calls) == 2 and cache.fetches == 0 and cache.used == 0
    np.testing.assert_array_equal(_pixels(url)[0], flipped)  # its own identity now: cached
    assert cache.fetches == 1 and cache.used == len(new)


def test_byte_limit_evicts_and_zero_disables(s3, cache, monkeypatch) -> None:  # noqa: F811
    png, dcm = _put(s3, PNG, "cache/limit.png"), _put(s3, DICOM, "cache/limit.dcm")
    sizes = PNG.stat().st_size, DICOM.stat().st_size
    monkeypatch.setenv(fetch_cache.CACHE_ENV, str(max(sizes) + 1))  # one of them at a time
    s3.requests = []
    _pixels(png)
    _pixels(dcm)  # evicts the PNG (least recently used, unreferenced)
    assert cache.used == sizes[1]
    _pixels(png)  # fetched again, evicts the DICOM
    assert _gets(s3, "cache/limit.png") == 2 and cache.used == sizes[0]
    with open_reader(png) as held:  # a held entry is never evicted: the DICOM goes private
        assert _gets(s3, "cache/limit.png") == 2
        for _ in range(2):
            np.testing.assert_array_equal(_pixels(dcm), _pixels(DICOM))
        assert held.read().shape == _pixels(PNG)[0].shape
    assert _gets(s3, "cache/limit.dcm") == 3 and cache.used == sizes[0]
    monkeypatch.setenv(fetch_cache.CACHE_ENV, str(min(sizes) - 1))  # fits none: private copies
    s3.requests = []
    for _ in range(2):
        _pixels(png)
    assert _gets(s3, "cache/limit.png") == 2 and cache.used <= min(sizes) - 1
    cache.close()

    monkeypatch.setenv(fetch_cache.CACHE_ENV, "0")  # disabled: today's behaviour
    s3.requests = []
    for _ in range(3):
        np.testing.assert_array_equal(_pixels(png), _pixels(PNG))
    assert _gets(s3, "cache/limit.png") == 3 and cache.fetches == 3
    assert list(cache.parent.iterdir()) == []  # no cache folder made


def test_cache_folder_gone_after_the_process_exits(s3, tmp_path: Path) -> None:  # noqa: F811
    url = _put(s3, PNG, "cache/subprocess.png")
    tmpdir = tmp_path / "sub"
    tmpdir.mkdir()
    script = (
        "import sys\n"
        "from io_adapters import fetch_cache\n"
        "from io_adapters.detect import open_reader\n"
        "for _ in range(2):\n"
        "    with open_reader(sys.argv[1]) as reader:\n"
        "        reader.read()\n"
        "c = fetch_cache.fetch_cache()\n"
        "root = c.root()\n"
        "print(root, c.fetches, len([p for p in root.rglob('*') if p.is_file()]))\n")
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    env.pop(fetch_cache.CACHE_ENV, None)
    done = subprocess.run([sys.executable, "-c", script, url], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    root, fetches, files = done.stdout.split()
    assert Path(root).parent == tmpdir and (fetches, files) == ("1", "1")
    assert not Path(root).exists()
    assert [p for p in tmpdir.iterdir() if not p.name.startswith("torchinductor")] == []


def test_run_gets_the_object_once(s3, cache, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    url = _put(s3, PNG, "cache/run/butterfly.png")
    run = ["--scheduler", "synchronous", "--batch-tiles", "1", *TINY]
    monkeypatch.setenv(fetch_cache.CACHE_ENV, "0")
    s3.requests = []
    assert main(["run", url, "--out", str(tmp_path / "uncached"), *run]) == 0
    uncached = _gets(s3, "cache/run/butterfly.png")
    uncached_requests, uncached_bytes = len(s3.requests), sum(r[3] for r in s3.requests)
    monkeypatch.delenv(fetch_cache.CACHE_ENV)
    s3.requests = []
    assert main(["run", url, "--out", str(tmp_path / "cached"), *run]) == 0
    cached = _gets(s3, "cache/run/butterfly.png")
    assert uncached >= 4 and cached == 1, (uncached, cached, s3.requests)
    assert len(s3.requests) < uncached_requests
    name = "butterfly_x2.png"
    assert (tmp_path / "cached" / "outputs" / name).read_bytes() == (
        tmp_path / "uncached" / "outputs" / name).read_bytes()
    print(f"\nrun: uncached {uncached} GETs, {uncached_requests} requests, {uncached_bytes} "
          f"bytes; cached {cached} GET, {len(s3.requests)} requests, "
          f"{sum(r[3] for r in s3.requests)} bytes")
