"""Run one corpus :class:`~make_corpus.Case` through the real CLI and record what happened.

``run_case(case)`` calls :func:`pipeline.cli.main.main` in this process (stderr
captured, a ``SIGALRM`` guard against hangs); ``run_case(case,
subprocess=True)`` runs ``python -m pipeline.cli.main`` in a child process with a
timeout, which also proves the exit status a shell sees.  Either way the
:class:`Outcome` holds the exit code, the stderr lines, the time taken, the
inputs whose bytes changed and the entries left in the output folder that
should not be there (partial files, hidden temporaries).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess as sp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from make_corpus import Case

REPO = Path(__file__).resolve().parents[2]

__all__ = ["Outcome", "run_case", "tree_digest", "CaseTimeout"]


class CaseTimeout(Exception):
    """A case ran past its time limit."""


@dataclass(frozen=True)
class Outcome:
    case: Case
    code: int
    stderr: list[str]  # non-empty lines
    seconds: float
    changed_inputs: tuple[str, ...]
    leftovers: tuple[str, ...]  # unexpected entries in the output folder
    missing_outputs: tuple[str, ...]
    lost_outputs: tuple[str, ...] = ()  # files in the output folder before, changed or gone

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr if ": error: " in line]


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every regular file under ``path`` (or of ``path``); special files by kind."""
    out: dict[str, str] = {}
    if path.is_symlink() or not path.exists():
        return {str(path): "absent"}
    items = [path] if not path.is_dir() else sorted(path.rglob("*"))
    for item in items:
        if item.is_file() and not _is_fifo(item):
            out[str(item)] = hashlib.sha256(item.read_bytes()).hexdigest()
        else:
            out[str(item)] = "dir" if item.is_dir() else "special"
    return out


def _is_fifo(path: Path) -> bool:
    import stat

    return stat.S_ISFIFO(path.stat().st_mode)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


def _call_inprocess(args: list[str], timeout: float) -> tuple[int, str]:
    from pipeline.cli.main import main

    def on_alarm(signum, frame):
        raise CaseTimeout(f"case ran past {timeout} s")

    buf = io.StringIO()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return code, buf.getvalue()


def _call_subprocess(args: list[str], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    try:
        proc = sp.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=REPO, env=env,
                      capture_output=True, text=True, timeout=timeout, check=False)
    except sp.TimeoutExpired as exc:
        raise CaseTimeout(f"case ran past {timeout} s") from exc
    return proc.returncode, proc.stderr


def run_case(case: Case, *, subprocess: bool = False, timeout: float = 60.0,
             extra: tuple[str, ...] = ("-q",)) -> Outcome:
    """Run ``case`` and compare inputs and the output folder before and after."""
    before = {p: tree_digest(p) for p in case.inputs}
    listing = _listing(case.out_dir)
    existing = tree_digest(case.out_dir)
    args = [*case.args, *extra]
    t0 = time.perf_counter()
    code, err = (_call_subprocess if subprocess else _call_inprocess)(args, timeout)
    seconds = time.perf_counter() - t0
    changed = tuple(str(p) for p in case.inputs if tree_digest(p) != before[p])
    after = _listing(case.out_dir)
    expected = set(case.outputs)
    leftovers = tuple(sorted(n for n in after - listing
                             if n.split("/")[0] not in expected))
    missing = tuple(sorted(expected - {n.split("/")[0] for n in after}))
    now = tree_digest(case.out_dir)
    lost = tuple(sorted(k for k, v in existing.items() if v != "dir" and now.get(k) != v))
    lines = [line for line in err.splitlines() if line.strip()]
    return Outcome(case, code, lines, seconds, changed, leftovers, missing, lost)


@dataclass(frozen=True)
class BatchOutcome:
    """``zssr run`` over good images plus every bad input of the corpus."""

    code: int
    good: tuple[Path, ...]
    bad: tuple[Path, ...]
    outputs: tuple[str, ...]  # entries of RUN/outputs after the run
    failed: dict[str, str]  # bad input -> error class recorded in the manifest
    changed_inputs: tuple[str, ...]
    seconds: float

    @property
    def good_completed(self) -> int:
        return sum(any(o.startswith(p.stem + "_") for o in self.outputs) for p in self.good)


def run_batch(cases: list[Case], workdir: Path, *, tiny: tuple[str, ...]) -> BatchOutcome:
    """Run the bad inputs of ``cases`` inside one batch with two good PNGs (synchronous)."""
    import json

    from pipeline.cli.main import main

    plain = REPO / "tests" / "data" / "io" / "plain"
    good = []
    for i, name in enumerate(("bridge_40x48.png", "butterfly_48x64.png")):
        dst = workdir / "good" / f"good{i}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((plain / name).read_bytes())
        good.append(dst)
    bad = [c.bad_input for c in cases if c.bad_input is not None and c.expect != "ok"]
    before = {p: tree_digest(p) for p in [*good, *bad]}
    run_dir = workdir / "run"
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", *map(str, good), *map(str, bad), "--out", str(run_dir),
                     "--scale", "2", "--scheduler", "synchronous", *tiny, "-q"])
    seconds = time.perf_counter() - t0
    failed = {}
    for line in (run_dir / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if rec.get("state") == "failed":
            failed[rec.get("input", rec.get("key"))] = rec.get("error_class", "?")
    outputs = tuple(sorted(p.name for p in (run_dir / "outputs").iterdir())) \
        if (run_dir / "outputs").is_dir() else ()
    changed = tuple(str(p) for p in before if tree_digest(p) != before[p])
    return BatchOutcome(code, tuple(good), tuple(bad), outputs, failed, changed, seconds)
