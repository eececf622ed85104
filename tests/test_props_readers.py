"""Reader robustness: random byte mutations of real small files.

Each example flips, inserts, deletes or overwrites a few bytes of a real
file (or truncates it), opens the result with
:func:`io_adapters.detect.open_reader` and reads it (every frame, pixels and
masks; a bounded window when a damaged header declares a huge raster).  The
only acceptable outcomes are success or one of our own errors
(:class:`io_adapters.errors.IOAdapterError` subclasses): never another
exception, a crash or a hang (``SIGALRM`` guard per example).  Examples are
derandomised, so every run tries the same mutations.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from io_adapters.detect import open_reader
from io_adapters.errors import IOAdapterError

# damaged inputs make pydicom warn (non-conformant RLE padding ...): expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA = Path(__file__).resolve().parent / "data"
SOURCES = {
    "png_gray": DATA / "io" / "plain" / "bridge_40x48.png",
    "png_rgba": DATA / "io" / "plain" / "bird_rgba_48x64.png",
    "png_16bit": DATA / "io" / "plain" / "butterfly16_48x64.png",
    "tif_strips": DATA / "io" / "geotiff" / "rgb_byte_96x128.tif",
    "tif_deflate_tiles": DATA / "io" / "geotiff" / "landsat_64x80.tif",
    "dcm_native": DATA / "dicom" / "CT_small.dcm",
    "dcm_rle": DATA / "dicom" / "MR_small_RLE.dcm",
    "dcm_jpegls": DATA / "dicom" / "JPEGLSNearLossless_08.dcm",
}
EXAMPLE_SECONDS = 5
FULL_READ_PIXELS = 1 << 22  # read whole frames up to this size, else two corner windows

# one edit: (kind, position as a fraction of the length, byte value, run length)
EDIT = st.tuples(st.sampled_from(["flip", "insert", "delete", "overwrite", "truncate"]),
                 st.floats(0.0, 1.0, allow_nan=False), st.integers(0, 255),
                 st.integers(1, 16))


def mutate(data: bytes, edits: list[tuple[str, float, int, int]]) -> bytes:
    """Apply ``edits`` in order; positions are fractions of the current length."""
    buf = bytearray(data)
    for kind, where, value, run in edits:
        pos = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if kind == "truncate":
            del buf[pos:]
        elif kind == "flip" and buf:
            buf[pos] ^= 1 << (value % 8)
        elif kind == "insert":
            buf[pos:pos] = bytes([value]) * run
        elif kind == "delete":
            del buf[pos:pos + run]
        elif kind == "overwrite":
            buf[pos:pos + run] = bytes([value]) * min(run, len(buf) - pos)
    return bytes(buf)


def read_fully(path: Path) -> None:
    """Open ``path`` and read every frame's pixels and masks (bounded for huge headers)."""
    with open_reader(path) as reader:
        meta = reader.meta
        if meta.rows * meta.cols <= FULL_READ_PIXELS:
            windows = [None]
        else:
            windows = [Window(0, 0, 256, 256),
                       Window(max(meta.cols - 256, 0), max(meta.rows - 256, 0), 256, 256)]
        for frame in range(min(meta.frames, 4)):
            for window in windows:
                pixels = reader.read(window, frame=frame)
                masks = reader.read_masks(window, frame=frame)
                assert pixels.ndim == 3 and masks.shape == pixels.shape
                assert masks.dtype == np.dtype(bool)


class ExampleTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise ExampleTimeout(f"reading took more than {EXAMPLE_SECONDS} s")


def check_mutant(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory(prefix="zssr-mutant-") as tmp:
        path = Path(tmp) / f"mutant{suffix}"
        path.write_bytes(data)
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(EXAMPLE_SECONDS)
        try:
            read_fully(path)
        except IOAdapterError:
            pass  # our own error: the CLI maps it to its exit code
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_unmutated_sources_read(name):
    read_fully(SOURCES[name])


@pytest.mark.parametrize("name", sorted(SOURCES))
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(edits=st.lists(EDIT, min_size=1, max_size=4))
def test_mutated_file_gives_our_error_or_success(name, edits):
    src = SOURCES[name]
    check_mutant(mutate(src.read_bytes(), edits), src.suffix)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_truncation_point_of_the_header(name):
    """Cut inside the first 400 bytes (every 7th) and near the end: the headers'
    trickiest places, tried exhaustively rather than by chance."""
    data = SOURCES[name].read_bytes()
    cuts = [*range(0, min(len(data), 400), 7), *range(max(len(data) - 64, 0), len(data), 5)]
    for cut in cuts:
        check_mutant(data[:cut], SOURCES[name].suffix)


def test_mutate_is_deterministic_and_edits_bytes():
    data = bytes(range(64))
    assert mutate(data, [("truncate", 0.5, 0, 1)]) == data[:32]
    assert mutate(data, [("flip", 0.0, 0, 1)])[0] == 1
    assert len(mutate(data, [("insert", 0.5, 7, 3)])) == 67
    assert len(mutate(data, [("delete", 0.5, 7, 3)])) == 61
    assert mutate(data, [("overwrite", 1.0, 9, 16)])[-1] == 9
