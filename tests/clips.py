"""Camera-like test clips made at test time: a slow pan and zoom across a photo, with sensor noise.

Real clips are in ``../shared/videos``; these make the suite (and the
benchmarks) work without them and give footage whose true motion is known.
Each frame is a crop of the photo that moves and zooms a little from frame to
frame (sub-pixel, bilinear), plus per-frame Gaussian sensor noise and a slow
exposure drift (a gain that wanders by a few percent), the way a phone records
a handheld pan. :func:`synthetic_photo` stands in for a real photo when
``../shared`` is absent. Pure numpy + Pillow: writing them to a file is the
video code's job (and the tests').
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_photo(width: int = 960, height: int = 640, seed: int = 0) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: smooth colour fields, edges and texture at several scales."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        img[..., c] = 0.5 + 0.25 * np.sin(xx / (60 + 20 * c) + c) * np.cos(yy / (45 + 15 * c))
    for _ in range(12):  # blocks and discs: hard edges the flow can follow
        x0, y0 = rng.integers(0, width - 80), rng.integers(0, height - 80)
        w, h = rng.integers(30, 160), rng.integers(30, 160)
        colour = rng.uniform(0, 1, 3)
        if rng.random() < 0.5:
            img[y0:y0 + h, x0:x0 + w] = colour
        else:
            r = min(w, h) / 2
            disc = (xx - x0 - r) ** 2 + (yy - y0 - r) ** 2 < r * r
            img[disc] = colour
    texture = rng.normal(0, 0.04, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    texture = np.asarray(Image.fromarray(((texture + 0.5) * 255).clip(0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR), np.float32) / 255 - 0.5
    return ((img + texture).clip(0, 1) * 255).astype(np.uint8)


def load_photo(path: str | Path | None) -> np.ndarray:
    """The photo at *path* as RGB uint8, or :func:`synthetic_photo` when *path* is None."""
    if path is None:
        return synthetic_photo()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pan_frames(photo: np.ndarray, frames: int = 48, size: tuple[int, int] = (320, 240), *, pan: float = 0.35,
               zoom: float = 1.15, noise: float = 3.0, drift: float = 0.04, seed: int = 0):
    """Yield *frames* (H, W, 3) uint8 frames of *size* = (width, height): a pan and zoom across *photo*.

    The crop window starts at the left and moves right by *pan* of the free
    width over the clip while zooming in by *zoom*; each frame gets Gaussian
    noise of sigma *noise* levels and an exposure gain that wanders within
    +-*drift* (a smooth random walk), like auto-exposure on a phone.
    """
    rng = np.random.default_rng(seed)
    ph, pw = photo.shape[:2]
    out_w, out_h = size
    aspect = out_w / out_h
    base_w = min(pw * 0.8, ph * 0.8 * aspect)
    base_h = base_w / aspect
    img = Image.fromarray(photo)
    gains = np.cumsum(rng.normal(0, drift / 4, frames))
    gains = 1 + np.clip(gains - gains.mean(), -drift, drift)
    for i in range(frames):
        t = i / max(1, frames - 1)
        cw, ch = base_w / (1 + (zoom - 1) * t), base_h / (1 + (zoom - 1) * t)
        x0 = (pw - cw) * (0.1 + pan * t)
        y0 = (ph - ch) * (0.5 - 0.1 * t)
        frame = img.transform((out_w, out_h), Image.EXTENT, (x0, y0, x0 + cw, y0 + ch), Image.BILINEAR)
        f = np.asarray(frame, np.float32) * gains[i] + rng.normal(0, noise, (out_h, out_w, 3))
        yield f.clip(0, 255).astype(np.uint8)


def tone(seconds: float, rate: int = 48000, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    """A synthesized audio track: (channels, samples) float32, a chirping tone per channel."""
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (freq * (1 + 0.25 * c)) * t * (1 + 0.1 * t))
                     for c in range(channels)]).astype(np.float32)
