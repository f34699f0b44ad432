"""Guided upsampling for the HD mode.

The generator runs on a small copy of the photo; its output is brought to the
full output size with a *fast guided filter* (He & Sun, "Fast Guided Filter",
2015): at low resolution, fit in every window a per-channel linear model
``stylized ≈ a * photo + b``; smooth ``a`` and ``b`` (they vary slowly), upsample
them bilinearly, and apply them to the full-resolution photo. The result takes
its colours and flat shading from the stylized image and its edges from the
photo, so a 256-px inference gives a sharp 1024-px picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, clipped at the borders (window shrinks), for (H, W[, C]) arrays."""
    if r <= 0:
        return x.astype(np.float32, copy=True)
    h, w = x.shape[:2]

    def along(a: np.ndarray, axis: int, n: int) -> np.ndarray:
        c = np.cumsum(a, axis=axis, dtype=np.float64)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        idx = np.arange(n)
        hi = np.minimum(idx + r + 1, n)
        lo = np.maximum(idx - r, 0)
        return np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)

    s = along(along(x, 0, h), 1, w)
    ones_h = (np.minimum(np.arange(h) + r + 1, h) - np.maximum(np.arange(h) - r, 0)).astype(np.float64)
    ones_w = (np.minimum(np.arange(w) + r + 1, w) - np.maximum(np.arange(w) - r, 0)).astype(np.float64)
    count = ones_h[:, None] * ones_w[None, :]
    if x.ndim == 3:
        count = count[:, :, None]
    return (s / count).astype(np.float32)


def _resize_float(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float32 array to (width, height)."""
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c]), "F").resize(size, Image.Resampling.BILINEAR))
             for c in range(x.shape[2])]
    return np.stack(chans, axis=-1)


def guided_upsample(photo_low: np.ndarray, stylized_low: np.ndarray, photo_high: np.ndarray,
                    radius: int = 2, eps: float = 1e-3) -> np.ndarray:
    """Bring *stylized_low* to the size of *photo_high*, with edges guided by the photo.

    All arrays are float32 RGB in [0, 1]; the low-resolution pair must have the
    same size. *radius* is in low-resolution pixels; *eps* regularises the fit
    (larger: smoother, closer to plain bilinear upsampling).
    """
    if photo_low.shape != stylized_low.shape:
        raise ValueError(f"guide {photo_low.shape} and stylized {stylized_low.shape} differ in size")
    I, p = photo_low.astype(np.float32), stylized_low.astype(np.float32)  # noqa: E741 - the paper's names
    mean_i = box_mean(I, radius)
    mean_p = box_mean(p, radius)
    cov_ip = box_mean(I * p, radius) - mean_i * mean_p
    var_i = box_mean(I * I, radius) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    a = box_mean(a, radius)
    b = box_mean(b, radius)
    size = (photo_high.shape[1], photo_high.shape[0])
    out = _resize_float(a, size) * photo_high.astype(np.float32) + _resize_float(b, size)
    return np.clip(out, 0.0, 1.0, out=out)
