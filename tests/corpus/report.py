"""Print the README's Reliability table: the corpus through ``zssr upscale``.

    .venv/bin/python tests/corpus/report.py            # markdown table on stdout
    .venv/bin/python tests/corpus/report.py --json r.json --keep /tmp/corpus

Builds the corpus in a temporary folder (or ``--keep DIR``), runs every case
in this process through :func:`pipeline.cli.main` and counts: cases tried,
outcomes by error class (exit code), cases whose outcome differs from the
expected one, partial or lost outputs and changed inputs (both must be 0).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--keep", type=Path, default=None, help="build the corpus here (empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-batch", action="store_true", help="skip the `zssr run` batch")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zssr-corpus-") as tmp:
        root = args.keep or Path(tmp) / "cases"
        t0 = time.perf_counter()
        cases = build_corpus(root, seed=args.seed)
        outcomes = [run_case(case, timeout=60.0) for case in cases]
        summary = summarize(outcomes)
        if not args.no_batch:
            summary["batch"] = summarize_batch(run_batch(cases, Path(tmp) / "batch", tiny=TINY))
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(summary))
    if summary["unexpected"]:
        print("\nunexpected: " + ", ".join(summary["unexpected"]), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    bad = summary["unexpected"] or summary["partial_outputs_left"] or summary[
        "outputs_lost"] or summary["inputs_changed"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
