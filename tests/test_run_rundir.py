"""The run directory: lock, manifest, keys, weights, tile markers, structured log."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA

from pipeline.errors import LockedError, exit_code
from pipeline.runs.driver import JsonLinesHandler, RunDir
from pipeline.runs.identity import image_key, input_identity
from pipeline.runs.rundir import RunPaths
from pipeline.runs.weights import load_weights, save_weights
from pipeline.source import SampleStats
from zssr.normalize import Normalizer
from zssr.train import TrainingHistory


def test_second_run_on_the_same_dir_is_refused(tmp_path: Path):
    with RunDir(tmp_path / "run") as rd:
        with pytest.raises(LockedError, match=r"another zssr run is using .* \(pid \d+"), \
                RunDir(tmp_path / "run"):
            pass
        assert rd.root.is_dir()
    with RunDir(tmp_path / "run"):  # released on exit
        pass
    assert exit_code(LockedError("x")) == 9


def test_manifest_appends_and_skips_a_torn_line(tmp_path: Path):
    with RunDir(tmp_path) as rd:
        rd.record("a-1", "queued", input="a.png")
        rd.record("a-1", "trained", step=0)
        rd.record("b-2", "failed", error_class="CorruptFileError", error="bad")
        with open(tmp_path / "manifest.jsonl", "a") as fh:
            fh.write('{"key": "c-3", "sta')  # a crash mid-line
        last = rd.last_states()
        assert last["a-1"]["state"] == "trained" and last["b-2"]["error"] == "bad"
        assert "c-3" not in last
        with pytest.raises(ValueError, match="state 'done' unknown"):
            rd.record("a-1", "done")


def test_output_owner_is_the_last_finalizing_key(tmp_path: Path):
    with RunDir(tmp_path) as rd:
        out = str(tmp_path / "outputs" / "x_x2.png")
        assert rd.output_owners() == {}
        rd.record("x-1", "finalized", output=out)
        rd.record("x-2", "finalized", output=out)
        rd.record("y-1", "failed", output="elsewhere")
        assert rd.output_owners() == {out: "x-2"}


def test_key_changes_with_config_scale_and_content(tmp_path: Path):
    img = tmp_path / "a.png"
    img.write_bytes((DATA / "io" / "plain" / "bridge_40x48.png").read_bytes())
    ident = input_identity(img)
    base = {"config": {"train": {"max_iters": 5}}, "scale": 2.0}
    k = image_key("a", ident, base)
    assert k.startswith("a-") and k == image_key("a", input_identity(img), dict(base))
    assert image_key("a", ident, {**base, "scale": 3.0}) != k
    assert image_key("a", ident, {**base, "config": {"train": {"max_iters": 6}}}) != k
    img.write_bytes(img.read_bytes() + b"\0")
    assert image_key("a", input_identity(img), base) != k
    assert "listing" in input_identity(DATA / "dicom" / "series")
    assert image_key("we ird/name", ident, base).startswith("we_ird_name-")


def test_weights_round_trip_with_weights_only(tmp_path: Path):
    state = {"body.0.weight": torch.randn(4, 3, 3, 3)}
    norm = Normalizer(np.dtype("uint16"), (0.0,), (65535.0,), (0.0,), (65535.0,))
    stats = SampleStats(norm, (0.25,), 0.5)
    hist = TrainingHistory(iterations=3, losses=[0.3, 0.2, 0.1], stop_reason="max_iters")
    path = tmp_path / "w" / "k_s0.pt"
    save_weights(path, state, stats, hist, 1.5)
    s2, st2, h2, sec = load_weights(path)
    assert torch.equal(s2["body.0.weight"], state["body.0.weight"])
    assert st2 == stats and h2.losses == hist.losses and sec == 1.5
    assert not list(path.parent.glob(".*"))  # no temporary left
    torch.save({"format": 99}, path)
    with pytest.raises(ValueError, match="unknown weights format 99"):
        load_weights(path)


def test_tile_markers_and_clear_work(tmp_path: Path):
    paths = RunPaths(tmp_path)
    assert paths.done_tiles("k", 0) == set()
    paths.mark_tile("k", 0, 0, 3)
    paths.mark_tile("k", 0, 2, 11)
    assert paths.done_tiles("k", 0) == {(0, 3), (2, 11)}
    assert not [p for p in paths.tiles("k", 0).iterdir() if p.name.startswith(".")]
    paths.weights("k", 0).parent.mkdir(parents=True)
    paths.weights("k", 0).write_bytes(b"w")
    paths.clear_work("k")
    assert paths.done_tiles("k", 0) == set() and not paths.weights("k", 0).exists()


def test_json_lines_handler_and_events(tmp_path: Path):
    logger = logging.getLogger("pipeline.test_rundir")
    handler = JsonLinesHandler(tmp_path / "log.jsonl")
    logger.addHandler(handler)
    try:
        logger.warning("tile %d slow", 7, extra={"image": "a-1"})
        with RunDir(tmp_path) as rd:
            rd.event("image finalized", image="a-1", output="x.png")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[0]["message"] == "tile 7 slow" and lines[0]["image"] == "a-1"
    assert lines[0]["level"] == "WARNING"
    assert lines[-1]["message"] == "image finalized" and lines[-1]["output"] == "x.png"
    assert len(lines) == 2


def test_unwritable_run_dir(tmp_path: Path):
    from io_adapters.errors import WriteError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="cannot create the run directory"), \
            RunDir(blocker / "run"):
        pass
    assert os.path.exists(blocker)
