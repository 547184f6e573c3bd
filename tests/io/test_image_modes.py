"""Every image mode a user may hand in reads as the picture a viewer shows, or is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from panopticdepth.errors import DataError
from panopticdepth.io.formats import read_image_rgb

GRAY16 = (np.arange(24 * 40).reshape(24, 40) * 68).astype(np.uint16)  # 0 .. 65212


def _expected_gray(values16: np.ndarray) -> np.ndarray:
    return np.round(values16.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize(
    ("make", "suffix"),
    [
        pytest.param(lambda: Image.fromarray(GRAY16), ".png", id="png-I;16"),
        pytest.param(lambda: Image.fromarray(GRAY16), ".tif", id="tiff-I;16"),
        pytest.param(lambda: Image.fromarray(GRAY16.astype(np.int32)), ".tif", id="tiff-I-in-range"),
    ],
)
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, make, suffix):
    path = tmp_path / f"g{suffix}"
    make().save(path)
    rgb = read_image_rgb(path)
    assert rgb.shape == (*GRAY16.shape, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.abs(rgb[..., 0].astype(int) - _expected_gray(GRAY16)).max() <= 1
    assert (rgb == 255).mean() < 0.01  # not the all-white picture Pillow's convert("RGB") gives


def test_16bit_grayscale_with_exif_transpose(tmp_path):
    Image.fromarray(GRAY16).save(tmp_path / "g.png")
    rgb = read_image_rgb(tmp_path / "g.png", exif_transpose=True)
    assert rgb[..., 1].max() > 200 and rgb[..., 1].min() == 0


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "RGB", "1", "CMYK"])
def test_8bit_modes_match_pillow(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    img.save(tmp_path / f"a{suffix}")
    with Image.open(tmp_path / f"a{suffix}") as ref:
        expected = np.asarray(ref.convert("RGB"))
    assert np.array_equal(read_image_rgb(tmp_path / f"a{suffix}"), expected)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        pytest.param(GRAY16.astype(np.float32), "floating-point", id="float"),
        pytest.param(GRAY16.astype(np.int32) * 10, "outside 0..65535", id="int32-out-of-range"),
        pytest.param(GRAY16.astype(np.int32) - 5, "outside 0..65535", id="negative"),
    ],
)
def test_images_that_cannot_be_shown_as_8bit_are_refused(tmp_path, array, match):
    Image.fromarray(array).save(tmp_path / "x.tif")
    with pytest.raises(DataError, match=f"x.tif: .*{match}"):
        read_image_rgb(tmp_path / "x.tif")
