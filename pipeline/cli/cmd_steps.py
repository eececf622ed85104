"""``zssr steps``: list the preprocessing steps a chain may use, with their parameters.

Steps go in a preset, a ``--config`` file or a job spec, before SR (``pre:``)
or after it (``post:``)::

    chain:
      pre:
        - modality_lut
        - clip: {min: -1024, max: 3071}
      post:
        - clip_to_input

A user function is named by dotted path (``- mypkg.filters:despeckle: {k: 3}``)
and called as ``function(array, masks, meta, **params)``; installed packages
may publish steps in the entry-point group ``zssr.steps``.
"""

from __future__ import annotations

import argparse
import json

from pipeline.steps.registry import describe_steps


def add_parser(sub, parents) -> None:
    p = sub.add_parser("steps", parents=parents, help="list the preprocessing chain steps",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def format_steps(records: list[dict]) -> str:
    """The human-readable listing (one block per step)."""
    lines = []
    for r in records:
        kind = "pointwise" if r["pointwise"] else "spatial (radius from its parameters)"
        if r["pointwise"] is None:
            kind = "declared by the package"
        inverse = "exact inverse" if r["exact_inverse"] else "no inverse (stays applied)"
        lines.append(f"{r['name']}  [{kind}; {inverse}; {r['source']}]")
        lines.append(f"    {r['summary']}")
        for p in r["params"]:
            default = json.dumps(list(p["default"]) if isinstance(p["default"], tuple)
                                 else p["default"])
            lines.append(f"    {p['name']}: {p['type']} = {default}  -- {p['doc']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def run(args: argparse.Namespace) -> int:
    records = describe_steps()
    if args.json:
        print(json.dumps(records, indent=1, default=list))
    else:
        print(format_steps(records), end="")
    return 0
