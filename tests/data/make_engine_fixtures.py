"""Write the small real-image crops used by the engine tests (run once; outputs committed).

Sources (see ../../../shared/data/README.md for provenance):
  Set5/HR/butterfly.png, Set14/HR/bridge.png (grayscale), Set5/HR/bird.png.
Usage: python tests/data/make_engine_fixtures.py /path/to/shared/data
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent / "engine"


def main(shared: Path) -> None:
    OUT.mkdir(exist_ok=True)
    bench = shared / "sr_benchmarks"
    rgb = np.asarray(Image.open(bench / "Set5/HR/butterfly.png").convert("RGB"))
    Image.fromarray(rgb[60:124, 70:134]).save(OUT / "butterfly_64.png")  # 64x64 RGB
    gray = np.asarray(Image.open(bench / "Set14/HR/bridge.png"))
    gray = gray if gray.ndim == 2 else gray[..., 0]
    Image.fromarray(gray[100:147, 200:253]).save(OUT / "bridge_47x53.png")  # odd-size gray
    bird = np.asarray(Image.open(bench / "Set5/HR/bird.png").convert("RGB"))
    rgba = np.dstack([bird[100:148, 90:150], np.linspace(0, 255, 60, dtype=np.uint8)[None].repeat(48, 0)])
    Image.fromarray(rgba, "RGBA").save(OUT / "bird_rgba_48x60.png")
    # 16-bit: real 8-bit pixels scaled to the 16-bit range plus seeded sub-LSB detail
    rng = np.random.default_rng(16)
    g16 = gray[100:147, 200:253].astype(np.uint32) * 257 + rng.integers(0, 257, (47, 53))
    Image.fromarray(np.clip(g16, 0, 65535).astype(np.uint16)).save(OUT / "bridge16_47x53.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared/data")
