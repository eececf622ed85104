"""The bad-input corpus through the real CLI (``tests/corpus/make_corpus.py``).

For every case: the exit code of its error class (``pipeline.errors.EXIT``),
exactly one ``zssr <cmd>: error: ...`` line naming the file and the problem
and no traceback (without ``-v``), no partial output left in the output
folder, the inputs' bytes unchanged, and a bounded run time.  Cases marked
``expect == "ok"`` must succeed and leave exactly their output.

The same bad inputs also run inside a ``zssr run`` batch of good files: the
good ones complete, the exit code is 1 and the manifest names the bad one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))
from check import Outcome, run_batch, run_case  # noqa: E402
from make_corpus import TINY, Case, build_corpus  # noqa: E402

from pipeline.errors import EXIT  # noqa: E402

CASE_TIMEOUT = 60.0  # seconds; most cases take well under one
REQUIRED = (  # the scenarios the issue names, by case-name prefix
    "missing_file", "kernel_is_folder", "zero_byte_", "text_as_tif", "text_as_dcm",
    "text_as_png", "png_cut_", "tif_cut_", "dcm_cut_", "tif_header_1e6x1e6", "complex_",
    "bool_", "all_nodata_tif", "float_nan_inf_tif", "image_1x1", "image_3x3",
    "smaller_than_crop", "dcm_no_pixel_data", "dcm_unsupported_syntax", "dcm_corrupt_rle",
    "series_mixed_sizes", "series_missing_slice", "kernel_3d", "kernel_zeros", "kernel_nan",
    "kernel_mat_wrong_name", "cfg_unknown_key", "cfg_wrong_type", "scale_zero",
    "scale_negative", "tile_huge", "out_not_writable", "out_equals_input")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Case]:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "cases", seed=0)


def problems(o: Outcome) -> list[str]:
    """Everything wrong with one outcome (empty: the case passed)."""
    c, bad = o.case, []
    if o.code != EXIT[c.expect]:
        bad.append(f"exit {o.code}, expected {EXIT[c.expect]} ({c.expect})")
    if any("Traceback" in line for line in o.stderr):
        bad.append("traceback on stderr")
    if c.expect == "ok":
        if o.stderr:
            bad.append(f"stderr not empty: {o.stderr[:3]}")
        if o.missing_outputs:
            bad.append(f"missing outputs {o.missing_outputs}")
    else:
        if len(o.stderr) != 1 or len(o.error_lines) != 1:
            bad.append(f"expected exactly one error line, got {o.stderr[:5]}")
        elif not re.search(c.message, o.error_lines[0].split(": error: ", 1)[1]):
            bad.append(f"message {o.error_lines[0]!r} does not match {c.message!r}")
    if o.leftovers:
        bad.append(f"left in the output folder: {o.leftovers}")
    if o.changed_inputs:
        bad.append(f"inputs changed: {o.changed_inputs}")
    if o.lost_outputs:
        bad.append(f"earlier outputs changed or removed: {o.lost_outputs}")
    if o.seconds > CASE_TIMEOUT / 2:
        bad.append(f"took {o.seconds:.1f} s")
    return bad


def _run_all(cases: list[Case]) -> dict[str, list[str]]:
    failures = {}
    for case in cases:
        bad = problems(run_case(case, timeout=CASE_TIMEOUT))
        if bad:
            failures[case.name] = bad
    return failures


def test_corpus_covers_the_issue(corpus):
    assert len(corpus) >= 40
    names = [c.name for c in corpus]
    missing = [p for p in REQUIRED if not any(n.startswith(p) for n in names)]
    assert not missing
    assert len({c.expect for c in corpus}) >= 8  # every error class is exercised
    for c in corpus:
        assert c.expect in EXIT
        assert c.expect == "ok" or c.message


def _digests(root: Path) -> dict[str, str]:
    import hashlib
    import stat

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not stat.S_ISFIFO(p.stat().st_mode)
            and p.suffix != ".mat"}  # MATLAB headers carry the creation time


def test_corpus_is_seeded(tmp_path):
    a = build_corpus(tmp_path / "a", seed=3)
    b = build_corpus(tmp_path / "b", seed=3)
    assert [c.name for c in a] == [c.name for c in b]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_corpus_error_cases(corpus):
    """Every bad case: its class's exit code, one clear line, nothing lost or changed."""
    failures = _run_all([c for c in corpus if c.expect != "ok"])
    assert not failures, json.dumps(failures, indent=1)


def test_corpus_success_cases(corpus):
    """Borderline inputs that must work: 3 x 3, smaller than a crop, NaN/inf, constant."""
    failures = _run_all([c for c in corpus if c.expect == "ok"])
    assert not failures, json.dumps(failures, indent=1)


def test_nan_and_inf_become_nan_in_the_output(corpus):
    import rasterio

    case = next(c for c in corpus if c.name == "float_nan_inf_tif")
    out = case.out_dir / case.outputs[0]
    if not out.exists():
        assert problems(run_case(case, timeout=CASE_TIMEOUT)) == []
    with rasterio.open(out) as ds:
        sr = ds.read(1)
    assert sr.shape == (48, 48)
    for r, c in ((3, 4), (10, 10), (20, 2)):  # the input's NaN, +inf, -inf pixels
        assert np.isnan(sr[2 * r:2 * r + 2, 2 * c:2 * c + 2]).all()
    assert np.isfinite(sr).mean() > 0.9
    assert np.nanmin(sr) > 0 and np.nanmax(sr) < 1000  # no inf leaked into the values


def test_verbose_adds_the_traceback(corpus, capsys):
    case = next(c for c in corpus if c.name == "png_cut_200")
    o = run_case(case, timeout=CASE_TIMEOUT, extra=("-v",))
    assert o.code == EXIT["corrupt"]
    assert any("Traceback" in line for line in o.stderr)
    assert o.error_lines and re.search(case.message, o.error_lines[-1])


def test_exit_code_through_a_real_process(corpus):
    case = next(c for c in corpus if c.name == "text_as_tif")
    o = run_case(case, subprocess=True, timeout=CASE_TIMEOUT)
    assert problems(o) == []


SUBPROCESS_CASES = ("missing_file", "fifo_as_png", "png_cut_200", "tif_cut_8", "image_1x1",
                    "kernel_zeros", "cfg_unknown_key", "out_exists", "dcm_corrupt_rle",
                    "tif_header_1e6x1e6", "device_unknown")


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_case_through_a_real_process(corpus, name):
    """Exit status as a shell sees it, and stderr is exactly the one line (no GDAL chatter)."""
    case = next(c for c in corpus if c.name == name)
    assert problems(run_case(case, subprocess=True, timeout=CASE_TIMEOUT)) == []


# -- the same bad inputs inside a ``zssr run`` batch ---------------------------------------


def test_bad_inputs_inside_a_batch(corpus, tmp_path):
    """One ``zssr run`` over two good PNGs and every bad input: the good ones complete,
    exit 1, the manifest records each bad input as failed, nothing partial, inputs unchanged."""
    b = run_batch(corpus, tmp_path, tiny=TINY)
    assert b.code == EXIT["batch"]
    assert len(b.bad) >= 40
    not_recorded = [str(p) for p in b.bad if not any(str(p) in k for k in b.failed)]
    assert not not_recorded
    assert b.good_completed == len(b.good)
    assert [n[:5] for n in b.outputs] == ["good0", "good1"], b.outputs  # no partials
    assert not b.changed_inputs
