"""The one output rule (io_adapters/output_safety.py), through the real CLI.

Each class of unsafe write found by the adversarial pass (issue 20), with several
variants: ``--overwrite`` onto an input or a folder around it, side outputs onto
inputs, batch templates onto inputs or control files, generations of outputs
taken as inputs, and writes through links.  Every test hashes the trees before
and after (no input byte changed, nothing outside the output folder, no link
target touched) and checks the exit code and the one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from io_adapters import safe_files
from pipeline.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))
from adv_check import snapshot as tree  # noqa: E402  (links not followed; content + mtime)

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "tests" / "data" / "dicom" / "series"
TINY = ["--set", "train.max_iters=3", "--set", "net.depth=3", "--set", "net.width=8",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16"]
SYNC = ["--scheduler", "synchronous"]


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def zssr(capsys, *argv: str | Path) -> tuple[int, list[str]]:
    """Run the CLI in-process; ``(exit code, stderr lines)``."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def refused(capsys, code: int, *argv: str | Path, naming: str | Path, problem: str) -> None:
    got, err = zssr(capsys, *argv)
    assert got == code, err
    assert len(err) == 1, err
    assert str(naming) in err[0] and problem in err[0], err[0]


@pytest.fixture
def sentinel(tmp_path: Path):
    """A file and a folder outside every output folder; links point at them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious.png"
    target.write_bytes(b"do not touch")
    os.utime(target, (1_000_000_000, 1_000_000_000))
    (outside / "folder").mkdir()
    (outside / "folder" / "keep.txt").write_text("keep")

    def untouched() -> None:
        st = target.stat()
        assert target.read_bytes() == b"do not touch"
        assert st.st_mtime == 1_000_000_000
        assert sorted(p.name for p in outside.iterdir()) == ["folder", "precious.png"]
        assert [p.name for p in (outside / "folder").iterdir()] == ["keep.txt"]

    return target, outside / "folder", untouched


# ----------------------------------------------------------------------------- --overwrite


def test_overwrite_never_removes_an_input_or_a_folder_around_it(tmp_path, capsys, monkeypatch):
    study = tmp_path / "study"
    shutil.copytree(SERIES, study / "series1")
    _png(study / "neighbour.png")
    _png(study / "plain" / "a.png", seed=1)
    before = tree(tmp_path)
    # the output is the folder holding the input (and its neighbours)
    refused(capsys, 7, "upscale", study / "series1", study, "--scale", "2", "--overwrite",
            *TINY, naming=study, problem="folder holding the input")
    # the working folder, given as "."
    monkeypatch.chdir(study / "plain")
    refused(capsys, 7, "upscale", "a.png", ".", "--scale", "2", "--overwrite", *TINY,
            naming=study / "plain", problem="folder holding the input")
    # the input itself, and a path inside an input folder
    refused(capsys, 7, "upscale", "a.png", "a.png", "--scale", "2", "--overwrite", *TINY,
            naming="a.png", problem="equals the input")
    refused(capsys, 7, "upscale", study / "series1", study / "series1" / "IM_a.dcm", "--scale",
            "2", "--overwrite", *TINY, naming="IM_a.dcm", problem="lies inside the input")
    assert tree(tmp_path) == before


def test_overwrite_never_touches_a_zarr_around_or_inside_an_input(tmp_path, capsys):
    from io_adapters.base import full_window
    from io_adapters.detect import open_reader
    from io_adapters.zarr_store import ZarrWriter

    src = _png(tmp_path / "a.png")
    outer = tmp_path / "outer.zarr"
    for store in (outer, outer / "inner.zarr"):
        with open_reader(src) as reader, ZarrWriter(store, reader.meta, chunks=(8, 8)) as w:
            w.write(reader.read(), full_window(reader.meta))
    before = tree(tmp_path)
    refused(capsys, 7, "upscale", outer / "inner.zarr", outer, "--scale", "2", "--overwrite",
            *TINY, naming=outer, problem="folder holding the input")
    refused(capsys, 7, "upscale", outer, outer / "inner.zarr", "--scale", "2", "--overwrite",
            *TINY, naming=outer / "inner.zarr", problem="inside the input")
    assert tree(tmp_path) == before


def test_overwrite_replaces_only_outputs_zssr_wrote(tmp_path, capsys):
    src = _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.png").write_text("my notes, not a PNG")
    (out / "series").mkdir()
    (out / "series" / "thesis.txt").write_text("years of work")
    (out / "mixed.zarr").mkdir()
    (out / "mixed.zarr" / "zarr.json").write_text("{}")
    (out / "mixed.zarr" / "photos.txt").write_text("x")
    before = tree(tmp_path)
    refused(capsys, 7, "upscale", src, out / "notes.png", "--scale", "2", "--overwrite", *TINY,
            naming="notes.png", problem="not a .png file written by zssr")
    refused(capsys, 7, "upscale", src, out / "series", "--scale", "2", "--overwrite", *TINY,
            naming="series", problem="holds other files")
    refused(capsys, 7, "upscale", src, out / "mixed.zarr", "--scale", "2", "--overwrite", *TINY,
            naming="mixed.zarr", problem="holds other files")
    refused(capsys, 7, "upscale", src, out / "notes.png", "--scale", "2", *TINY,
            naming="notes.png", problem="already exists")
    assert tree(tmp_path) == before
    # an earlier output of ours is replaced with --overwrite (the positive control)
    assert zssr(capsys, "upscale", src, out / "sr.png", "--scale", "2", *TINY)[0] == 0
    first = (out / "sr.png").stat().st_ino
    assert zssr(capsys, "upscale", src, out / "sr.png", "--scale", "2", "--overwrite",
                *TINY)[0] == 0
    assert (out / "sr.png").stat().st_ino != first  # a new file renamed into place


# ----------------------------------------------------------------------------- side outputs


def test_history_never_replaces_an_input_the_output_or_a_foreign_file(tmp_path, capsys):
    src = _png(tmp_path / "a.png")
    (tmp_path / "notes.json").write_text("not json at all")
    before = tree(tmp_path)
    out = tmp_path / "sr.png"
    for history, problem in ((src, "equals the input"), (out, "is (or holds, or lies inside) the output"),
                             (tmp_path / "notes.json", "not a JSON document")):
        refused(capsys, 7, "upscale", src, out, "--scale", "2", "--history", history, *TINY,
                naming=history.name, problem=problem)
        assert tree(tmp_path) == before  # refused before any work: no output either
    assert zssr(capsys, "upscale", src, out, "--scale", "2", "--history",
                tmp_path / "h.json", *TINY)[0] == 0
    assert json.loads((tmp_path / "h.json").read_text())["iterations"] == 3


def test_eval_json_never_lands_in_the_hr_folder(tmp_path, capsys):
    hr = tmp_path / "hr"
    _png(hr / "a.png", size=(24, 24))
    _png(hr / "b.png", seed=2, size=(24, 24))
    before = tree(tmp_path)
    for target, problem in ((hr / "a.png", "lies inside the input"),
                            (hr / "sub" / "r.json", "lies inside the input"),
                            (tmp_path, "folder holding the input")):
        refused(capsys, 7, "eval", "--hr", hr, "--scale", "2", "--method", "bicubic",
                "--json", target, naming=target, problem=problem)
        assert tree(tmp_path) == before
    (tmp_path / "old.json").write_text('{"earlier": true}')
    assert zssr(capsys, "eval", "--hr", hr, "--scale", "2", "--method", "bicubic", "--json",
                tmp_path / "old.json")[0] == 0
    assert "mean" in json.loads((tmp_path / "old.json").read_text())


# ----------------------------------------------------------------------------- batch


def _job(tmp_path: Path, **fields) -> Path:
    spec = {"inputs": ["data/*.png"], "output": "data", "scale": 2,
            "set": {"train.max_iters": 3, "net.depth": 3, "net.width": 8,
                    "infer.back_projection_iters": 1, "train.crop_size": 16},
            "scheduler": "synchronous", **fields}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(("name", "problem"), [
    ("{name}", "equals the input"),
    ("{stem}.png", "equals the input"),
    (".zssr-batch-state.json", "control file"),
    (".zssr-batch-run/{name}", "control file"),
    ("{stem}{suffix}.lock/../.zssr-batch.lock", "control file"),
])
def test_batch_template_onto_an_input_or_control_file_is_refused(tmp_path, capsys, name,
                                                                  problem):
    _png(tmp_path / "data" / "a.png")
    _png(tmp_path / "data" / "b.png", seed=1)
    before = tree(tmp_path)
    refused(capsys, 2, "batch", _job(tmp_path, name=name), naming="name template",
            problem=problem)
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k != "job.yaml"} == \
        {k: v for k, v in before.items() if k != "job.yaml"} | _controls(after)


def _controls(after: dict[str, tuple]) -> dict[str, tuple]:
    """The lock (and run folder) a refused batch may have created: nothing else."""
    return {k: v for k, v in after.items() if k.startswith("data/.zssr-batch")}


def test_batch_into_its_input_folder_makes_no_generations(tmp_path, capsys):
    a = _png(tmp_path / "data" / "a.png")
    job = _job(tmp_path)
    raw = a.read_bytes()
    for _ in range(3):
        assert zssr(capsys, "batch", job)[0] == 0
    names = sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith("."))
    assert names == ["a.png", "a_x2.png"]
    assert a.read_bytes() == raw
    state = json.loads((tmp_path / "data" / ".zssr-batch-state.json").read_text())
    assert list(state["inputs"]) == [str(a.resolve())]


def test_batch_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    _png(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "sr").mkdir()
    foreign = tmp_path / "data" / "sr" / "a_x2.png"
    shutil.copy(tmp_path / "data" / "a.png", foreign)  # a PNG, but not this batch's
    before = tree(tmp_path / "data")
    code, err = zssr(capsys, "batch", _job(tmp_path, output="data/sr"))
    assert code == 1
    assert tree(tmp_path / "data")["sr/a_x2.png"] == before["sr/a_x2.png"]


def test_run_glob_never_takes_its_own_outputs(tmp_path, capsys):
    data = tmp_path / "dir"
    _png(data / "a.png")
    _png(data / "sub" / "b.png", seed=1)
    argv = ("run", f"{data}/**/*.png", "--out", data / "out", "--scale", "2", *SYNC, *TINY)
    for _ in range(2):
        assert zssr(capsys, *argv)[0] == 0
    report = json.loads((data / "out" / "report.json").read_text())
    assert sorted(Path(e["input"]).name for e in report["images"]) == ["a.png", "b.png"]
    assert sorted(p.name for p in (data / "out" / "outputs").iterdir()) == \
        ["a_x2.png", "b_x2.png"]
    # another run folder under the same pattern: the first run's outputs and report
    # pictures are not inputs of the second either
    assert zssr(capsys, "run", f"{data}/**/*.png", "--out", data / "out2", "--scale", "2",
                *SYNC, *TINY)[0] == 0
    report = json.loads((data / "out2" / "report.json").read_text())
    assert sorted(Path(e["input"]).name for e in report["images"]) == ["a.png", "b.png"]
    # a pattern inside this run's own folder: refused before any work
    refused(capsys, 7, "run", f"{data}/out/outputs/*.png", "--out", data / "out", "--scale",
            "2", *SYNC, *TINY, naming=data / "out", problem="folder holding the input")


def test_run_folder_never_holds_or_lies_in_an_input(tmp_path, capsys):
    a = _png(tmp_path / "data" / "a.png")
    before = tree(tmp_path)
    refused(capsys, 7, "run", a, "--out", tmp_path / "data", "--scale", "2", *SYNC, *TINY,
            naming="data", problem="folder holding the input")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- links


def test_output_link_is_refused_and_its_target_untouched(tmp_path, capsys, sentinel):
    target, folder, untouched = sentinel
    src = _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "dangling.png").symlink_to(target.parent / "created-there.png")
    (out / "link.png").symlink_to(target)
    (out / "series").symlink_to(folder)
    (out / "h.json").symlink_to(target)
    for name, extra in (("dangling.png", ()), ("link.png", ("--overwrite",)),
                        ("series", ("--overwrite",))):
        refused(capsys, 7, "upscale", src, out / name, "--scale", "2", *extra, *TINY,
                naming=name, problem="symbolic link")
    refused(capsys, 7, "upscale", src, out / "sr.png", "--scale", "2", "--history",
            out / "h.json", *TINY, naming="h.json", problem="symbolic link")
    untouched()
    assert not (out / "sr.png").exists()


def test_temporary_names_taken_by_links_are_never_followed(tmp_path, capsys, sentinel,
                                                           monkeypatch):
    target, folder, untouched = sentinel
    monkeypatch.setattr(safe_files, "token", lambda: "0badc0de")  # predictable temporaries
    src = _png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".h.json.tmp-0badc0de").symlink_to(target)
    code, err = zssr(capsys, "upscale", "-q", src, out / "sr.png", "--scale", "2", "--history",
                     out / "h.json", *TINY)
    assert code == 7 and len(err) == 1 and "every name tried was taken" in err[0], err
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.yaml.tmp-0badc0de").symlink_to(target)
    code, err = zssr(capsys, "run", "-q", src, "--out", run, "--scale", "2", *SYNC, *TINY)
    assert code == 7 and len(err) == 1 and "config.yaml" in err[0], err
    untouched()
    # a link at an output's temporary name inside the run folder: refused before any work
    (run / ".config.yaml.tmp-0badc0de").unlink()
    (run / "outputs").mkdir()
    (run / "outputs" / ".a_x2.png.partial-0badc0de").symlink_to(folder)
    code, err = zssr(capsys, "run", "-q", src, "--out", run, "--scale", "2", *SYNC, *TINY)
    assert code == 7 and len(err) == 1 and ".a_x2.png.partial-0badc0de" in err[0], err
    untouched()


def test_writers_never_follow_a_link_at_a_temporary_name(tmp_path, sentinel, monkeypatch):
    from io_adapters.base import full_window
    from io_adapters.cog import CogWriter
    from io_adapters.detect import open_reader, scale_metadata
    from io_adapters.dicom import DicomReader
    from io_adapters.dicom_writer import DicomWriter
    from io_adapters.errors import WriteError
    from io_adapters.plain import PngWriter
    from io_adapters.zarr_store import ZarrWriter

    target, folder, untouched = sentinel
    monkeypatch.setattr(safe_files, "token", lambda: "0badc0de")
    with open_reader(_png(tmp_path / "a.png")) as reader:
        meta, pixels = reader.meta, reader.read()
    dicom = DicomReader(SERIES / "IM_a.dcm")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("p.png", "t.tif", "d.dcm"):
        for tag in ("partial", "tiles", "tmp"):  # temporaries are private folders
            (out / f".{name}.{tag}-0badc0de").symlink_to(folder)
    with pytest.raises(WriteError, match="every name tried was taken"):
        CogWriter(out / "t.tif", meta)
    png = PngWriter(out / "p.png", meta)
    png.write(pixels, full_window(meta))
    with pytest.raises(WriteError, match="every name tried was taken"):
        png.commit()
    dmeta = scale_metadata(dicom.meta, 1.0)
    dcm = DicomWriter(out / "d.dcm", dmeta)
    with pytest.raises(WriteError, match="every name tried was taken"):  # a frame goes to disk
        dcm.write(dicom.read(), full_window(dmeta))  # as soon as it is complete
    (out / "z.zarr.partial").symlink_to(folder)  # the Zarr writer's fixed temporary name
    with ZarrWriter(out / "z.zarr", meta, chunks=(8, 8)) as zw:
        zw.write(pixels, full_window(meta))
    assert (out / "z.zarr" / "zarr.json").is_file()
    untouched()


def test_batch_control_links_are_refused(tmp_path, capsys, sentinel):
    target, folder, untouched = sentinel
    _png(tmp_path / "data" / "a.png")
    job = _job(tmp_path, output="sr")
    for name, link_to in ((".zssr-batch.lock", target), (".zssr-batch-state.json", target),
                          (".zssr-batch-run", folder)):
        (tmp_path / "sr").mkdir(exist_ok=True)
        (tmp_path / "sr" / name).symlink_to(link_to)
        refused(capsys, 7, "batch", job, naming=name, problem="symbolic link")
        (tmp_path / "sr" / name).unlink()
        untouched()


def _plant(entry: Path, file_target: Path, dir_target: Path) -> None:
    is_dir = entry.is_dir() and not entry.is_symlink()
    if is_dir:
        shutil.rmtree(entry)
    else:
        entry.unlink()
    entry.symlink_to(dir_target if is_dir else file_target)


@pytest.mark.parametrize("tree_check", [
    pytest.param(True, id="checked-first"),
    pytest.param(False, id="write-time-only", marks=pytest.mark.slow),  # ~70 runs
])
def test_a_link_at_any_name_a_run_writes_never_has_its_target_touched(tmp_path, capsys,
                                                                       sentinel, monkeypatch,
                                                                       tree_check):
    """Acceptance (issue 20): plant a link at each name a real run wrote (enumerated from
    its tree), run again, and the link's target keeps its bytes and mtime.

    ``checked-first``: the run refuses at once (exit 7, one line naming the link).
    ``write-time-only``: the up-front check is switched off, so every write itself must
    refuse or avoid the link (O_EXCL/O_NOFOLLOW, lstat before rename): whatever the exit
    code, the target is untouched."""
    from pipeline.runs.driver import RunDir

    target, folder, untouched = sentinel
    src = _png(tmp_path / "in" / "a.png")
    pristine = tmp_path / "pristine"
    argv = ("run", src, "--scale", "2", *SYNC, *TINY)
    assert zssr(capsys, *argv, "--out", pristine)[0] == 0
    names = sorted(tree(pristine))
    assert len(names) > 20 and "outputs/a_x2.png" in names and ".lock" in names
    if not tree_check:
        monkeypatch.setattr(RunDir, "check_tree", lambda self: None)
    for i, rel in enumerate(names):
        run = tmp_path / f"r{i}"
        shutil.copytree(pristine, run, symlinks=True)
        _plant(run / rel, target, folder)
        for extra in ((), ("--no-resume", "--overwrite")):
            code, err = zssr(capsys, *argv, "-q", "--out", run, *extra)
            if tree_check:
                assert code == 7 and len(err) == 1 and "symbolic link" in err[0], (rel, err)
            untouched()
        shutil.rmtree(run)


def test_a_link_at_any_name_a_batch_writes_never_has_its_target_touched(tmp_path, capsys,
                                                                         sentinel):
    target, folder, untouched = sentinel
    _png(tmp_path / "data" / "a.png")
    job = _job(tmp_path, output="sr")
    assert zssr(capsys, "batch", job)[0] == 0
    pristine = tmp_path / "pristine"
    shutil.move(tmp_path / "sr", pristine)
    names = [n for n in sorted(tree(pristine)) if n.count("/") <= 1]  # the run: test above
    assert {".zssr-batch.lock", ".zssr-batch-state.json", "a_x2.png"} <= set(names)
    for rel in names:
        shutil.copytree(pristine, tmp_path / "sr", symlinks=True)
        _plant(tmp_path / "sr" / rel, target, folder)
        code, err = zssr(capsys, "batch", job, "--set", "train.max_iters=4")  # a new config
        assert code in (1, 7), (rel, code, err)
        untouched()
        shutil.rmtree(tmp_path / "sr")
