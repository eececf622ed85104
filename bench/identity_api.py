"""Fingerprints of ``super_resolve`` (the in-memory driver) across a refactor (issue 15).

``super_resolve`` walks the engine's one step list (:func:`zssr.sr_steps.sr_steps`); this
pins what it returns for every form of that list — one jump, ``scale_steps`` (with a mask,
and with ``reinit_each_step``), the official ``gradual_steps`` (with a mask and per-step
back-projection rounds, and without) — and for a warm start from each case's weights: the
sha256 of the output, of the final weights and of the loss curve.  Tiny nets, seconds.

    .venv/bin/python bench/identity_api.py --json bench/results/identity_api_before.json
    .venv/bin/python bench/identity_api.py --json /tmp/after.json --compare bench/results/identity_api_before.json

``--compare`` exits 1 and names every fingerprint that changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = {"train": {"max_iters": 6, "crop_size": 16}, "net": {"depth": 3, "width": 4}}
CASES = {  # name -> (config keys beside BASE, whether the image gets a nodata mask)
    "one": ({}, False),
    "steps": ({"scale_steps": [1.5, 2.0]}, True),
    "steps_reinit": ({"scale_steps": [1.5, 2.0], "reinit_each_step": True}, False),
    "gradual": ({"gradual_steps": [[1.0, 1.5], [1.5, 1.5], [1.5, 2.0], [2.0, 2.0]],
                 "gradual_back_projection_iters": [1, 2, 3, 4]}, True),
    "gradual_plain": ({"gradual_steps": [[1.5, 1.5], [2.0, 2.0]]}, False),
}


def _sha(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.dtype, a.shape)).encode() + a.tobytes()).hexdigest()


def run_all() -> dict:
    import torch

    from zssr import config_from_dict, super_resolve

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    img = (rng.random((3, 30, 26)) * 255).astype(np.uint8)
    mask = np.ones((30, 26), bool)
    mask[:5, :7] = False
    out = {}
    for name, (extra, masked) in CASES.items():
        cfg = config_from_dict({**BASE, **extra})
        kw = {"mask": mask} if masked else {}
        state: dict = {}
        sr, hist = super_resolve(img, scale=2, config=cfg, seed=3, state_out=state, **kw)
        weights = np.concatenate([v.flatten().numpy() for v in state.values()])
        warm, _ = super_resolve(img, scale=2, config=cfg, seed=3, init_state=state, **kw)
        out[name] = {"output": _sha(sr), "weights": _sha(weights),
                     "losses": _sha(np.asarray(hist.losses)), "iterations": hist.iterations,
                     "warm_output": _sha(warm)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--compare", type=Path, default=None, help="earlier JSON to compare with")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "command": " ".join(["identity_api.py", *(argv or sys.argv[1:])]),
              "results": run_all()}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())["results"]
    changed = [f"{case}/{key}" for case, fp in result["results"].items()
               for key, value in fp.items() if before.get(case, {}).get(key) != value]
    for c in changed:
        print("CHANGED", c)
    print(f"{len(changed)} differ" if changed else "all identical")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
