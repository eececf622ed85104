"""Print the README's Reliability tables: the bad-input and the adversarial corpus.

    .venv/bin/python tests/corpus/report.py            # markdown tables on stdout
    .venv/bin/python tests/corpus/report.py --json r.json --keep /tmp/corpus

Builds the corpora in a temporary folder (or ``--keep DIR``) and runs every case
through the real CLI.  Bad-input corpus (``zssr upscale``, then one ``zssr run``):
cases tried, outcomes by error class (exit code), cases whose outcome differs from
the expected one, partial or lost outputs and changed inputs (both must be 0).
Adversarial corpus (:mod:`adversarial`, every command): cases per class and
command, outcomes by exit code, and the cases with an unexpected outcome, a
changed input, a write outside the output folder, a touched link target or a
replaced link, a partial output (after SIGTERM/SIGHUP too) or a traceback (all 0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
from adv_check import AdvOutcome, problems, run_adv, run_signalled  # noqa: E402
from adversarial import CLASSES, COMMANDS, build_adversarial  # noqa: E402
from check import BatchOutcome, Outcome, run_batch, run_case  # noqa: E402
from make_corpus import TINY, build_corpus  # noqa: E402

from pipeline.errors import EXIT  # noqa: E402

CLASS_OF = {code: name for name, code in EXIT.items()}


def _as_expected(o: Outcome) -> bool:
    c = o.case
    if o.code != EXIT[c.expect] or any("Traceback" in line for line in o.stderr):
        return False
    if c.expect == "ok":
        return not o.stderr and not o.missing_outputs
    return len(o.stderr) == 1 and bool(o.error_lines) and bool(
        re.search(c.message, o.error_lines[0].split(": error: ", 1)[1]))


def summarize(outcomes: list[Outcome]) -> dict:
    by_class = Counter(o.code for o in outcomes)
    return {
        "cases": len(outcomes),
        "by_exit_code": {f"{code} {CLASS_OF.get(code, '?')}": n
                         for code, n in sorted(by_class.items())},
        "unexpected": [o.case.name for o in outcomes if not _as_expected(o)],
        "partial_outputs_left": sum(len(o.leftovers) for o in outcomes),
        "outputs_lost": sum(len(o.lost_outputs) for o in outcomes),
        "inputs_changed": sum(len(o.changed_inputs) for o in outcomes),
        "slowest_s": round(max(o.seconds for o in outcomes), 2),
        "total_s": round(sum(o.seconds for o in outcomes), 1),
    }


def summarize_batch(b: BatchOutcome) -> dict:
    return {"exit_code": b.code, "good_completed": f"{b.good_completed}/{len(b.good)}",
            "bad_recorded_failed": f"{sum(any(str(p) in k for k in b.failed) for p in b.bad)}"
                                   f"/{len(b.bad)}",
            "partial_outputs_left": len([o for o in b.outputs if not o.startswith("good")]),
            "inputs_changed": len(b.changed_inputs), "seconds": round(b.seconds, 1)}


def markdown(s: dict) -> str:
    classes = ", ".join(f"{k}: {v}" for k, v in s["by_exit_code"].items())
    rows = [
        ("Cases tried (`zssr upscale`, bad-input corpus)", s["cases"]),
        ("Outcomes by exit code / class", classes),
        ("Outcome other than expected (code, one-line message, no traceback)",
         len(s["unexpected"])),
        ("Partial outputs left behind", s["partial_outputs_left"]),
        ("Existing outputs lost or changed", s["outputs_lost"]),
        ("Inputs changed (sha256 before/after)", s["inputs_changed"]),
        ("Slowest case / all cases (s)", f"{s['slowest_s']} / {s['total_s']}"),
    ]
    if "batch" in s:
        b = s["batch"]
        rows.append(("Same bad inputs in one `zssr run` with 2 good images",
                     f"exit {b['exit_code']}; good completed {b['good_completed']}; bad "
                     f"recorded as failed {b['bad_recorded_failed']}; partial outputs "
                     f"{b['partial_outputs_left']}; inputs changed {b['inputs_changed']}"))
    lines = ["| Reliability check | Result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _codes(counter: Counter) -> str:
    return ", ".join(f"{code} {CLASS_OF.get(code, '?')}: {n}"
                     for code, n in sorted(counter.items()))


def summarize_adversarial(outcomes: list[AdvOutcome]) -> dict:
    def cases_with(attr: str) -> int:
        return sum(bool(getattr(o, attr)) for o in outcomes)

    signalled = [o for o in outcomes if o.case.stop is not None]
    return {
        "cases": len(outcomes),
        "by_command": {c: sum(o.case.command == c for o in outcomes) for c in COMMANDS},
        "by_class": {k: {"commands": {c: sum(o.case.command == c for o in outcomes
                                             if o.case.klass == k) for c in COMMANDS},
                         "by_exit_code": _codes(Counter(o.code for o in outcomes
                                                        if o.case.klass == k))}
                     for k in CLASSES},
        "by_exit_code": _codes(Counter(o.code for o in outcomes)),
        "unexpected": [o.case.name for o in outcomes if problems(o)],
        "inputs_changed": cases_with("inputs_changed"),
        "written_outside": cases_with("written_outside"),
        "link_targets_touched": cases_with("link_targets_touched"),
        "links_replaced": cases_with("links_replaced"),
        "partial_left": cases_with("leftovers"),
        "signalled": len(signalled),
        "partial_left_after_signal": sum(bool(o.leftovers) for o in signalled),
        "tracebacks": sum(o.traceback for o in outcomes),
        "slowest_s": round(max(o.seconds for o in outcomes), 2),
        "total_s": round(sum(o.seconds for o in outcomes
                             if o.case.stop is None) + max(
            (o.seconds for o in signalled), default=0.0), 1),
    }


def markdown_adversarial(s: dict) -> str:
    lines = ["| Adversarial class | " + " | ".join(f"`{c}`" for c in COMMANDS)
             + " | Outcomes by exit code |", "|---|" + "---:|" * len(COMMANDS) + "---|"]
    for klass, row in s["by_class"].items():
        counts = " | ".join(str(row["commands"][c] or "") for c in COMMANDS)
        lines.append(f"| {klass}: {CLASSES[klass]} | {counts} | {row['by_exit_code']} |")
    by_cmd = " / ".join(str(s["by_command"][c]) for c in COMMANDS)
    rows = [
        (f"Cases tried ({len(s['by_class'])} classes; {' / '.join(COMMANDS)})",
         f"{s['cases']} ({by_cmd})"),
        ("Outcomes by exit code / class", s["by_exit_code"]),
        ("Outcome other than expected (exit code, one error line or FAILED line)",
         len(s["unexpected"])),
        ("Cases with an input byte changed (sha256 of every input)", s["inputs_changed"]),
        ("Cases that wrote outside the output folder", s["written_outside"]),
        ("Cases that touched a link target / replaced a planted link",
         f"{s['link_targets_touched']} / {s['links_replaced']}"),
        ("Cases leaving a partial or temporary output", s["partial_left"]),
        (f"... of them after SIGTERM / SIGHUP mid-write ({s['signalled']} cases)",
         s["partial_left_after_signal"]),
        ("Tracebacks on stderr", s["tracebacks"]),
        ("Slowest case / all cases (s; signalled cases side by side)",
         f"{s['slowest_s']} / {s['total_s']}"),
    ]
    lines += ["", "| Adversarial check | Result |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def run_adversarial(root: Path, *, seed: int) -> list[AdvOutcome]:
    cases = build_adversarial(root, seed=seed)
    outcomes = {c.name: run_adv(c) for c in cases if c.stop is None}
    outcomes.update((o.case.name, o) for o in run_signalled([c for c in cases if c.stop]))
    return [outcomes[c.name] for c in cases]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--keep", type=Path, default=None, help="build the corpus here (empty; the adversarial one beside it, "
                        "DIR-adversarial)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-batch", action="store_true", help="skip the `zssr run` batch")
    parser.add_argument("--no-adversarial", action="store_true",
                        help="skip the adversarial corpus")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zssr-corpus-") as tmp:
        root = args.keep or Path(tmp) / "cases"
        t0 = time.perf_counter()
        cases = build_corpus(root, seed=args.seed)
        outcomes = [run_case(case, timeout=60.0) for case in cases]
        summary = summarize(outcomes)
        if not args.no_batch:
            summary["batch"] = summarize_batch(run_batch(cases, Path(tmp) / "batch", tiny=TINY))
        if not args.no_adversarial:
            summary["adversarial"] = summarize_adversarial(
                run_adversarial(root.with_name(root.name + "-adversarial"), seed=args.seed))
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(summary))
    adv = summary.get("adversarial")
    if adv:
        print("\n" + markdown_adversarial(adv))
    unexpected = summary["unexpected"] + (adv["unexpected"] if adv else [])
    if unexpected:
        print("\nunexpected: " + ", ".join(unexpected), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    bad = unexpected or summary["partial_outputs_left"] or summary["outputs_lost"] or summary[
        "inputs_changed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
