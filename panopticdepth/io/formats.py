"""Official file encodings of Cityscapes-DPS style data and of prediction files.

* Panoptic ground truth (`*_gtFine_instanceTrainIds.png`): uint16, id = train_id * 1000 + instance,
  instance 0 for stuff, VOID = 32000.
* Depth (`*_depth.png`): uint16, metres * 256, 0 = invalid.
* Panoptic prediction (`*_panoptic.png`): RGB uint8, R = train id, G = instance id, B = 0; the
  official DVPQ evaluator reads id = R * 1000 + G.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from ..ids import IGNORE_LABEL as IGNORE_LABEL  # re-exported: the id encoding of the files
from ..ids import LABEL_DIVISOR as LABEL_DIVISOR
from ..ids import VOID_ID as VOID_ID
from ..utils.files import atomic_path

DEPTH_SCALE = 256.0


def open_png(path: str | os.PathLike) -> Image.Image:
    """Open and decode an image file; a missing or unreadable file is a `DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    return img


_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_uint8_rgb(img: Image.Image, path: str | os.PathLike) -> np.ndarray:
    """Decoded image -> (H, W, 3) uint8 RGB. 16-bit grayscale is scaled from 0..65535 to 0..255
    (Pillow's own conversion clips it, turning almost every pixel white); float images are refused."""
    if img.mode in _MODES_16BIT or img.mode == "I":
        gray = np.asarray(img)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise DataError(
                f"{path}: 32-bit integer image with values outside 0..65535; "
                "convert it to an 8-bit RGB (or 16-bit grayscale) PNG"
            )
        gray8 = ((gray.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray8[..., None], 3, axis=2)
    if img.mode == "F":
        raise DataError(f"{path}: floating-point image (mode F); convert it to an 8-bit RGB PNG")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_image_rgb(path: str | os.PathLike, exif_transpose: bool = False) -> np.ndarray:
    """Any PNG/JPEG (RGB, RGBA, grayscale, palette, 16-bit grayscale) as uint8 (H, W, 3) RGB.

    `exif_transpose` applies a camera's EXIF orientation (phone photos are often stored sideways),
    as viewers show the picture; datasets keep it off, their labels match the stored pixels.
    16-bit grayscale pixels are scaled to 8 bits (65535 -> 255); float images raise `DataError`.
    """
    img = open_png(path)
    if exif_transpose:
        img = ImageOps.exif_transpose(img)
    return _to_uint8_rgb(img, path)


def read_uint16_png(path: str | os.PathLike, what: str) -> np.ndarray:
    img = open_png(path)
    arr = np.asarray(img)
    if arr.ndim != 2 or img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        raise DataError(f"{path}: {what} must be a single-channel 16-bit PNG, got mode {img.mode}")
    return arr.astype(np.int32)


def read_panoptic_ids(path: str | os.PathLike) -> np.ndarray:
    """(H, W) int32 ids = train_id * 1000 + instance (VOID 32000)."""
    return read_uint16_png(path, "panoptic id map")


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """(H, W) float32 metres, 0 = invalid."""
    return (read_uint16_png(path, "depth map").astype(np.float32) / DEPTH_SCALE).astype(np.float32)


def encode_depth(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> uint16 metres*256 (rounded, clipped to the uint16 range; <= 0 and NaN -> 0)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.round(d * DEPTH_SCALE), 0, 65535).astype(np.uint16)


def save_png(
    array: np.ndarray, path: str | os.PathLike, mode: str | None = None, compress_level: int = 6
) -> Path:
    """Write `array` as a PNG atomically.

    `compress_level` 1 is ~3x faster than PIL's default 6 on noisy images, and not larger.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array, mode=mode).save(tmp, format="PNG", compress_level=compress_level)
    return path


def write_depth(path: str | os.PathLike, depth_m: np.ndarray, compress_level: int = 6) -> Path:
    return save_png(encode_depth(depth_m), path, compress_level=compress_level)


def write_panoptic_ids(path: str | os.PathLike, ids: np.ndarray, compress_level: int = 6) -> Path:
    ids = np.asarray(ids)
    if ids.min(initial=0) < 0 or ids.max(initial=0) > 65535:
        raise ValueError("panoptic ids must fit in uint16")
    return save_png(ids.astype(np.uint16), path, compress_level=compress_level)


def write_image_rgb(path: str | os.PathLike, image: np.ndarray, compress_level: int = 6) -> Path:
    return save_png(np.ascontiguousarray(image, dtype=np.uint8), path, compress_level=compress_level)


def encode_panoptic_rgb(panoptic: np.ndarray) -> np.ndarray:
    """ids (train_id*1000 + instance) -> RGB uint8 with R = train id, G = instance, B = 0."""
    panoptic = np.asarray(panoptic, dtype=np.int64)
    cls = panoptic // LABEL_DIVISOR
    inst = panoptic % LABEL_DIVISOR
    if (cls > 255).any() or (inst > 255).any() or (panoptic < 0).any():
        raise ValueError("class and instance ids must be in 0..255 for the RGB prediction format")
    out = np.zeros((*panoptic.shape, 3), dtype=np.uint8)
    out[..., 0] = cls
    out[..., 1] = inst
    return out


def write_panoptic_rgb(path: str | os.PathLike, panoptic: np.ndarray) -> Path:
    return save_png(encode_panoptic_rgb(panoptic), path)


def read_panoptic_rgb(path: str | os.PathLike) -> np.ndarray:
    """Prediction PNG -> (H, W) int32 ids = R * 1000 + G."""
    img = open_png(path)
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DataError(f"{path}: panoptic prediction must be an RGB PNG, got mode {img.mode}")
    return arr[..., 0].astype(np.int32) * LABEL_DIVISOR + arr[..., 1].astype(np.int32)


def png_bit_depth(path: str | os.PathLike) -> int:
    """Bits per channel of an image file (8 or 16), read from the decoded mode."""
    img = open_png(path)
    return 16 if img.mode in ("I;16", "I;16B", "I;16L", "I") else 8


def read_label_png(path: str | os.PathLike, what: str, bits: int | None = 8) -> np.ndarray:
    """Single-channel label PNG -> (H, W) int64. `bits` 8 or 16 enforces the bit depth; None accepts both."""
    img = open_png(path)
    is16 = img.mode in ("I;16", "I;16B", "I;16L", "I")
    if img.mode not in ("L", "P") and not is16:
        raise DataError(f"{path}: {what} must be a single-channel PNG, got mode {img.mode}")
    if bits == 8 and is16:
        raise DataError(f"{path}: {what} must be an 8-bit PNG, got 16-bit")
    if bits == 16 and not is16:
        raise DataError(f"{path}: {what} must be a 16-bit PNG, got 8-bit ({img.mode})")
    return np.asarray(img).astype(np.int64)


def read_segment_rgb(path: str | os.PathLike) -> np.ndarray:
    """COCO-panoptic PNG -> (H, W) int64 segment ids = R + 256 G + 256^2 B
    (docs/original_implementation.md#cityscapes-panoptic)."""
    img = open_png(path)
    if img.mode != "RGB":
        raise DataError(f"{path}: COCO-panoptic segment PNG must be RGB, got mode {img.mode}")
    rgb = np.asarray(img).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_segment_rgb(path: str | os.PathLike, segment_ids: np.ndarray) -> Path:
    """(H, W) segment ids -> COCO-panoptic RGB PNG (inverse of `read_segment_rgb`)."""
    ids = np.asarray(segment_ids, dtype=np.int64)
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    return save_png(rgb, path)
