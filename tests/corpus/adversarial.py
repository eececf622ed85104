"""Build the adversarial corpus: what zssr does to the file system around bad requests.

    .venv/bin/python tests/corpus/adversarial.py /tmp/adv   # writes and lists the cases

The bad-input corpus (:mod:`make_corpus`) is about bad *files*.  This one is
about the paths, links, configs and signals a careless or hostile user, job
file or scheduler hands zssr (issue 20): each :class:`AdvCase` belongs to one
class (:data:`CLASSES`) and runs one of ``zssr upscale``, ``run``, ``batch`` or
``eval``.  ``build_adversarial(root, seed=0)`` writes every case under
``root/<case name>/``:

* ``in/``       the inputs (hashed before and after: no byte may change);
* ``out/``      the output folder: the only place anything may appear;
* ``outside/``  sentinels the planted links point at (``precious.png``, a folder,
  and ``created-there.png``, the target of the dangling links, which must
  never come to exist);
* ``job.yaml``  for ``zssr batch`` cases (the job file is data too).

:mod:`adv_check` runs a case and snapshots the whole case folder before and
after (links not followed).  Pixel content comes from a seeded generator; the
DICOM files are edits of committed test files.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _adv_base import CLASSES, COMMANDS, AdvCase, Builder  # noqa: E402
from adv_paths import PATH_GROUPS  # noqa: E402
from adv_requests import REQUEST_GROUPS  # noqa: E402

__all__ = ["AdvCase", "CLASSES", "COMMANDS", "build_adversarial"]

GROUPS = (*PATH_GROUPS, *REQUEST_GROUPS)


def build_adversarial(root: str | Path, *, seed: int = 0) -> list[AdvCase]:
    """Write every case under ``root`` (empty or absent); return the records."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root}: corpus folder must be empty")
    b = Builder(root, seed)
    for group in GROUPS:
        group(b)
    names = [c.name for c in b.cases]
    if len(set(names)) != len(names):
        raise ValueError("duplicate case names")
    unknown = {c.klass for c in b.cases} - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown classes {unknown}")
    return b.cases


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: adversarial.py EMPTY_FOLDER", file=sys.stderr)
        return 2
    for case in build_adversarial(argv[0]):
        print(f"{case.klass:18s} {case.name:36s} {case.command:8s} {case.expect}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
