"""The OpenCV PNG reader gives exactly Pillow's arrays, or declines (None) and leaves it to Pillow."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from panopticdepth.errors import DataError
from panopticdepth.evaluation.folders import _png
from panopticdepth.io.png import png_layout, read_png_fast

pytest.importorskip("cv2")


def _pillow(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture
def rng():
    return np.random.default_rng(13)


def test_rgb_8bit_is_bit_identical(tmp_path, rng):
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes, distinct channels
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    fast = read_png_fast(path)
    assert fast is not None, "8-bit RGB must take the fast path"
    assert fast.dtype == np.uint8 and fast.shape == (37, 53, 3)
    np.testing.assert_array_equal(fast, _pillow(path))
    np.testing.assert_array_equal(fast[..., 0], rgb[..., 0])  # R first, not OpenCV's B
    assert not fast.flags.writeable  # like Pillow's array
    np.testing.assert_array_equal(_png(str(path), "panoptic prediction", 3), _pillow(path))


def test_gray_16bit_is_bit_identical(tmp_path, rng):
    gray = rng.integers(0, 65536, (41, 29), dtype=np.uint16)
    gray[0, :4] = (0, 1, 255, 65535)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray).save(path)
    fast = read_png_fast(path)
    assert fast is not None, "16-bit gray must take the fast path"
    assert fast.dtype == np.uint16
    np.testing.assert_array_equal(fast, _pillow(path))
    np.testing.assert_array_equal(fast, gray)
    np.testing.assert_array_equal(_png(str(path), "depth map", 1), gray)


def test_palette_png_is_left_to_pillow(tmp_path, rng):
    idx = rng.integers(0, 7, (23, 31), dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([v for i in range(7) for v in (i * 30, 255 - i * 30, i)])
    path = tmp_path / "palette.png"
    img.save(path)
    assert png_layout(path.read_bytes())[3] == 3
    assert read_png_fast(path) is None  # OpenCV would expand the palette to colours
    # The evaluator's reader gives Pillow's verdict: a palette image is not an RGB prediction.
    with pytest.raises(DataError, match="must be an RGB PNG"):
        _png(str(path), "panoptic prediction", 3)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_other_layouts_decline(tmp_path, rng, mode):
    arr = rng.integers(0, 256, (9, 11, 4) if mode == "RGBA" else (9, 11), dtype=np.uint8)
    path = tmp_path / f"{mode}.png"
    Image.fromarray(arr, mode=mode).save(path)
    assert read_png_fast(path) is None


def test_rgb_with_transparency_declines(tmp_path, rng):
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "trns.png"
    Image.fromarray(rgb).save(path, transparency=(1, 2, 3))
    arr = read_png_fast(path)
    assert arr is None or np.array_equal(arr, _pillow(path))


def test_truncated_and_non_png_files_decline(tmp_path, rng):
    gray = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    good = tmp_path / "good.png"
    Image.fromarray(gray).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-200])
    assert read_png_fast(cut) is None
    with pytest.raises(DataError, match="unreadable or truncated"):
        _png(str(cut), "depth map", 1)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert read_png_fast(text) is None
    assert read_png_fast(tmp_path / "missing.png") is None
