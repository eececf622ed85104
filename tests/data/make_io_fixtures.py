"""Write the small image fixtures of the io_adapters tests into tests/data/io/.

Crops of real files from /work/shared/data (see its README for provenance);
every derived value is seeded, so running this again gives identical files::

    .venv/bin/python tests/data/make_io_fixtures.py [/path/to/shared/data]

* ``geotiff/rgb_byte_96x128.tif``: window (row 96, col 96, 96 x 128) of rasterio's
  ``RGB.byte.tif`` -- uint8 x 3, EPSG:32618, nodata 0, 23 % nodata, and 157
  pixels that are 0 in some bands only; CRS, window transform, colour
  interpretation and tags kept, striped and uncompressed like the source.
* ``geotiff/landsat_64x80.tif``: window (row 100, col 0, 64 x 80) of the Landsat 8
  B2-B5 stack -- uint16 x 4, EPSG:32620, nodata 0 (53 % nodata), band
  descriptions and tags kept, 32 x 32 tiles, DEFLATE.
* ``geotiff/landsat_192x192.tif``: window (row 97, col 78, 192 x 192) of the same
  stack, every pixel valid in every band (HR for the per-band-group kernel tests);
  the same metadata kept, 64 x 64 tiles, DEFLATE.
* ``plain/butterfly_48x64.png``: Set5 HR butterfly crop [60:108, 70:134], RGB 8-bit.
* ``plain/bridge_40x48.png``: Set14 HR bridge crop [100:140, 200:248], gray 8-bit.
* ``plain/bird_rgba_48x64.png``: Set5 HR bird crop [100:148, 90:154] plus an alpha
  channel: a left-to-right ramp 0..255 with the first 8 columns 0 (transparent).
* ``plain/butterfly16_48x64.png``: the butterfly crop as RGB uint16,
  ``v * 257 + noise`` with seeded noise in [0, 257) (so ``value // 257 == v``),
  written with GDAL (Pillow cannot write 16-bit colour PNG).
* ``plain/t4.bmp``: unmodified copy of T91 ``t4.bmp`` (211 x 300 RGB BMP).
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

OUT = Path(__file__).resolve().parent / "io"


def crop_geotiff(src: Path, dst: Path, window: Window, **creation: object) -> None:
    """Copy ``window`` of ``src`` keeping CRS, window transform, nodata and band metadata."""
    with rasterio.open(src) as ds:
        profile = {"driver": "GTiff", "width": int(window.width),
                   "height": int(window.height), "count": ds.count, "dtype": ds.dtypes[0],
                   "crs": ds.crs, "transform": ds.window_transform(window),
                   "nodata": ds.nodata, **creation}
        if ds.colorinterp[:3] == tuple(rasterio.enums.ColorInterp[c]
                                       for c in ("red", "green", "blue")):
            profile["photometric"] = "RGB"
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
            out.colorinterp = ds.colorinterp
            for i, desc in enumerate(ds.descriptions, start=1):
                if desc:
                    out.set_band_description(i, desc)
            out.update_tags(**ds.tags())


def crop_png(src: Path, rows: slice, cols: slice) -> np.ndarray:
    return np.asarray(Image.open(src))[rows, cols]


def main(shared: Path) -> None:
    (OUT / "geotiff").mkdir(parents=True, exist_ok=True)
    (OUT / "plain").mkdir(parents=True, exist_ok=True)
    geo = shared / "geotiff"
    with rasterio.Env(GDAL_PAM_ENABLED=False):
        crop_geotiff(geo / "RGB.byte.tif", OUT / "geotiff" / "rgb_byte_96x128.tif",
                     Window(96, 96, 128, 96))
        crop_geotiff(geo / "landsat8_LC08_L2SP_001062_20201031_SR_B2-B5_stack.tif",
                     OUT / "geotiff" / "landsat_64x80.tif", Window(0, 100, 80, 64),
                     tiled=True, blockxsize=32, blockysize=32, compress="deflate",
                     predictor=2)
        crop_geotiff(geo / "landsat8_LC08_L2SP_001062_20201031_SR_B2-B5_stack.tif",
                     OUT / "geotiff" / "landsat_192x192.tif", Window(78, 97, 192, 192),
                     tiled=True, blockxsize=64, blockysize=64, compress="deflate",
                     predictor=2)

    hr = shared / "sr_benchmarks"
    butterfly = crop_png(hr / "Set5" / "HR" / "butterfly.png", slice(60, 108), slice(70, 134))
    Image.fromarray(butterfly).save(OUT / "plain" / "butterfly_48x64.png")
    bridge = crop_png(hr / "Set14" / "HR" / "bridge.png", slice(100, 140), slice(200, 248))
    Image.fromarray(bridge).save(OUT / "plain" / "bridge_40x48.png")
    bird = crop_png(hr / "Set5" / "HR" / "bird.png", slice(100, 148), slice(90, 154))
    alpha = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    alpha[:, :8] = 0
    Image.fromarray(np.dstack([bird, alpha]), mode="RGBA").save(
        OUT / "plain" / "bird_rgba_48x64.png")

    rng = np.random.default_rng(20240601)
    wide = butterfly.astype(np.uint16) * 257 + rng.integers(0, 257, butterfly.shape,
                                                            dtype=np.uint16)
    with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED=False):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(OUT / "plain" / "butterfly16_48x64.png", "w", driver="PNG",
                           width=64, height=48, count=3, dtype="uint16") as out:
            out.write(wide.transpose(2, 0, 1))
    shutil.copyfile(shared / "plain_images" / "T91" / "t4.bmp", OUT / "plain" / "t4.bmp")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data"))
