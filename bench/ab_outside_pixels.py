"""A/B (historical): fathers' pixels past the image border marked invalid vs mirrored-valid.

Run at commit "Crop sources serve the mirror-extended image" minus one, where
ArrayCropSource marked outside pixels invalid; ``mirror`` patches it to the
behaviour that is now the default.  Usage: python bench/ab_outside_pixels.py mirror|invalid
"""

import sys, numpy as np, torch
import zssr.sampling as S
from configs import resolve_config
from pipeline.evaluate import evaluate, summarize
variant = sys.argv[1]
if variant == "mirror":
    orig = S.ArrayCropSource.__call__
    def call(self, window, scale=1.0):
        pix, valid = orig(self, window, scale)
        return pix, np.ones_like(valid)
    S.ArrayCropSource.__call__ = call
cfg, _ = resolve_config(preset="fast")
rows = evaluate(__import__('pathlib').Path('/work/shared/data/sr_benchmarks/Set5/HR'), scale=2, method="zssr", config=cfg)
for r in rows: print(variant, r.image, round(r.psnr_y, 3), flush=True)
print(variant, "mean", round(summarize(rows)["mean"]["psnr_y"], 3))
