"""Mutation testing with mutmut 3, one module at a time, each with a fast test subset.

A mutant is a small deliberate defect (``<`` for ``<=``, ``+ 1`` for ``- 1``, a dropped
argument) planted in one function; a test suite that lets it pass has a hole.  For each
module in ``SPECS`` this copies the packages and ``tests/`` into a scratch folder (the
shared working tree is never touched: mutmut writes ``mutants/`` beside its config),
runs ``mutmut run`` there on that module's mutants with that module's test files only
(mutmut runs, per mutant, just the tests that reached the mutated function), and merges
the module's counts and survivors into ``bench/results/mutation.json``; modules already
there are kept, so a partial run still leaves useful results.

Survivors judged equivalent (no test can tell them apart from the original) are listed
in ``bench/mutation_equivalent.json`` as ``{module: {key: reason}}``; ``key`` is
``function: original line -> mutated line`` (stable across mutant renumbering).  A reason
starting "TOOL LIMIT" marks a mutant mutmut cannot switch on (code run at import time);
it is counted apart, and its reason names the hand-planted check that covers it.
"CPU-only machine" reasons hold here; a GPU run would tell those mutants apart.

``--survivors`` runs a module's unexplained survivors again after new tests were added
(in the same scratch copy; mutmut finds the new tests), ``--recount`` redoes the counts
after the equivalence list changed.

    nice -n 10 .venv/bin/python bench/mutation.py zssr/inference.py geometry/tiles.py
    .venv/bin/python bench/mutation.py --list

Needs the ``mutation`` extra (``pip install -e .[mutation]``).  Torch runs on one thread.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "mutation.json"
EQUIVALENT = ROOT / "bench" / "mutation_equivalent.json"
PACKAGES = ("geometry", "zssr", "pipeline", "io_adapters", "configs", "workflows")
KILLED = {"killed", "caught by type check"}
CLEAN_RUN_FAILED = ("failed to collect stats", "Failed to run clean test")
RETRIES = 2


@dataclass(frozen=True)
class Spec:
    """What to mutate in one module, and the fast tests that must kill it."""

    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # "name" or "Class.method" globs; () = all functions
    k: str | None = None  # a pytest -k expression narrowing the test files
    extra: dict = field(default_factory=dict)  # more [tool.mutmut] settings


# Priority order: a run of all modules does them in this order.
SPECS: dict[str, Spec] = {
    "zssr/inference.py": Spec(tests=("tests/test_engine.py", "tests/test_mut_inference.py",
                                     "tests/test_cheap_inference.py")),
    # not tests/test_tiles_props.py: its Hypothesis properties take ~30 s per mutant
    "geometry/tiles.py": Spec(tests=("tests/test_tiles.py", "tests/test_mut_tiles.py")),
    "geometry/scale.py": Spec(tests=("tests/test_mut_tiles.py", "tests/test_mut_scale.py",
                                     "tests/test_geometry_single_rule.py")),
    "pipeline/image/halo.py": Spec(tests=("tests/test_tiles.py", "tests/test_mut_halo.py")),
    "zssr/normalize.py": Spec(tests=("tests/test_mut_normalize.py",)),
    # the engine tests that train a model reach the sampler too but take seconds each
    "zssr/sampling.py": Spec(tests=(
        "tests/test_mut_sampling.py",
        *(f"tests/test_engine.py::test_{t}" for t in (
            "each_dihedral_transform_is_undone_exactly", "all_eight_transforms_distinct",
            "fathers_have_crop_shape_and_respect_clip", "crop_source_is_boundless_by_mirroring",
            "fathers_avoid_invalid_regions", "pyramid_fathers_follow_the_official_source_rule",
        )))),
    "zssr/resize.py": Spec(tests=("tests/test_resize.py", "tests/test_mut_resize.py")),
    "zssr/train.py": Spec(tests=(
        "tests/test_mut_train.py",
        *(f"tests/test_engine.py::test_{t}" for t in (
            "learning_rate_policy_drops_at_predicted_iterations",
            "learning_rate_policy_keeps_rate_while_improving",
            "training_lowers_the_loss_on_a_real_image", "same_seed_same_output",
            "warm_start_uses_the_short_schedule_and_returns_weights",
            "sons_are_clipped_like_the_official_father_to_son",
        )))),
    "io_adapters/_common.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",),
        functions=("scale_common",)),
    "io_adapters/detect.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",), functions=("scale_metadata",)),
    "io_adapters/geotiff.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",), functions=("scale_geo_metadata",)),
    "io_adapters/_dicom_frames.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",), functions=("scaled_frame",)),
    "io_adapters/dicom_writer.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",), functions=("scale_dicom_metadata",)),
    "io_adapters/_dicom_derive.py": Spec(
        tests=("tests/test_mut_scale_metadata.py", "tests/test_io_dicom_write.py"),
        functions=("_scale_spacing", "_scale_us_regions", "_set_geometry")),
    "io_adapters/zarr_store.py": Spec(
        tests=("tests/test_mut_scale_metadata.py",), functions=("scale_zarr_metadata",)),
    "io_adapters/nifti.py": Spec(
        tests=("tests/test_mut_slices.py", "tests/test_mut_scale_metadata.py",
               "tests/test_nifti.py"),
        functions=("scale_nifti_metadata", "scale_nifti_slices", "_with_affine"),
        k="not end_to_end"),
    # test_through_plane_dicom runs a tiny through-plane upscale per test: seconds each
    "io_adapters/_dicom_slices.py": Spec(
        tests=("tests/test_mut_slices.py", "tests/test_through_plane_dicom.py"),
        k="not dciodvfy"),
}


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutant_globs(path: str, spec: Spec) -> list[str]:
    """mutmut's mutant-name globs for the chosen functions (``[]``: every function)."""
    mod = module_name(path)
    out = []
    for f in spec.functions:
        cls, _, meth = f.rpartition(".")
        out.append(f"{mod}.x\u01c1{cls}\u01c1{meth}__mutmut_*" if cls else f"{mod}.x_{f}__mutmut_*")
    return out


