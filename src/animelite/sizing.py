"""``size="auto"``: pick the working size from cheap measurements of the photo.

A detailed photo (foliage, crowds, text, small faces) needs more pixels for
the generator's strokes to follow its structure; a simple one (a close-up, sky,
a flat wall) looks the same with fewer and costs less. The decision uses two
measurements that cost a few milliseconds whatever the photo's size:

* **detail**: the share of strong edges on a grey probe of the photo with a
  long side of :data:`PROBE_SIDE` pixels (box-downscaled): the fraction of
  pixels whose gradient (|dx| + |dy|, in [0, 2]) exceeds
  :data:`EDGE_THRESHOLD`. On the project's photos it runs from ~0.08 (a
  portrait close-up) to ~0.7 (dense foliage, a crowded street).
* **the smallest face** (when the face stage found faces), in pixels of the
  output at the default size: a face smaller than :data:`SMALL_FACE` gets
  more pixels so its features survive.

:func:`choose_size` maps them to a size between :data:`AUTO_MIN` and
:data:`AUTO_MAX` in steps of :data:`STEP`; the thresholds were set on
``../shared/photos`` so that the mean cost over a varied folder stays at or
under that of the default size (README: "Adaptive working size").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .options import AUTO_SIZE_MAX as AUTO_MAX
from .options import AUTO_SIZE_MIN as AUTO_MIN
from .options import DEFAULT_SIZE

PROBE_SIDE = 256
EDGE_THRESHOLD = 0.08
STEP = 64
#: detail at or under LOW gets AUTO_MIN, at or over HIGH gets AUTO_MAX, linear between
DETAIL_LOW, DETAIL_HIGH = 0.28, 0.68
SMALL_FACE = 48  #: px at the default size: smaller faces raise the size so they reach this


@dataclass(frozen=True)
class SizeChoice:
    size: int
    detail: float
    smallest_face: float | None  # px at the default size, None without faces

    def __str__(self) -> str:
        face = f", smallest face {self.smallest_face:.0f} px" if self.smallest_face is not None else ""
        return f"auto size {self.size}: detail {self.detail:.2f}{face}"


def detail(rgb: np.ndarray) -> float:
    """Share of strong edges on a small grey probe of an (H, W, 3) uint8 photo (0 flat .. ~1 all edges)."""
    h, w = rgb.shape[:2]
    if h < 2 or w < 2:
        return 0.0
    scale = min(1.0, PROBE_SIDE / max(h, w))
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    grey = Image.fromarray(rgb).convert("L")
    if size != (w, h):
        grey = grey.resize(size, Image.Resampling.BOX)
    g = np.asarray(grey, np.float32) * np.float32(1 / 255)
    mag = np.abs(np.diff(g, axis=1))[:-1, :] + np.abs(np.diff(g, axis=0))[:, :-1]
    return float((mag > EDGE_THRESHOLD).mean()) if mag.size else 0.0


def choose_size(rgb: np.ndarray, smallest_face_px: float | None = None) -> SizeChoice:
    """The working long side for *rgb*; ``smallest_face_px`` is the smallest face's size in *rgb*'s pixels."""
    h, w = rgb.shape[:2]
    d = detail(rgb)
    t = min(1.0, max(0.0, (d - DETAIL_LOW) / (DETAIL_HIGH - DETAIL_LOW)))
    size = AUTO_MIN + t * (AUTO_MAX - AUTO_MIN)
    face_at_default = None
    if smallest_face_px is not None and max(h, w) > 0:
        face_at_default = smallest_face_px * DEFAULT_SIZE / max(h, w)
        if face_at_default < SMALL_FACE:  # give the face SMALL_FACE px, within the bounds
            size = max(size, DEFAULT_SIZE * SMALL_FACE / max(face_at_default, 1.0))
    size = int(round(size / STEP)) * STEP
    return SizeChoice(min(AUTO_MAX, max(AUTO_MIN, size)), d, face_at_default)


__all__ = ["SizeChoice", "choose_size", "detail"]
