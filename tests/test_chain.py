"""Chains: ChainReader/ChainWriter contracts, tiled exactness, round trips, config errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from io_adapters.base import Reader, Writer
from io_adapters.detect import open_reader, scale_metadata
from io_adapters.errors import InvalidDataError
from pipeline.image.job import ImageJob, open_output
from pipeline.image.upscale import upscale_file
from pipeline.steps.chain import ChainReader, ChainSpec, bind_chain
from zssr.config import ConfigError, config_from_dict

DATA = Path(__file__).resolve().parent / "data"
LANDSAT = DATA / "io" / "geotiff" / "landsat_64x80.tif"
CT = DATA / "dicom" / "CT_small.dcm"
RGBA = DATA / "io" / "plain" / "bird_rgba_48x64.png"

S2 = {"pre": [{"mask_nodata": {"value": 0}},
              {"reflectance": {"scale": 0.0001, "offset": -0.1}}],
      "post": ["clip_to_input"]}
DENOISE = {"pre": [{"reflectance": {"scale": 0.0001, "offset": -0.1}},
                   {"denoise": {"method": "gaussian", "sigma": 1.0}},
                   {"denoise": {"method": "median", "size": 3}}]}


def test_chain_spec_round_trip_and_radius():
    spec = ChainSpec.from_config(DENOISE)
    assert spec.radius == 4 + 1 and bool(spec)
    assert ChainSpec.from_config(spec.to_config()) == spec
    assert not ChainSpec.from_config(None)


@pytest.mark.parametrize("data, match", [
    ([1], r"chain: expected a mapping with 'pre' and/or 'post'"),
    ({"pre": [], "after": []}, r"chain: unknown key 'after'; allowed keys: pre, post"),
    ({"pre": "clip"}, r"chain.pre: expected a list of steps"),
    ({"post": [{"denoise": {}}]}, r"chain.post: step 'denoise' has a spatial radius \(4 px\)"),
])
def test_chain_spec_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        ChainSpec.from_config(data)


def test_chain_reader_follows_the_reader_contract():
    with ChainReader(open_reader(LANDSAT), ChainSpec.from_config(S2)) as reader:
        assert isinstance(reader, Reader)
        meta = reader.meta
        assert meta.dtype == np.float32 and meta.bands == 4
        assert meta.nodata == pytest.approx(-0.1) and reader.chain.source_meta.dtype == np.uint16
        win = Window(10, 5, 20, 30)
        a = reader.read(win)
        assert a.shape == (4, 30, 20) and a.dtype == np.float32
        assert np.array_equal(reader.read(win, bands=[2]), a[[2]])
        masks = reader.read_masks(win)
        assert np.array_equal(reader.read_mask(win), masks.all(axis=0))
        assert reader.radius == 0 and "reflectance" in repr(reader)
        again = pickle.loads(pickle.dumps(reader))
        assert np.array_equal(again.read(win), a)
        again.close()


def test_spatial_steps_tiles_equal_the_whole_image():
    """A window read through denoising steps equals the same pixels of the whole image."""
    with ChainReader(open_reader(LANDSAT), ChainSpec.from_config(DENOISE)) as reader:
        assert reader.radius == 5
        whole, whole_masks = reader.read(), reader.read_masks()
        rows, cols = reader.meta.rows, reader.meta.cols
        for r0, c0, h, w in [(10, 12, 17, 23), (0, 0, 9, 9), (55, 70, 9, 10), (-3, -4, 12, 9),
                             (60, 75, 10, 10), (-1, 0, 66, 81), (3, 79, 1, 1)]:
            a = reader.read(Window(c0, r0, w, h))
            m = reader.read_masks(Window(c0, r0, w, h))
            y0, x0 = max(r0, 0), max(c0, 0)
            y1, x1 = min(r0 + h, rows), min(c0 + w, cols)
            inside = np.s_[:, y0 - r0:y1 - r0, x0 - c0:x1 - c0]
            assert np.array_equal(a[inside], whole[:, y0:y1, x0:x1]), (r0, c0, h, w)
            assert np.array_equal(m[inside], whole_masks[:, y0:y1, x0:x1])
            outside = np.ones(a.shape, bool)
            outside[inside] = False
            assert not m[outside].any()
        empty = reader.read_masks(Window(200, 200, 4, 4))
        assert empty.shape == (4, 4, 4) and not empty.any()


def test_chain_writer_restores_units_dtype_and_nodata(tmp_path):
    """Chain units -> ChainWriter -> file: the input's DN exactly (nearest x2 'SR')."""
    reader = ChainReader(open_reader(LANDSAT), ChainSpec.from_config(S2))
    hr_meta = scale_metadata(reader.meta, 2)
    job = ImageJob(input=LANDSAT, output=tmp_path / "out.tif", scale=2.0)
    work, masks = reader.read(), reader.read_masks()
    up = np.repeat(np.repeat(work, 2, axis=1), 2, axis=2)
    up_masks = np.repeat(np.repeat(masks, 2, axis=1), 2, axis=2)
    with open_output(job, hr_meta, chain=reader.chain) as writer:
        assert isinstance(writer, Writer)
        writer.write(up, Window(0, 0, hr_meta.cols, hr_meta.rows), mask=up_masks)
    reader.close()
    src, _, _ = (lambda r: (r.read(), r.read_masks(), r.close()))(open_reader(LANDSAT))
    with open_reader(tmp_path / "out.tif") as out:
        assert out.meta.dtype == np.uint16 and out.meta.nodata == 0
        assert np.array_equal(out.read(), np.repeat(np.repeat(src, 2, axis=1), 2, axis=2))


