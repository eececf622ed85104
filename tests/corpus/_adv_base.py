"""The record and the builder of the adversarial corpus (see :mod:`adversarial`)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _files as F  # noqa: E402
from make_corpus import TINY  # noqa: E402

__all__ = ["AdvCase", "Builder", "CLASSES", "COMMANDS", "RUN_FILES", "BATCH_FILES", "JOB_SET",
           "SYNC", "TOKEN", "TINY", "esc"]

COMMANDS = ("upscale", "run", "batch", "eval")
CLASSES = {  # class -> what it attacks (the README table's rows)
    "output_onto_input": "output = input, a folder holding it, or a path inside it",
    "side_output": "--history / eval --json onto inputs, outputs or control files",
    "batch_template": "batch names onto inputs or control files; output folder = input",
    "symlink": "links at outputs, temporaries, locks, state, run-folder entries",
    "diverged": "learning rate 10^6 (over its bound) or 10 with a net that explodes",
    "hostile_config": "alias bombs, FIFO, /dev/zero, latin-1, .inf/.nan, user steps",
    "huge_raster": "files declaring >= 100 000^2 pixels",
    "config_bounds": "net depth/width/kernel and iteration counts out of bounds",
    "odd_value": "scale 1.3333, an ftp:// scheduler",
    "file_name": "NUL / > 255-byte batch names, a newline in a file name",
    "dicom_geometry": "one-value PixelSpacing, zero ImageOrientationPatient",
    "stop_signal": "SIGTERM / SIGHUP while working",
}
SYNC = ("--scheduler", "synchronous")
JOB_SET = {"train.max_iters": 3, "net.depth": 3, "net.width": 8,
           "infer.back_projection_iters": 1, "train.crop_size": 16}
#: what a ``zssr run`` folder holds besides ``outputs/`` (bookkeeping, never a partial)
RUN_FILES = (".lock", "manifest.jsonl", "config.yaml", "log.jsonl", "report.html", "report.json",
             "outputs", *(f"{d}{tail}" for d in ("claims", "entries", "report_assets", "tiles",
                                                   "weights", "work") for tail in ("", "/*")))
BATCH_FILES = (".zssr-batch.lock", ".zssr-batch-state.json", ".zssr-batch-run",
               *(f".zssr-batch-run/{p}" for p in RUN_FILES))
TOKEN = "0badc0de"  # the predictable temporary-name token of the link cases


@dataclass(frozen=True)
class AdvCase:
    """One adversarial scenario and what must come of it."""

    name: str
    klass: str  # key of CLASSES
    args: tuple[str, ...]  # argv after ``zssr`` (absolute paths)
    expect: str  # key of pipeline.errors.EXIT
    message: str  # regex: the error line (exit 2-10) or a FAILED line (exit 1); "" for ok
    root: Path  # the case folder: nothing outside ``out_dir`` may change
    out_dir: Path  # where new entries may appear (only ``outputs`` and ``bookkeeping``)
    inputs: tuple[Path, ...]  # files/folders whose bytes must not change (even in out_dir)
    outputs: tuple[str, ...] = ()  # relative to out_dir: must exist afterwards
    bookkeeping: tuple[str, ...] = ()  # fnmatch patterns (relative to out_dir) allowed to appear
    removable: tuple[str, ...] = ()  # patterns (relative to out_dir) zssr may delete: its
    # own temporary names, which the next run cleans (a link there: only the link goes)
    token: str | None = None  # temporary names made predictable (links planted there)
    repeat: int = 1  # run the command this many times (each must give ``expect``)
    stop: int | None = None  # a signal sent while working (run in a child process)
    wait_for: str = ""  # glob (relative to out_dir) that shows it is working
    note: str = ""

    @property
    def command(self) -> str:
        return self.args[0]


class Builder:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root.resolve()
        self.rng = np.random.default_rng(seed)
        self.cases: list[AdvCase] = []

    # -- folders and files -------------------------------------------------------------

    def case(self, name: str) -> tuple[Path, Path, Path]:
        """``(case, in, out)``; ``outside/`` holds the sentinels the links point at."""
        case = self.root / name
        (case / "in").mkdir(parents=True)
        (case / "out").mkdir()
        outside = case / "outside"
        (outside / "folder").mkdir(parents=True)
        (outside / "precious.png").write_bytes(b"do not touch")
        (outside / "folder" / "keep.txt").write_text("keep")
        os.utime(outside / "precious.png", (1_000_000_000, 1_000_000_000))
        return case, case / "in", case / "out"

    def png(self, path: Path, side: tuple[int, int] = (24, 20), rgb: bool = True) -> Path:
        shape = (*side, 3) if rgb else side
        return F.png_of(path, self.rng.integers(0, 256, shape, dtype=np.uint8))

    def zarr(self, path: Path) -> Path:
        return F.zarr_image(path, self.rng.integers(0, 256, (1, 20, 24), dtype=np.uint8))

    def job(self, case: Path, **fields) -> Path:
        spec = {"scale": 2, "set": dict(JOB_SET), "scheduler": "synchronous", **fields}
        path = case / "job.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True))
        return path

    # -- records -------------------------------------------------------------------------

    def add(self, name: str, klass: str, args: tuple, expect: str, message: str, *,
            out_dir: Path | None = None, inputs: tuple = (), **kw) -> None:
        case = self.root / name
        self.cases.append(AdvCase(
            name=name, klass=klass, args=tuple(str(a) for a in args), expect=expect,
            message=message, root=case, out_dir=out_dir or case / "out",
            inputs=tuple(inputs) or (case / "in",), **kw))

    def upscale(self, name: str, klass: str, src: Path, out: Path, expect: str, message: str,
                *extra: str, **kw) -> None:
        self.add(name, klass, ("upscale", src, out, "--scale", "2", *TINY, *extra), expect,
                 message, **kw)

    def run(self, name: str, klass: str, srcs: tuple, out: Path, expect: str, message: str,
            *extra: str, **kw) -> None:
        kw.setdefault("bookkeeping", RUN_FILES)
        kw.setdefault("out_dir", out)  # the run folder
        self.add(name, klass, ("run", *srcs, "--out", out, "--scale", "2", *SYNC, *TINY,
                               *extra), expect, message, **kw)

    def batch(self, name: str, klass: str, job: Path, expect: str, message: str, *extra: str,
              **kw) -> None:
        kw.setdefault("bookkeeping", BATCH_FILES)
        self.add(name, klass, ("batch", job, *extra), expect, message, **kw)

    def eval(self, name: str, klass: str, hr: Path, expect: str, message: str, *extra: str,
             method: str = "bicubic", **kw) -> None:
        tiny = TINY if method == "zssr" else ()
        self.add(name, klass, ("eval", "--hr", hr, "--scale", "2", "--method", method,
                               "--limit", "1", *tiny, *extra), expect, message, **kw)


def esc(path: Path | str) -> str:
    return re.escape(str(path))


