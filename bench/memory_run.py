"""Peak RSS of a long ``zssr run`` on a mosaicked Landsat scene, in resumable segments.

A 16 000^2 scene x2 with the full fast preset is several hours on 2 cores, more
than one sitting.  ``zssr run`` resumes by tiles (a marker per finished tile,
trained weights in the run directory), so this benchmark runs it in segments:
each call starts ``zssr run --scheduler synchronous`` (one process: its peak
RSS is the job's) under ``/usr/bin/time -v``, stops it with SIGINT after
``--budget`` seconds, and appends the segment (peak RSS, wall, tiles done,
commit) to ``--json``.  Calling it again resumes; the call that finishes the
image (finalize to COG included) records ``completed``.  The job's peak RSS is
the largest segment's: every segment is a fresh process doing the same work
(train or load weights, infer tiles, finalize), and the first trains.

    python bench/memory_run.py --size 16000 --budget 3600 --json bench/results/memory_run_16000.json
    python bench/memory_run.py --size 16000 --json bench/results/memory_run_16000.json --show

The mosaic and the run directory live under ``--work`` (default
``bench/scratch``, git-ignored) and must survive between calls: the image key
covers the input's path, size and modification time, and the config.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import STACK, build_mosaic  # noqa: E402


def _tiles_done(run_dir: Path) -> int:
    tiles = run_dir / "tiles"
    return sum(1 for _ in tiles.rglob("*.done")) if tiles.is_dir() else 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_segment(args: argparse.Namespace, mosaic: Path, run_dir: Path) -> dict:
    """One segment: ``zssr run`` until it finishes or the budget runs out (then SIGINT)."""
    cmd = ["/usr/bin/time", "-v", str(Path(sys.executable).parent / "zssr"), "run",
           str(mosaic), "--out", str(run_dir), "--scale", "2", "--preset", args.preset,
           "--scheduler", "synchronous", "--torch-threads", str(args.threads), "-q"]
    for s in args.set:
        cmd += ["--set", s]
    before, commit = _tiles_done(run_dir), _commit()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    # own session: SIGINT goes to zssr (GNU time ignores SIGINT while it waits).  SIGINT's
    # default action is restored for the child: a bench started in the background (`cmd &`
    # in a non-interactive shell) inherits SIGINT ignored, and zssr would then run on past
    # the budget (seen: 5 min of tiles after the SIGINT, then the SIGKILL below)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopped = False
    try:
        out, err = proc.communicate(timeout=args.budget)
    except subprocess.TimeoutExpired:
        stopped = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    outputs = sorted(p.name for p in (run_dir / "outputs").glob("*")) \
        if (run_dir / "outputs").is_dir() else []
    return {
        "started_utc": started, "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(m.group(1)) / 1024, 1) if m else None,
        "exit_code": proc.returncode, "stopped_by_budget": stopped,
        "tiles_done_before": before, "tiles_done_after": _tiles_done(run_dir),
        "completed": proc.returncode == 0 and not stopped and bool(outputs),
        "outputs": outputs, "commit": commit, "command": " ".join(cmd),
        "stderr_tail": err[-1500:] if proc.returncode and not stopped else "",
    }


def show(record: dict) -> None:
    print(f"{'#':>2} {'started (UTC)':<26} {'wall s':>8} {'peak RSS MB':>12} "
          f"{'tiles':>13} {'rc':>3} done")
    for i, s in enumerate(record["segments"]):
        print(f"{i:>2} {s['started_utc']:<26} {s['wall_s']:>8.0f} {s['peak_rss_mb'] or 0:>12.0f} "
              f"{s['tiles_done_before']:>6}->{s['tiles_done_after']:<6} {s['exit_code']:>3} "
              f"{'yes' if s['completed'] else 'no'}")
    rss = [s["peak_rss_mb"] for s in record["segments"] if s["peak_rss_mb"]]
    if rss:
        print(f"job peak RSS so far: {max(rss):.0f} MB; wall so far: "
              f"{sum(s['wall_s'] for s in record['segments']) / 3600:.2f} h; completed: "
              f"{any(s['completed'] for s in record['segments'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path("bench/scratch"))
    ap.add_argument("--size", type=int, required=True, help="LR scene side in pixels")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=float, default=None,
                    help="stop the segment after this many seconds (default: run to the end)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--show", action="store_true", help="print the recorded segments and exit")
    args = ap.parse_args()
    record = json.loads(args.json.read_text()) if args.json.exists() else {
        "size": args.size, "preset": args.preset, "overrides": args.set, "segments": [],
        "machine": f"{platform.machine()} {platform.processor()} x{os.cpu_count()}".strip()}
    if args.show:
        show(record)
        return
    if (record["size"], record["preset"], record["overrides"]) != (args.size, args.preset, args.set):
        raise SystemExit(f"{args.json}: recorded for size {record['size']}, preset "
                         f"{record['preset']}, overrides {record['overrides']}; use another --json")
    if any(s["completed"] for s in record["segments"]):
        show(record)
        raise SystemExit(f"{args.json}: the job already completed")
    args.work.mkdir(parents=True, exist_ok=True)
    mosaic = build_mosaic(args.data / STACK, args.size, args.work / f"landsat_mosaic_{args.size}.tif")
    run_dir = args.work / f"run_{args.size}_{args.preset}"
    seg = run_segment(args, mosaic, run_dir)
    record["segments"].append(seg)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2))
    show(record)
    if seg["exit_code"] and not seg["stopped_by_budget"]:
        raise SystemExit(f"zssr run failed (exit {seg['exit_code']}):\n{seg['stderr_tail']}")


if __name__ == "__main__":
    main()
