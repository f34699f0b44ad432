"""Pixel helpers every layer shares: the working size, a high-quality resize, float to uint8.

Kept apart from the pipeline so that tiling, quantization and the face stage
can use them without importing the pipeline (imports run one way).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def working_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    """The model's input size: long side ``size``, aspect kept, sides rounded to ``multiple``.

    Rounding moves each side by at most ``multiple / 2`` pixels, so the aspect
    ratio changes by well under 1% at the default sizes; nothing is squashed.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    scale = size / max(width, height)

    def side(v: int) -> int:
        return max(multiple, int(round(v * scale / multiple)) * multiple)

    return side(width), side(height)


def to_uint8(y: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as rounded uint8 (a uint8 image is returned as it is)."""
    return y if y.dtype == np.uint8 else (y * 255.0 + 0.5).astype(np.uint8)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """High-quality resize of an (H, W, C) uint8 array to (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    mode = "RGB" if rgb.ndim == 3 else "L"
    img = Image.fromarray(rgb, mode).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img)


__all__ = ["working_size", "resize_rgb", "to_uint8"]
