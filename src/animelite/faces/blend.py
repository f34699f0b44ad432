"""Paste-back: feathered masks, warping a stylized crop into the picture, and colour correction.

All images here are float32 in [0, 1]. A face is pasted over the whole-photo
stylization (the *base*) through a soft mask, after a low-frequency colour
correction that makes the face agree with the base along the mask border, so
there is neither a hard edge nor a colour jump (halo).
"""

from __future__ import annotations

import numpy as np

from . import align

# The face ellipse in unit crop coordinates (see align.TEMPLATE): centred a little
# below the eyes, from the hairline (1.3 inter-ocular distances above the eyes)
# to under the chin (1.9 below), cheek to cheek plus the ears' roots.
ELLIPSE_CENTRE = (0.5, 0.53)
ELLIPSE_AXES = (0.30, 0.37)
FEATHER = 0.15  # the soft edge spans (1 - FEATHER .. 1 + FEATHER) of the ellipse's radius


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse_mask(size: int, centre=ELLIPSE_CENTRE, axes=ELLIPSE_AXES, feather: float = FEATHER) -> np.ndarray:
    """A (size, size) float32 soft ellipse: 1 inside, 0 outside, a smooth ramp across the border."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x = (c[None, :] - centre[0]) / axes[0]
    y = (c[:, None] - centre[1]) / axes[1]
    r = np.sqrt(x * x + y * y)
    return (1.0 - smoothstep(1.0 - feather, 1.0 + feather, r)).astype(np.float32)


def box_mask(width: int, height: int, box: tuple[float, float, float, float], feather_px: float) -> np.ndarray:
    """(height, width) float32: 1 inside *box* (x0, y0, x1, y1), ramping to 0 over *feather_px* inward
    from each edge that is inside the picture; edges on the picture's border are not feathered."""
    x0, y0, x1, y1 = box
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5

    def ramp(v, lo, hi, n):
        out = np.ones_like(v)
        out[(v < lo) | (v > hi)] = 0.0
        if feather_px > 0:
            if lo > 0.5:
                out *= smoothstep(lo, lo + feather_px, v)
            if hi < n - 0.5:
                out *= 1.0 - smoothstep(hi - feather_px, hi, v)
        return out

    return (ramp(ys, y0, y1, height)[:, None] * ramp(xs, x0, x1, width)[None, :]).astype(np.float32)


def warp_into(crop: np.ndarray, mask: np.ndarray, m_crop2dst: np.ndarray, dst_w: int, dst_h: int
              ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]] | None:
    """Warp *crop* (s, s, 3) and its *mask* (s, s) into destination space.

    Returns (patch (h, w, 3), patch mask (h, w), roi (x0, y0, x1, y1)) covering
    just the destination pixels the mask can touch, or None when that region
    lies outside the destination.
    """
    ys, xs = np.nonzero(mask > 1e-3)
    if len(xs) == 0:
        return None
    corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                        [xs.max() + 1, ys.max() + 1]], np.float64)
    p = align.apply(m_crop2dst, corners)
    x0, y0 = max(0, int(np.floor(p[:, 0].min())) - 1), max(0, int(np.floor(p[:, 1].min())) - 1)
    x1, y1 = min(dst_w, int(np.ceil(p[:, 0].max())) + 1), min(dst_h, int(np.ceil(p[:, 1].max())) + 1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    m_roi = align.compose(np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), m_crop2dst)
    stacked = np.concatenate([crop.astype(np.float32, copy=False), mask[:, :, None].astype(np.float32)], axis=2)
    out = align.warp(stacked, m_roi, (x1 - x0, y1 - y0), border="zero")
    return out[:, :, :3], np.clip(out[:, :, 3], 0.0, 1.0), (x0, y0, x1, y1)


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) float32 G such that ``G @ v`` is *v* blurred by a Gaussian of *sigma* pixels, edge pixels repeated.

    The kernel is truncated at 4 sigma (about a 1e-4 tail) and normalised;
    taps that fall outside [0, n) are folded onto the nearest edge pixel, as if
    the signal went on with its edge value.
    """
    radius = max(1, int(np.ceil(4.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    rows = np.repeat(np.arange(n), t.size)
    cols = np.clip(np.arange(n)[:, None] + t.astype(np.int64)[None, :], 0, n - 1).ravel()
    g = np.bincount(rows * n + cols, weights=np.tile(k, n), minlength=n * n)
    return g.reshape(n, n).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """*img* (H, W) or (H, W, C) float32 blurred by a separable Gaussian of *sigma* pixels, edges repeated.

    Each axis is one matrix product (:func:`gaussian_matrix`): exact, and
    fast for the wide blurs colour correction uses (sigma a quarter of the
    region), where a direct convolution would take a kernel as wide as the image.
    """
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    planes = img.reshape(h, w, -1)
    out = np.tensordot(gaussian_matrix(h, sigma), planes, axes=(1, 0))  # (h, w, c)
    out = np.tensordot(out, gaussian_matrix(w, sigma), axes=(1, 1))  # (h, c, w)
    return np.ascontiguousarray(out.transpose(0, 2, 1)).reshape(img.shape)


def border_weight(mask: np.ndarray) -> np.ndarray:
    """Weight of each pixel as part of the mask's border band: 4 m (1 - m), 1 at m = 0.5, 0 at 0 and 1."""
    return (4.0 * mask * (1.0 - mask)).astype(np.float32)


def colour_correct(face: np.ndarray, base: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """*face* shifted so that its low frequencies match *base* along the border of *mask*.

    The per-channel difference ``base - face`` is measured in the border band
    (:func:`border_weight`) and spread over the face by normalised Gaussian
    convolution (blur(d * w) / blur(w), scale *sigma* pixels); where the band is
    far away this tends to the band's mean difference. Inside the face the
    correction is a smooth, low-frequency offset, so features and texture are
    untouched while the colour at the border agrees with the surroundings.
    """
    w = border_weight(mask)
    total = float(w.sum())
    if total < 1e-6:
        return face
    d = (base - face).astype(np.float32)
    mean_d = (d * w[:, :, None]).sum(axis=(0, 1)) / total
    sigma = max(1.0, float(sigma))
    blurred = gaussian_blur(np.concatenate([w[:, :, None], d * w[:, :, None]], axis=2), sigma)
    blur_w, blur_dw = blurred[:, :, 0], blurred[:, :, 1:]
    eps = 0.05 * float(blur_w.max()) + 1e-6
    offset = (blur_dw + eps * mean_d) / (blur_w[:, :, None] + eps)
    return np.clip(face + offset, 0.0, 1.0)


def paste(base: np.ndarray, patch: np.ndarray, mask: np.ndarray, roi: tuple[int, int, int, int]) -> None:
    """Blend *patch* into *base* (in place) at *roi* through *mask*."""
    x0, y0, x1, y1 = roi
    region = base[y0:y1, x0:x1]
    m = mask[:, :, None]
    region[...] = patch * m + region * (1.0 - m)
