"""Alignment: a similarity transform from 5 landmarks to a canonical face, and the crops it defines.

Transforms are 2x3 float64 affine matrices ``M`` acting on (x, y) pixel
coordinates: ``p' = M[:, :2] @ p + M[:, 2]``. A similarity transform is a
rotation, one uniform scale and a translation (no shear, no mirroring).

:data:`TEMPLATE` places the 5 landmarks in a unit square crop with a generous
margin: the inter-ocular distance is 0.23 of the crop side and the eyes sit at
0.46 of its height, so the crop holds the hair above the forehead, both ears
and the chin with some neck (about 2 inter-ocular distances each way). The
numbers are typical adult proportions measured in inter-ocular units (nose tip
0.5 and mouth corners 1.0 below the eye line, mouth 0.9 wide), not copied from
any other project's template.

Resampling is numpy and Pillow only (no OpenCV): :func:`area_resize`
(Pillow's box filter, i.e. area averaging when shrinking) and :func:`warp`
(bilinear sampling through the inverse transform, OpenCV's pixel convention:
pixel (i, j) is the point x = j, y = i).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IOD = 0.23  # inter-ocular distance as a fraction of the crop side
EYE_Y = 0.46
TEMPLATE = np.array([
    [0.5 - IOD / 2, EYE_Y],                 # eye, image left
    [0.5 + IOD / 2, EYE_Y],                 # eye, image right
    [0.5, EYE_Y + 0.50 * IOD],              # nose tip
    [0.5 - 0.45 * IOD, EYE_Y + 1.00 * IOD],  # mouth corner, image left
    [0.5 + 0.45 * IOD, EYE_Y + 1.00 * IOD],  # mouth corner, image right
], np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform taking points *src* (N, 2) onto *dst* (N, 2), N >= 2.

    Solves ``x' = a x - b y + tx, y' = b x + a y + ty`` for (a, b, tx, ty) by
    linear least squares; scale is ``hypot(a, b)``, rotation ``atan2(b, a)``.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching point lists of at least 2 points, got {src.shape} and {dst.shape}")
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    coef, *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    ca, cb, tx, ty = coef
    if ca == 0 and cb == 0:
        raise ValueError("degenerate points: all source points coincide")
    return np.array([[ca, -cb, tx], [cb, ca, ty]])


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    a = np.asarray(m, np.float64)[:, :2]
    t = np.asarray(m, np.float64)[:, 2]
    ai = np.linalg.inv(a)
    return np.column_stack([ai, -ai @ t])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner``: apply *inner* first."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 transform to points (N, 2)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def scale_of(m: np.ndarray) -> float:
    """The (geometric mean) scale factor of a transform: sqrt(|det|)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


def face_transform(landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """Image -> crop transform putting *landmarks* (5, 2) on :data:`TEMPLATE` in a ``crop_size`` square."""
    return similarity_transform(landmarks, TEMPLATE * crop_size)


def portrait_transform(width: int, height: int, crop_size: int) -> np.ndarray:
    """Image -> crop transform of the centred square (side ``min(width, height)``) scaled to ``crop_size``."""
    side = min(width, height)
    s = crop_size / side
    return np.array([[s, 0.0, -s * (width - side) / 2], [0.0, s, -s * (height - side) / 2]])


def _bounds(m_dst2src: np.ndarray, dst_w: int, dst_h: int) -> tuple[float, float, float, float]:
    corners = np.array([[0, 0], [dst_w, 0], [0, dst_h], [dst_w, dst_h]], np.float64)
    p = apply(m_dst2src, corners)
    return p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()


_UINT8_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def area_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """*img* (H, W) or (H, W, C), uint8 or float32, resized to *size* = (width, height) with a box filter.

    Shrinking, each output pixel is the mean of the input pixels under it
    (no aliasing); uint8 images with 1, 3 or 4 channels go through Pillow in
    one call, anything else one float32 channel at a time.
    """
    w, h = int(size[0]), int(size[1])
    if (img.shape[1], img.shape[0]) == (w, h):
        return img
    chans = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype == np.uint8 and chans in _UINT8_MODES:
        src = img if img.ndim == 2 or chans > 1 else img[:, :, 0]
        out = np.asarray(Image.fromarray(np.ascontiguousarray(src), _UINT8_MODES[chans]).resize(
            (w, h), Image.Resampling.BOX))
        return out.reshape(h, w, *img.shape[2:])
    planes = img.reshape(img.shape[0], img.shape[1], chans).astype(np.float32, copy=False)
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[:, :, c]), "F").resize(
        (w, h), Image.Resampling.BOX)) for c in range(chans)], axis=2)
    return out.reshape(h, w, *img.shape[2:]).astype(img.dtype, copy=False)