def _toml(value: object) -> str:
    return json.dumps(value)  # JSON strings, lists and numbers are valid TOML values


def prepare(work: Path, path: str, spec: Spec) -> list[str]:
    """A fresh scratch copy of the project with a ``[tool.mutmut]`` section for ``path``."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in (*PACKAGES, "tests"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    tests = [t for t in spec.tests if (ROOT / t.split("::")[0]).exists()]
    if not tests:
        raise SystemExit(f"mutation: no test file of {path} exists: {spec.tests}")
    settings = {
        "source_paths": list(PACKAGES), "only_mutate": [path],
        "pytest_add_cli_args_test_selection": tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-x"]
        + (["-k", spec.k] if spec.k else []),
        "use_git_change_detection": False, **spec.extra,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {_toml(v)}" for k, v in settings.items()]
    text = (ROOT / "pyproject.toml").read_text() + "\n".join(lines) + "\n"
    (work / "pyproject.toml").write_text(text)
    return tests


def run_mutmut(work: Path, globs: list[str], *, timeout: float, log: Path) -> int:
    exe = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    cmd = [str(exe), "run", "--max-children", "1", *globs]
    with log.open("w") as fh:
        try:
            return subprocess.run(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            return 124


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _function_spans(source: str) -> dict[str, tuple[int, int]]:
    """``{"f": (first, last)}`` and ``{"Class.m": ...}`` line spans (decorators included)."""
    spans = {}
    for node in ast.parse(source).body:
        defs = [(node.name, node)] if isinstance(node, (ast.FunctionDef,
                                                        ast.AsyncFunctionDef)) else []
        if isinstance(node, ast.ClassDef):
            defs = [(f"{node.name}.{n.name}", n) for n in node.body
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for name, fn in defs:
            first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
            spans[name] = (first, fn.end_lineno or fn.lineno)
    return spans


def function_of(mutant: str) -> str:
    """``zssr.x.x_f__mutmut_3`` -> ``f``; ``m.x\u01c1C\u01c1f__mutmut_1`` -> ``C.f``."""
    tail = mutant.rsplit("__mutmut_", 1)[0].rsplit(".", 1)[-1]
    if tail.startswith("x\u01c1"):
        return ".".join(tail[2:].split("\u01c1"))
    return tail.removeprefix("x_")


def describe(diff: str, *, function: str, source_lines: list[str],
             span: tuple[int, int] | None) -> tuple[int | None, str, str]:
    """(file line, original line, mutated line) of a mutant's first changed line."""
    body = diff.splitlines()[2:]
    removed = next((ln[1:] for ln in body if ln.startswith("-")), "")
    added = next((ln[1:] for ln in body if ln.startswith("+")), "")
    line = None
    if span is not None:
        for i in range(span[0], span[1] + 1):
            if source_lines[i - 1].strip() == removed.strip():
                line = i
                break
    return line, removed.strip(), added.strip()


