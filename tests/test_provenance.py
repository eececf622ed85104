"""Provenance and conventions in every output (issue 17, item 5).

* A COG output carries software, version, source, scale, kernel and the resolved
  config (with its SHA-256, recomputed here from the recorded JSON) as dataset tags
  that ``rio info --tags`` (a separate process, rasterio's own CLI) prints; per-band
  tags (BANDNAME, WAVELENGTH) and descriptions are kept; tags of an earlier zssr run
  found on the input are not passed off as this output's.
* A geo Zarr output is CF: ``xarray.open_zarr`` decodes reflectance to the same
  values, coordinates and CRS that ``rioxarray.open_rasterio(mask_and_scale=True)``
  gives for the source GeoTIFF, and to ``DN * scale + offset`` computed with numpy;
  ``spatial_ref`` has pyproj's ``grid_mapping_name`` and x/y their ``standard_name``
  and ``units``.

The reflectance fixture is the committed Landsat 8 OLI stack
(``tests/data/io/geotiff/landsat_64x80.tif``, Collection 2 Level-2 SR DNs) with the
Collection 2 SR scale 2.75e-5 and offset -0.2 and the OLI band centres (um) of the
USGS Landsat 8 data users handbook attached here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr

from io_adapters.cog import CogWriter
from io_adapters.geotiff import GeoTiffReader
from io_adapters.provenance import Provenance
from io_adapters.zarr_store import ZarrWriter
from pipeline.catalog.provenance import config_sha256, with_provenance
from pipeline.image.job import ImageJob
from pipeline.image.upscale import upscale_file
from zssr import __version__
from zssr.config import config_from_dict

LANDSAT = Path(__file__).parent / "data" / "io" / "geotiff" / "landsat_64x80.tif"
RIO = Path(sys.executable).with_name("rio")
SCALE, OFFSET = 2.75e-05, -0.2
BANDS = (("SR_B2", "0.482"), ("SR_B3", "0.561"), ("SR_B4", "0.655"), ("SR_B5", "0.865"))
TINY = config_from_dict({"train": {"max_iters": 2, "crop_size": 16},
                         "net": {"depth": 3, "width": 4},
                         "infer": {"back_projection_iters": 0}})
PROV = Provenance(software="zssr-pipeline", version="9.9", source="s3://b/scene.tif",
                  scale="2", kernel="bicubic", config_sha256="ab" * 32,
                  config={"net": {"depth": 3}})


@pytest.fixture
def reflectance(tmp_path: Path) -> Path:
    """The Landsat stack as reflectance: band scale/offset/units and per-band tags, and a
    stale ``ZSSR_SOURCE`` tag as an earlier zssr output would carry."""
    src = tmp_path / "refl.tif"
    with rasterio.open(LANDSAT) as ds:
        profile, data, names = ds.profile, ds.read(), ds.descriptions
        tags = ds.tags()
    profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags, ZSSR_SOURCE="an-earlier-input.tif")
        dst.scales, dst.offsets, dst.units = (SCALE,) * 4, (OFFSET,) * 4, ("1",) * 4
        for i, (name, wl) in enumerate(BANDS, start=1):
            dst.set_band_description(i, names[i - 1])
            dst.update_tags(i, BANDNAME=name, WAVELENGTH=wl, WAVELENGTH_UNITS="micrometers")
    return src


def _rio_tags(path: Path) -> dict:
    out = subprocess.run([str(RIO), "info", "--tags", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def _copy(src: Path, writer_cls, out: Path, **options) -> Path:
    reader = GeoTiffReader(src)
    with writer_cls(out, reader.meta, **options) as writer:
        writer.write(reader.read(), rasterio.windows.Window(0, 0, reader.meta.cols,
                                                            reader.meta.rows),
                     mask=reader.read_masks())
    reader.close()
    return out


def test_cog_tags_are_read_back_by_rio_info(reflectance: Path, tmp_path: Path) -> None:
    out = _copy(reflectance, CogWriter, tmp_path / "out.tif", provenance=PROV)
    tags = _rio_tags(out)
    assert tags["ZSSR_SOFTWARE"] == "zssr-pipeline" and tags["ZSSR_VERSION"] == "9.9"
    assert tags["TIFFTAG_SOFTWARE"] == "zssr-pipeline 9.9"
    assert tags["ZSSR_SOURCE"] == "s3://b/scene.tif"  # not the input's stale tag
    assert (tags["ZSSR_SCALE"], tags["ZSSR_KERNEL"]) == ("2", "bicubic")
    assert tags["ZSSR_CONFIG_SHA256"] == "ab" * 32
    assert json.loads(tags["ZSSR_CONFIG"]) == {"net": {"depth": 3}}
    assert tags["PRODUCT"].startswith("Landsat 8 OLI")  # the input's own tags stay
    with rasterio.open(out) as ds:  # rio info prints dataset tags only
        for i, (name, wl) in enumerate(BANDS, start=1):
            assert (ds.tags(i)["BANDNAME"], ds.tags(i)["WAVELENGTH"]) == (name, wl)
        assert ds.descriptions == ("SR_B2 blue", "SR_B3 green", "SR_B4 red", "SR_B5 nir")
        assert ds.scales == (SCALE,) * 4 and ds.units == ("1",) * 4


def test_cog_without_provenance_drops_the_inputs_zssr_tags(reflectance: Path,
                                                           tmp_path: Path) -> None:
    with rasterio.open(_copy(reflectance, CogWriter, tmp_path / "out.tif")) as ds:
        tags = ds.tags()
    assert not [k for k in tags if k.startswith("ZSSR_")]
    assert "AREA_OR_POINT" in tags


def test_zarr_is_cf_and_decodes_like_rioxarray(reflectance: Path, tmp_path: Path) -> None:
    out = _copy(reflectance, ZarrWriter, tmp_path / "out.zarr", chunks=(32, 32),
                provenance=PROV)
    ds = xr.open_zarr(out)
    ref = rioxarray.open_rasterio(reflectance, mask_and_scale=True)
    got = ds.band_data
    assert got.dtype.kind == "f"
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-6, equal_nan=True)
    with rasterio.open(reflectance) as src:  # the decoding rule computed independently
        dn = src.read().astype(np.float64)
    expected = np.where(dn == 0, np.nan, dn * SCALE + OFFSET)
    np.testing.assert_allclose(got.values, expected, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ds.x.values, ref.x.values, rtol=0, atol=1e-6)  # 1 ulp apart
    np.testing.assert_allclose(ds.y.values, ref.y.values, rtol=0, atol=1e-6)
    assert got.rio.crs == ref.rio.crs and got.rio.transform() == ref.rio.transform()
    assert got.attrs["units"] == "1"
    assert ds.spatial_ref.attrs["grid_mapping_name"] == "transverse_mercator"
    assert ds.spatial_ref.attrs["longitude_of_central_meridian"] == -63.0  # UTM 20N
    for axis in "xy":
        assert ds[axis].attrs["standard_name"] == f"projection_{axis}_coordinate"
        assert ds[axis].attrs["units"] == "metre"
    assert ds.attrs["Conventions"].startswith("CF-")
    assert ds.attrs["provenance"]["source"] == "s3://b/scene.tif"
    assert ds.attrs["provenance"]["config"] == {"net": {"depth": 3}}


def test_upscale_records_provenance(reflectance: Path,
                                                    tmp_path: Path) -> None:
    job = with_provenance(ImageJob(input=reflectance, output=tmp_path / "sr.tif", scale=2.0,
                                   config=TINY, tile=32))
    upscale_file(job)
    zarr_job = with_provenance(replace(job, output=tmp_path / "sr.zarr"))
    assert zarr_job.writer_options["provenance"] == job.writer_options["provenance"]
    tags = _rio_tags(tmp_path / "sr.tif")
    recorded = tags["ZSSR_CONFIG"]
    assert tags["ZSSR_CONFIG_SHA256"] == hashlib.sha256(recorded.encode()).hexdigest()
    assert tags["ZSSR_CONFIG_SHA256"] == config_sha256(TINY)
    assert json.loads(recorded)["net"] == {"depth": 3, "width": 4, "kernel_size": 3,
                                           "init_variance": 0.1}
    assert (tags["ZSSR_VERSION"], tags["ZSSR_SCALE"]) == (__version__, "2")
    assert tags["ZSSR_SOURCE"] == str(reflectance)
    with rasterio.open(tmp_path / "sr.tif") as sr:
        assert [sr.tags(i)["BANDNAME"] for i in (1, 2, 3, 4)] == [b for b, _ in BANDS]


def test_png_jobs_are_left_alone(tmp_path: Path) -> None:
    job = ImageJob(input=LANDSAT, output=tmp_path / "x.png", scale=2.0)
    assert with_provenance(job) is job
