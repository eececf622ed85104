"""Issue 3, acceptance 4: every output, downscaled by s, aligns with its input (< 0.5 px).

Phase correlation (scikit-image, 1/20 px precision) between the input and the
output brought back to the input grid by MATLAB bicubic: a half-pixel error in
the pixel-centre convention of any writer, tile or resize would show up here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA
from skimage.registration import phase_cross_correlation

from io_adapters.detect import open_reader
from pipeline.job import ImageJob, upscale_file
from zssr.config import config_from_dict
from zssr.resize import imresize

TINY = config_from_dict({"train": {"max_iters": 5, "crop_size": 32},
                         "net": {"depth": 3, "width": 8},
                         "infer": {"back_projection_iters": 1}})


@pytest.mark.parametrize("name, suffix, scale", [
    ("io/geotiff/landsat_64x80.tif", ".tif", 2),
    ("io/geotiff/rgb_byte_96x128.tif", ".zarr", 2),
    ("dicom/CT_small.dcm", ".dcm", 2),
    ("io/plain/butterfly_48x64.png", ".png", 3),
    ("engine/bridge_47x53.png", ".png", 1.5),
])
def test_output_downscaled_aligns_with_input(tmp_path, name, suffix, scale):
    src = DATA / name
    out = tmp_path / f"out{suffix}"
    upscale_file(ImageJob(input=src, output=out, scale=scale, config=TINY, tile=32))
    with open_reader(src) as r_in, open_reader(out) as r_out:
        lr = r_in.read().astype(np.float64)
        sr = r_out.read().astype(np.float64)
        valid = r_in.read_mask()
    down = imresize(torch.from_numpy(sr), scale=1 / scale, output_shape=lr.shape[1:]).numpy()
    for b in range(lr.shape[0]):
        a, d = lr[b], down[b]
        if not valid.all():  # nodata: compare on the valid pixels' bounding box
            rows, cols = np.where(valid)
            a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            d = d[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        shift, _, _ = phase_cross_correlation(a, d, upsample_factor=20)
        assert np.hypot(*shift) < 0.5, (name, b, shift)
