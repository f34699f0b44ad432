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
"""

from __future__ import annotations

import numpy as np

from .detect import require_cv2

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


def warp(src: np.ndarray, m: np.ndarray, dst_size: tuple[int, int], *, border: str = "reflect") -> np.ndarray:
    """Resample *src* through the src -> dst transform *m* into a (dst_h, dst_w) array.

    When *m* shrinks by more than 1.25x the needed part of *src* is first
    reduced with area averaging (no aliasing of fine detail), then warped with
    bilinear interpolation at a scale near 1. Works on uint8 or float32 arrays
    with 1 to 4 channels. ``border``: "reflect" (crops that run off the
    image) or "zero" (pasting).
    """
    cv2 = require_cv2()
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
            sub = cv2.resize(sub, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
            # p_sub = (p - origin) * f  =>  p = p_sub / f + origin
            m = compose(m, np.array([[1 / fx, 0.0, x0], [0.0, 1 / fy, y0]]))
            src = sub
    mode = cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT
    out = cv2.warpAffine(src, m, (dst_w, dst_h), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
    if out.ndim == 2 and src.ndim == 3:
        out = out[:, :, None]
    return out


def crop(rgb: np.ndarray, m_img2crop: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of *rgb* defined by the image -> crop transform (reflected at image borders)."""
    return warp(rgb, m_img2crop, (size, size), border="reflect")
