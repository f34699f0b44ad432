"""YuNet's tensor format: the input tensor it takes and the decoder of its outputs (no runtime here).

The model is the anchor-free YuNet of 2023 (libfacedetection.train,
``yunet_n_dynamic.onnx``). It takes one BGR image, float32 0..255, NCHW, with
sides a multiple of 32 (the photo is zero-padded at the bottom and right, so
coordinates need no shift). For each stride s in 8, 16, 32 it gives, per cell
(row r, column c) of the (H/s) x (W/s) grid, in row-major order:

- ``cls_s`` (N, 1) and ``obj_s`` (N, 1): class and objectness probabilities
  (already through a sigmoid); the face score is sqrt(cls * obj), each first
  clipped to [0, 1];
- ``bbox_s`` (N, 4): (dx, dy, log w, log h) in stride units; the box centre is
  ((c + dx) s, (r + dy) s) and its size (exp(log w) s, exp(log h) s);
- ``kps_s`` (N, 10): five landmarks (x, y), each ((c + kx) s, (r + ky) s).

The detector (:class:`~animelite.faces.detect.YuNetDetector`) runs the model
on ONNX Runtime and puts the decoded candidates through its NMS.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError

STRIDES = (8, 16, 32)
PAD = 32  # the input's sides must be a multiple of this (the coarsest stride)
OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)
MAX_CANDIDATES = 5000  # best-scoring candidates kept before NMS (a bound on its cost)


def padded_side(n: int) -> int:
    """*n* rounded up to a multiple of :data:`PAD` (at least one)."""
    return max(PAD, -(-n // PAD) * PAD)


def input_tensor(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, H', W') float32 BGR 0..255 for an (H, W, 3) uint8 RGB image, zero-padded to multiples of 32."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"YuNet needs an (H, W, 3) RGB image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    x = np.zeros((1, 3, padded_side(h), padded_side(w)), np.float32)
    x[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
    return x


def decode(outputs: dict[str, np.ndarray], height: int, width: int, threshold: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's raw outputs for a padded (*height*, *width*) input -> candidates scoring >= *threshold*.

    Returns (boxes (N, 4) x y w h, landmarks (N, 5, 2) x y, scores (N,)), all
    float32 in input pixels, before NMS, in no particular order.
    """
    boxes, marks, scores = [], [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        n = rows * cols
        arrays = {}
        for kind, depth in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
            a = np.asarray(outputs[f"{kind}_{s}"], np.float32)
            if a.size != n * depth:
                raise ModelError(f"YuNet output {kind}_{s} has {a.size} values; a {width}x{height} input at "
                                 f"stride {s} needs {rows}x{cols}x{depth} = {n * depth}")
            arrays[kind] = a.reshape(n, depth)
        score = np.sqrt(np.clip(arrays["cls"][:, 0], 0, 1) * np.clip(arrays["obj"][:, 0], 0, 1))
        keep = np.flatnonzero(score >= threshold)
        if keep.size == 0:
            continue
        r, c = (keep // cols).astype(np.float32), (keep % cols).astype(np.float32)
        b = arrays["bbox"][keep]
        cx, cy = (c + b[:, 0]) * s, (r + b[:, 1]) * s
        bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
        k = arrays["kps"][keep].reshape(-1, 5, 2)
        marks.append((k + np.stack([c, r], axis=1)[:, None, :]) * s)
        scores.append(score[keep])
    if not scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return (np.concatenate(boxes).astype(np.float32), np.concatenate(marks).astype(np.float32),
            np.concatenate(scores).astype(np.float32))