def test_chain_writer_abort_leaves_nothing(tmp_path):
    reader = ChainReader(open_reader(CT), ChainSpec.from_config({"pre": ["modality_lut"]}))
    job = ImageJob(input=CT, output=tmp_path / "ct.dcm", scale=2.0)
    with pytest.raises(RuntimeError, match="boom"):
        with open_output(job, scale_metadata(reader.meta, 2), chain=reader.chain):
            raise RuntimeError("boom")
    reader.close()
    assert not any(tmp_path.iterdir())


def test_bind_fits_on_chain_units():
    with open_reader(LANDSAT) as raw:
        bound = bind_chain(ChainSpec.from_config(S2), raw)
        valid = raw.read_masks()
        dn = raw.read()
    clip = bound.post[0]
    lo = [(dn[b][valid[b]].min() - 1000) / 10000 for b in range(4)]
    np.testing.assert_allclose(clip._lo, lo, atol=1e-6)
    assert [m.dtype for m in bound.metas] == [np.uint16, np.uint16, np.float32]


def test_chain_refuses_dtype_change_with_alpha_band():
    with pytest.raises(InvalidDataError, match="drop the alpha band with select_bands"):
        ChainReader(open_reader(RGBA), ChainSpec.from_config({"pre": ["normalize"]}))
    with ChainReader(open_reader(RGBA), ChainSpec.from_config(
            {"pre": [{"select_bands": {"bands": [1, 2, 3]}}, "normalize"]})) as reader:
        assert reader.meta.bands == 3 and reader.meta.alpha_band is None


def test_tiled_upscale_with_denoise_chain_matches_one_tile(tmp_path):
    cfg = config_from_dict({"train": {"max_iters": 5, "crop_size": 16},
                            "net": {"depth": 3, "width": 8},
                            "infer": {"back_projection_iters": 1, "ensemble": False}})
    chain = ChainSpec.from_config(DENOISE)
    outs = []
    for tile in (16, 256):
        out = tmp_path / f"t{tile}.tif"
        upscale_file(ImageJob(input=LANDSAT, output=out, scale=2.0, config=cfg, tile=tile,
                              chain=chain))
        with open_reader(out) as r:
            outs.append(r.read())
    # equal up to the engine's own float rounding (a 1-DN flip at x.5, as without a chain)
    diff = np.abs(outs[0].astype(np.int64) - outs[1])
    assert outs[0].dtype == np.uint16 and diff.max() <= 1 and (diff > 0).mean() < 1e-3