def collect(work: Path, path: str, globs: list[str]) -> dict:
    """Counts and survivors of one finished mutmut run."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    meta_file = work / "mutants" / (path + ".meta")
    if not meta_file.exists():
        return {"error": f"mutmut wrote no results ({meta_file.name} missing); see the log"}
    codes = json.loads(meta_file.read_text())["exit_code_by_key"]
    if globs:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
    source = (ROOT / path).read_text()
    lines, spans = source.splitlines(), _function_spans(source)
    equivalent = json.loads(EQUIVALENT.read_text()).get(path, {}) if EQUIVALENT.exists() else {}
    counts = {"killed": 0, "survived": 0, "timeout": 0, "no_tests": 0, "not_checked": 0,
              "other": 0}
    survivors = []
    for name, code in sorted(codes.items(), key=lambda kv: _mutant_order(kv[0])):
        status = status_by_exit_code[code]
        if status in KILLED:
            counts["killed"] += 1
            continue
        if status in ("timeout", "not checked"):
            counts[status.replace(" ", "_")] += 1
            continue
        counts[{"survived": "survived", "no tests": "no_tests"}.get(status, "other")] += 1
        with _cwd(work):
            diff = get_diff_for_mutant(name, path=path)
        fn = function_of(name)
        line, orig, mut = describe(diff, function=fn, source_lines=lines, span=spans.get(fn))
        key = f"{fn}: {orig} -> {mut}"
        survivors.append({"mutant": name, "status": status, "where": f"{path}:{line}",
                          "function": fn, "original": orig, "mutated": mut, "key": key,
                          "equivalent": equivalent.get(key)})
    total = len(codes) - counts["not_checked"]
    # "TOOL LIMIT" entries are not equivalent: mutmut cannot switch them on (code run at
    # import); their reason names the hand-planted check that covers them instead.
    n_tool = sum(1 for s in survivors if (s["equivalent"] or "").startswith("TOOL LIMIT"))
    n_eq = sum(1 for s in survivors if s["equivalent"]) - n_tool
    detected = counts["killed"] + counts["timeout"]
    return {**counts, "total": total, "equivalent": n_eq, "tool_limit": n_tool,
            "score": round(detected / total, 4) if total else None,
            "score_excluding_equivalent": (round(detected / (total - n_eq - n_tool), 4)
                                           if total > n_eq + n_tool else None),
            "unexplained_survivors": sum(1 for s in survivors if not s["equivalent"]),
            "survivors": survivors}


def _mutant_order(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("__mutmut_")
    return head, int(n) if n.isdigit() else 0


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _head_bytes(path: str) -> bytes:
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True,
                          check=False).stdout


def merge_result(path: str, entry: dict) -> None:
    """Write ``entry`` under ``modules[path]``, keeping the other modules (atomic replace)."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault("modules", {})[path] = entry
    data["tester"] = entry.get("tester")
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(RESULTS)