def _reflect101(i: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into [0, n) without repeating the edge pixel (..., 2, 1, 0, 1, 2, ..., n-2, n-1, n-2, ...)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    j = np.mod(i, period)
    return np.where(j >= n, period - j, j)


def _sample_bilinear(src: np.ndarray, m_dst2src: np.ndarray, dst_w: int, dst_h: int, border: str) -> np.ndarray:
    """Bilinear samples (float32) of *src* (H, W, C, any dtype) at the points ``m_dst2src`` maps the dst grid to.

    The source region the samples reach (plus a 2-pixel margin) is cut out
    first, mirrored or zero-filled where it runs off *src*, so every sample
    has its four neighbours; Pillow then samples each channel (mode "F",
    bilinear, in double precision). Pillow puts pixel j's centre at j + 0.5,
    this module at j: the transform is shifted by half a pixel on both sides.
    """
    h, w = src.shape[:2]
    a = np.asarray(m_dst2src, np.float64)
    x_min, y_min, x_max, y_max = _bounds(a, max(dst_w - 1, 0), max(dst_h - 1, 0))
    x_lo, y_lo = int(np.floor(x_min)) - 2, int(np.floor(y_min)) - 2
    x_hi, y_hi = int(np.ceil(x_max)) + 3, int(np.ceil(y_max)) + 3
    xs, ys = np.arange(x_lo, x_hi), np.arange(y_lo, y_hi)
    if border == "reflect":
        region = src[_reflect101(ys, h)][:, _reflect101(xs, w)].astype(np.float32, copy=False)
    else:  # zero outside the picture
        region = np.zeros((len(ys), len(xs), src.shape[2]), np.float32)
        ry, rx = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
        if ry.any() and rx.any():
            region[np.ix_(ry, rx)] = src[ys[ry][0]:ys[ry][-1] + 1, xs[rx][0]:xs[rx][-1] + 1]
    # Pillow: sample point = (a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f) - .5 in region pixels
    coeffs = (a[0, 0], a[0, 1], a[0, 2] - x_lo + 0.5 - 0.5 * (a[0, 0] + a[0, 1]),
              a[1, 0], a[1, 1], a[1, 2] - y_lo + 0.5 - 0.5 * (a[1, 0] + a[1, 1]))
    out = np.empty((dst_h, dst_w, src.shape[2]), np.float32)
    for c in range(src.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(region[:, :, c], np.float32), "F")
        out[:, :, c] = np.asarray(plane.transform((dst_w, dst_h), Image.Transform.AFFINE, coeffs,
                                                  resample=Image.Resampling.BILINEAR))
    return out


def warp(src: np.ndarray, m: np.ndarray, dst_size: tuple[int, int], *, border: str = "reflect") -> np.ndarray:
    """Resample *src* through the src -> dst transform *m* into a (dst_h, dst_w) array.

    When *m* shrinks by more than 1.25x the needed part of *src* is first
    reduced with area averaging (no aliasing of fine detail), then warped with
    bilinear interpolation at a scale near 1. Works on uint8 (rounded back to
    uint8) or float32 arrays, (H, W) or (H, W, C). ``border``: "reflect"
    (mirrored without repeating the edge: crops that run off the image) or
    "zero" (pasting).
    """
    if border not in ("reflect", "zero"):
        raise ValueError(f"border must be 'reflect' or 'zero', not {border!r}")
    dst_w, dst_h = dst_size
    m = np.asarray(m, np.float64)
    h, w = src.shape[:2]
    s = scale_of(m)
    if s < 0.8:
        x0, y0, x1, y1 = _bounds(invert(m), dst_w, dst_h)
        pad = 2.0 / s
        x0, y0 = max(0, int(np.floor(x0 - pad))), max(0, int(np.floor(y0 - pad)))
        x1, y1 = min(w, int(np.ceil(x1 + pad))), min(h, int(np.ceil(y1 + pad)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            sub = src[y0:y1, x0:x1]
            f = s * 1.25  # leave a little oversampling for the bilinear step
            size = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
            sub = area_resize(sub, size)
            fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
            # box-filter pixel centres: sub pixel j covers src [x0 + j / fx, x0 + (j + 1) / fx), centre
            # x0 + (j + 0.5) / fx - 0.5 in src pixel coordinates
            m = compose(m, np.array([[1 / fx, 0.0, x0 + 0.5 / fx - 0.5], [0.0, 1 / fy, y0 + 0.5 / fy - 0.5]]))
            src = sub
    planes = src if src.ndim == 3 else src[:, :, None]
    out = _sample_bilinear(planes, invert(m), dst_w, dst_h, border)
    if src.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(src.dtype, copy=False)
    return out if src.ndim == 3 else out[:, :, 0]


def crop(rgb: np.ndarray, m_img2crop: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of *rgb* defined by the image -> crop transform (reflected at image borders)."""
    return warp(rgb, m_img2crop, (size, size), border="reflect")
