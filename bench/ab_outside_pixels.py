"""A/B: fathers' pixels past the image border served mirrored-valid (default) or invalid.

``invalid`` patches :class:`zssr.sampling.ArrayCropSource` back to the earlier
behaviour (outside pixels excluded from the loss; fathers with fewer than
``min_valid_fraction`` valid pixels redrawn) and runs the fast preset on Set5 x2.

    OMP_NUM_THREADS=1 python bench/ab_outside_pixels.py mirror|invalid [--hr DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import zssr.sampling as sampling
from configs import resolve_config
from pipeline.image.evaluate import evaluate, summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=["mirror", "invalid"])
    ap.add_argument("--hr", type=Path, default=Path("../shared/data/sr_benchmarks/Set5/HR"))
    ap.add_argument("--preset", default="fast")
    args = ap.parse_args()
    if args.variant == "invalid":
        served = sampling.ArrayCropSource.__call__

        def call(self, window, scale=1.0):
            pix, valid = served(self, window, 1.0)
            rows = np.arange(window.row_off, window.row_off + window.height)
            cols = np.arange(window.col_off, window.col_off + window.width)
            inside = (((rows >= 0) & (rows < self.shape[0]))[:, None]
                      & ((cols >= 0) & (cols < self.shape[1]))[None, :])
            return sampling.rescale_window(pix, valid & inside, window, scale)

        sampling.ArrayCropSource.__call__ = call
    cfg, _ = resolve_config(preset=args.preset)
    rows = evaluate(args.hr, scale=2, method="zssr", config=cfg)
    for r in rows:
        print(f"{args.variant} {r.image} {r.psnr_y:.3f}", flush=True)
    print(f"{args.variant} mean {summarize(rows)['mean']['psnr_y']:.3f}")


if __name__ == "__main__":
    main()