def run_module(path: str, *, workdir: Path, timeout: float) -> dict:
    from importlib.metadata import version

    spec = SPECS[path]
    work = workdir / module_name(path)
    globs = mutant_globs(path, spec)
    log = work / "mutmut.log"
    for attempt in range(RETRIES + 1):
        # Other sessions edit this tree and plant defects for a few seconds; a copy that
        # caught one fails mutmut's clean run: copy again a little later.
        tests = prepare(work, path, spec)
        t0 = time.monotonic()
        rc = run_mutmut(work, globs, timeout=timeout, log=log)
        seconds = round(time.monotonic() - t0, 1)
        text = log.read_text(errors="replace")
        if attempt == RETRIES or not any(m in text for m in CLEAN_RUN_FAILED):
            break
        print(f"{path}: the clean test run failed on this copy; copying again in 60 s",
              flush=True)
        time.sleep(60)
    source = (work / path).read_bytes()
    entry = {"tests": tests, "k": spec.k, "functions": list(spec.functions) or "all",
             "mutmut_rc": rc, "seconds": seconds, "commit": _commit(),
             "source_sha256": hashlib.sha256(source).hexdigest()[:16],
             "source_is_head": source == _head_bytes(path),
             "machine": f"{platform.node()} ({os.cpu_count()} cpus, shared), "
                        f"{platform.python_implementation()} {platform.python_version()}",
             "tester": f"mutmut {version('mutmut')}",
             "command": f"nice -n 10 .venv/bin/python bench/mutation.py {path}",
             "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             **collect(work, path, globs)}
    if rc not in (0, 124):
        entry["log_tail"] = log.read_text(errors="replace").splitlines()[-15:]
    if rc == 124:
        entry["note"] = f"mutmut stopped after {timeout:.0f} s; unchecked mutants not counted"
    return entry


def recount(path: str, *, workdir: Path) -> dict | None:
    """The module's recorded entry with its counts redone from the run's own results."""
    work = workdir / module_name(path)
    old = json.loads(RESULTS.read_text()).get("modules", {}).get(path) if RESULTS.exists() \
        else None
    if old is None or not (work / "mutants" / (path + ".meta")).exists():
        return None
    if (work / path).read_bytes() != (ROOT / path).read_bytes():
        print(f"{path}: note: the source changed since that run", flush=True)
    return {**old, **collect(work, path, mutant_globs(path, SPECS[path]))}


def rerun_survivors(path: str, *, workdir: Path, timeout: float) -> dict | None:
    """Run the last run's unexplained survivors again, against the current test files."""
    work = workdir / module_name(path)
    old = recount(path, workdir=workdir)
    if old is None:
        return None
    names = [s["mutant"] for s in old["survivors"] if not s["equivalent"]]
    if names:
        for t in SPECS[path].tests:  # the tests as they are now (mutmut finds new ones)
            name = t.split("::")[0]
            for dest in (work / name, work / "mutants" / name):
                shutil.copy2(ROOT / name, dest)
        rc = run_mutmut(work, names, timeout=timeout, log=work / "mutmut_survivors.log")
        old = {**old, **collect(work, path, mutant_globs(path, SPECS[path]))}
        old["survivors_rerun"] = {
            "mutants": len(names), "mutmut_rc": rc, "commit": _commit(),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
    return old


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help="module paths (default: all, in priority order)")
    p.add_argument("--list", action="store_true", help="print the modules and their tests")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/zssr_mutation"),
                   help="scratch folder for the copies mutmut mutates")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per module")
    p.add_argument("--survivors", action="store_true",
                   help="run the last run's unexplained survivors again with the current "
                        "tests (in --workdir), then recount")
    p.add_argument("--recount", action="store_true",
                   help="no new run: recount the last run's results in --workdir (after "
                        "editing the equivalence list)")
    args = p.parse_args(argv)
    if args.list:
        for path, spec in SPECS.items():
            print(f"{path}: {' '.join(spec.tests)} {spec.functions or ''}")
        return 0
    unknown = [m for m in args.modules if m not in SPECS]
    if unknown:
        p.error(f"unknown module(s) {unknown}; choose from {list(SPECS)}")
    for path in args.modules or list(SPECS):
        if args.recount or args.survivors:
            entry = (rerun_survivors(path, workdir=args.workdir, timeout=args.timeout)
                     if args.survivors else recount(path, workdir=args.workdir))
            if entry is None:
                print(f"{path}: no earlier run to recount", flush=True)
                continue
        else:
            entry = run_module(path, workdir=args.workdir, timeout=args.timeout)
        merge_result(path, entry)
        print(f"{path}: {entry.get('killed')} killed, {entry.get('timeout')} timeout, "
              f"{entry.get('survived')} survived, {entry.get('no_tests')} no tests, "
              f"{entry.get('not_checked')} not checked, "
              f"{entry.get('equivalent')} equivalent / {entry.get('total')} "
              f"(score {entry.get('score')}) in {entry['seconds']} s", flush=True)
        for s in entry.get("survivors", []):
            mark = "EQUIV" if s["equivalent"] else s["status"].upper()
            print(f"  {mark:9} {s['where']}  {s['original']}  ->  {s['mutated']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
