"""Run one adversarial :class:`~adversarial.AdvCase` and judge what it did to the file system.

``run_adv(case)`` snapshots the whole case folder (every entry, links not
followed: a link by its target text, a file by its sha256 and mtime), runs the
command (in this process through :func:`pipeline.cli.main.main`; a case with a
``stop`` signal in a child process, signalled once ``wait_for`` appears) and
snapshots again.  :func:`problems` lists everything wrong with the outcome:

* the exit code is not the documented one (:data:`pipeline.errors.EXIT`);
* a traceback or an internal error; for exit codes 2-10 and 129/143 not exactly
  one ``zssr <cmd>: error: ...`` line matching the case's message; for exit 1
  (some images failed) no ``FAILED`` line matching it;
* an input byte changed (sha256 of every input file);
* anything created, changed or removed outside the output folder;
* a link target touched (``outside/``: the sentinels keep bytes and mtime, the
  dangling links' target never comes to exist) or a planted link replaced;
* an entry left in the output folder that is neither an expected output nor
  the command's documented bookkeeping (partials, temporaries, locks).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import re
import signal
import stat
import subprocess as sp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _adv_base import AdvCase

REPO = Path(__file__).resolve().parents[2]
TEMPORARY = re.compile(r"\.(partial|tmp|tiles|steps|old)(-[0-9a-f]{8})?$|^\.zssr-probe-")

__all__ = ["AdvOutcome", "run_adv", "run_signalled", "problems", "snapshot"]


@dataclass(frozen=True)
class AdvOutcome:
    case: AdvCase
    codes: tuple[int, ...]  # one per repetition
    stderr: tuple[str, ...]  # non-empty lines (last repetition)
    stdout: tuple[str, ...]
    seconds: float
    inputs_changed: tuple[str, ...]
    written_outside: tuple[str, ...]
    link_targets_touched: tuple[str, ...]
    links_replaced: tuple[str, ...]
    existing_changed: tuple[str, ...]
    leftovers: tuple[str, ...]
    missing_outputs: tuple[str, ...]

    @property
    def code(self) -> int:
        return self.codes[-1]

    @property
    def traceback(self) -> bool:
        return any("Traceback" in line or "internal error" in line
                   for line in (*self.stderr, *self.stdout))


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``, links not followed: its kind and content."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", _sha256(p), st.st_mtime_ns)
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(path: Path) -> dict[str, tuple]:
    if os.path.islink(path) or not os.path.lexists(path):
        return {"": ("link", os.readlink(path)) if os.path.islink(path) else ("absent",)}
    if path.is_dir():
        return {k: v[:2] for k, v in snapshot(path).items()}
    return {"": ("file", _sha256(path)) if path.is_file() else ("special",)}


def _inner(rel: str, out_rel: str) -> str:
    return os.path.relpath(rel, out_rel) if out_rel != "." else rel


def _under(rel: str, prefix: str) -> bool:
    return prefix == "." or rel == prefix or rel.startswith(prefix + "/")


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _case_environment(case: AdvCase, timeout: float):
    """The token patch (predictable temporaries), no user-step opt-in, a time limit."""
    from io_adapters import safe_files

    real_token = safe_files.token
    allow = os.environ.pop("ZSSR_ALLOW_USER_STEPS", None)
    if case.token is not None:
        safe_files.token = lambda: case.token

    def on_alarm(signum, frame):
        raise _Timeout(f"{case.name}: ran past {timeout} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        safe_files.token = real_token
        if allow is not None:
            os.environ["ZSSR_ALLOW_USER_STEPS"] = allow


def _argv(case: AdvCase) -> list[str]:
    # exit 1 (some images failed) is judged by the FAILED lines, which -q hides
    return [*case.args, *(() if case.expect == "batch" else ("-q",))]


def _inprocess(case: AdvCase, timeout: float) -> tuple[int, str, str]:
    from pipeline.cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with _case_environment(case, timeout), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(out):
        code = main(_argv(case))
    return code, err.getvalue(), out.getvalue()


def _start(case: AdvCase) -> sp.Popen:
    """A ``stop`` case in a child process (its own session, one torch thread)."""
    env = {k: v for k, v in os.environ.items() if k != "ZSSR_ALLOW_USER_STEPS"}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return sp.Popen([sys.executable, "-m", "pipeline.cli.main", *_argv(case)], cwd=REPO, env=env,
                    stdout=sp.PIPE, stderr=sp.PIPE, text=True, start_new_session=True)


def _appeared(case: AdvCase) -> bool:
    """Whether ``case.wait_for`` matches in the output folder (a folder that vanishes
    while it is listed, a temporary renamed into place, counts as not yet)."""
    try:
        return next(case.out_dir.glob(case.wait_for), None) is not None
    except OSError:
        return False


def run_signalled(cases: list[AdvCase], *, timeout: float = 180.0) -> list[AdvOutcome]:
    """Start every ``stop`` case at once; signal each when its ``wait_for`` appears in its
    output folder (it is working: a partial, a temporary, a tile marker), then judge each.
    A case that ends before it was signalled gets its real exit code (a failure)."""
    before = {c.name: snapshot(c.root) for c in cases}
    inputs = {c.name: {str(p): _digest(p) for p in c.inputs} for c in cases}
    t0 = time.perf_counter()
    procs = {c.name: _start(c) for c in cases}
    waiting = {c.name for c in cases}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for c in cases:
            if c.name in waiting and (procs[c.name].poll() is not None or _appeared(c)):
                if procs[c.name].poll() is None:
                    procs[c.name].send_signal(c.stop)
                waiting.discard(c.name)
        time.sleep(0.02)
    outcomes = []
    for c in cases:
        proc = procs[c.name]
        try:
            out, err = proc.communicate(timeout=max(5.0, deadline - time.monotonic()))
            code = proc.returncode
        except sp.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code, err = -9, err + f"\n{c.name}: ran past {timeout} s"
        outcomes.append(_judge(c, before[c.name], snapshot(c.root), inputs[c.name], (code,),
                               err, out, time.perf_counter() - t0))
    return outcomes


def run_adv(case: AdvCase, *, timeout: float = 90.0) -> AdvOutcome:
    """Run ``case`` (``case.repeat`` times) and compare the case folder before and after."""
    if case.stop is not None:
        return run_signalled([case], timeout=timeout)[0]
    before = snapshot(case.root)
    inputs = {str(p): _digest(p) for p in case.inputs}
    t0 = time.perf_counter()
    codes = []
    for _ in range(case.repeat):
        code, err, out = _inprocess(case, timeout)
        codes.append(code)
    seconds = time.perf_counter() - t0
    return _judge(case, before, snapshot(case.root), inputs, tuple(codes), err, out, seconds)


def _judge(case: AdvCase, before: dict, after: dict, inputs: dict, codes: tuple, err: str,
           out: str, seconds: float) -> AdvOutcome:
    out_rel = os.path.relpath(case.out_dir, case.root)
    input_rels = [os.path.relpath(p, case.root) for p in case.inputs]
    changed_inputs = tuple(p for p, d in inputs.items() if _digest(Path(p)) != d)
    outside, touched, replaced, existing, leftovers = [], [], [], [], []
    for rel in sorted(set(before) | set(after)):
        was, now = before.get(rel), after.get(rel)
        if was == now or (was and now and was[0] == now[0] == "dir"):
            continue
        if any(_under(rel, p) for p in input_rels if not p.startswith("..")):
            continue  # judged by the input digests
        if rel == out_rel and was is None and now == ("dir",):
            continue  # the output folder itself may be created
        if _under(rel, "outside"):
            touched.append(rel)
        elif not _under(rel, out_rel) or rel == out_rel:
            outside.append(rel)
        elif now is None and any(fnmatch.fnmatchcase(_inner(rel, out_rel), pat)
                                 for pat in case.removable):
            continue  # a stale temporary by zssr's own naming: removed, never followed
        elif was is not None and was[0] == "link":
            replaced.append(rel)
        elif was is not None:
            existing.append(rel)
        elif now is not None:
            inner = _inner(rel, out_rel)
            allowed = (*case.outputs, *(f"{o}/*" for o in case.outputs), *case.bookkeeping)
            if TEMPORARY.search(Path(inner).name) or not any(
                    fnmatch.fnmatchcase(inner, pat) for pat in allowed):
                leftovers.append(inner)
    missing = tuple(o for o in case.outputs if not os.path.lexists(case.out_dir / o))
    return AdvOutcome(
        case=case, codes=codes, stderr=tuple(ln for ln in err.splitlines() if ln.strip()),
        stdout=tuple(ln for ln in out.splitlines() if ln.strip()), seconds=seconds,
        inputs_changed=changed_inputs, written_outside=tuple(outside),
        link_targets_touched=tuple(touched), links_replaced=tuple(replaced),
        existing_changed=tuple(existing), leftovers=tuple(leftovers), missing_outputs=missing)


def problems(o: AdvOutcome) -> list[str]:
    """Everything wrong with one outcome (empty: the case passed)."""
    from pipeline.errors import EXIT

    c, bad = o.case, []
    want = EXIT[c.expect]
    if any(code != want for code in o.codes):
        bad.append(f"exit {list(o.codes)}, expected {want} ({c.expect})")
    if o.traceback:
        bad.append("traceback or internal error")
    errors = [ln for ln in o.stderr if ": error: " in ln]
    if c.expect == "ok":
        if o.stderr:
            bad.append(f"stderr not empty: {list(o.stderr[:3])}")
    elif c.expect == "batch":
        failed = [ln for ln in o.stdout if ln.lstrip().startswith("FAILED ")]
        if errors:
            bad.append(f"error line for exit 1: {errors[:2]}")
        if not any(re.search(c.message, ln) for ln in failed):
            bad.append(f"no FAILED line matches {c.message!r}: {failed[:3] or o.stdout[-3:]}")
    elif len(o.stderr) != 1 or len(errors) != 1:
        bad.append(f"expected exactly one error line, got {list(o.stderr[:5])}")
    elif not re.search(c.message, errors[0].split(": error: ", 1)[1]):
        bad.append(f"message {errors[0]!r} does not match {c.message!r}")
    for what, items in (("inputs changed", o.inputs_changed),
                        ("written outside the output folder", o.written_outside),
                        ("link target touched", o.link_targets_touched),
                        ("planted link replaced", o.links_replaced),
                        ("existing entry changed", o.existing_changed),
                        ("left in the output folder", o.leftovers),
                        ("missing outputs", o.missing_outputs)):
        if items:
            bad.append(f"{what}: {list(items[:6])}")
    return bad
