"""Faces across video frames: detect on a stride of frames, track in between, smooth, fade in and out.

One job: turn a clip's frames, in order, into steady face records for
:meth:`FaceStage.apply <animelite.faces.stage.FaceStage.apply>`. Re-detecting
every frame costs a detection per frame and makes the pasted face jitter by the
detector's noise (a pixel or two of landmark scatter, frame to frame); a face
that is missed once would pop out and back in.

:class:`FaceTracker` runs the stage's detector on the first frame (and after
:meth:`~FaceTracker.reset`), then every ``stride`` frames, and on every frame
while a track is uncertain (just born, just missed, or its prediction was far
off). Between detections each track is carried by a cheap local motion estimate
(phase correlation of the face's grey patch between the previous and this
frame, numpy FFTs on a 64 px patch) or, where that is not confident, by the
velocity seen between its last detections. Detections are matched to tracks
greedily by IoU with the predicted boxes (a handful of faces; no Hungarian).

Each track's landmarks and box are smoothed by a One-Euro filter (Casiez et
al., CHI 2012) run on the motion-compensated prediction: the track moves with
its motion estimate at once (no lag on a pan), and the filter only decides how
much of the measurement's disagreement to take: little when it is small (the
detector's noise: steady), much when it is large (a real change: responsive).
New tracks fade in over ``fade_frames`` frames (except on the first frame of a
clip, where there is nothing to pop against); a track no detection confirms
keeps moving with its prediction and fades out over ``fade_frames`` frames, then
ends; one that is found again while fading comes back up from where it was. An
opacity never changes by more than ``1 / fade_frames`` from one frame to the next.

:func:`jitter` is the measure: the mean size of the second difference
(frame-to-frame acceleration) of landmark positions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .align import area_resize
from .detect import Face, iou

PATCH = 64  # side of the grey patch phase correlation compares
MIN_PEAK = 0.1  # phase-correlation peak below which the local motion estimate is not trusted
MATCH_IOU = 0.3
SURPRISE = 0.15  # an innovation over this fraction of the face's size makes the track uncertain (detect again)
VELOCITY_PRIOR = 8.0  # a new track's velocity (0) weighs as much as one seen over sqrt(8) frames
_GREY = np.array([0.299, 0.587, 0.114], np.float32)


def jitter(landmarks: np.ndarray) -> float:
    """Mean length (px) of the second difference over time of landmark positions (T, K, 2): 0 for uniform motion.

    Frames where the face is missing are NaN and skipped (with the differences they touch)."""
    lm = np.asarray(landmarks, np.float64)
    acc = lm[2:] - 2 * lm[1:-1] + lm[:-2]
    norms = np.linalg.norm(acc, axis=-1)
    return float(np.nanmean(norms)) if np.isfinite(norms).any() else float("nan")


def _alpha(cutoff: float) -> float:
    """Smoothing factor of a first-order low-pass at *cutoff* cycles per frame (one sample per frame)."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff))


def _window(n: int) -> np.ndarray:
    w = np.hanning(n).astype(np.float32)
    return np.outer(w, w)


_HANN = _window(PATCH)


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak): how far the content of grey patch *a* moved to give *b* (same shape), sub-pixel.

    Phase correlation: the normalised cross-power spectrum of the two windowed
    patches transforms back to a peak at the shift; its height (1 for a pure
    shift, near 0 for unrelated patches) says how much to trust it."""
    fa = np.fft.rfft2((a - a.mean()) * _HANN)
    fb = np.fft.rfft2((b - b.mean()) * _HANN)
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-9
    r = np.fft.irfft2(cross, s=a.shape)
    iy, ix = np.unravel_index(int(np.argmax(r)), r.shape)
    n_y, n_x = r.shape

    def sub(m1: float, c: float, p1: float) -> float:
        d = m1 - 2 * c + p1
        return 0.0 if d >= 0 else 0.5 * (m1 - p1) / d

    dy = iy + sub(r[(iy - 1) % n_y, ix], r[iy, ix], r[(iy + 1) % n_y, ix])
    dx = ix + sub(r[iy, (ix - 1) % n_x], r[iy, ix], r[iy, (ix + 1) % n_x])
    dy = dy - n_y if dy > n_y / 2 else dy
    dx = dx - n_x if dx > n_x / 2 else dx
    return float(dx), float(dy), float(r[iy, ix])


def _state(face: Face) -> np.ndarray:
    """A face as 14 numbers: 5 landmarks (x, y) then the box's centre and size (cx, cy, w, h)."""
    x, y, w, h = face.box
    return np.concatenate([np.asarray(face.landmarks, np.float64).ravel(), [x + w / 2, y + h / 2, w, h]])


_X = np.r_[0:10:2, 10]  # indices of x coordinates (landmarks and box centre) in a state
_Y = np.r_[1:10:2, 11]


def _box(state: np.ndarray) -> tuple[float, float, float, float]:
    cx, cy, w, h = (float(v) for v in state[10:])
    return (cx - w / 2, cy - h / 2, w, h)


@dataclass
class _Track:
    raw: np.ndarray  # the measurement path: detections, carried by the motion estimate between them
    smooth: np.ndarray  # the filtered state that is shown
    score: float
    opacity: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(14))  # per frame, from the last detections
    velocity_weight: float = VELOCITY_PRIOR  # confidence in it (a still face is the prior)
    speed: float = 0.0  # the One-Euro filter's smoothed innovation, in face sizes per frame
    last_detected: np.ndarray | None = None
    since_detected: int = 0  # frames since its last matched detection
    detections: int = 1  # matched detections so far (1: just born, unconfirmed)
    missed: int = 0  # detections in a row that did not find it
    surprised: bool = False  # its last detection was far from the prediction
    region: tuple[int, int, int, int] | None = None  # where its reference patch was cut (image px)
    patch: np.ndarray | None = None

    @property
    def size(self) -> float:
        return float(max(self.smooth[12], self.smooth[13]))

    @property
    def uncertain(self) -> bool:
        return self.detections < 2 or self.missed > 0 or self.surprised


class FaceTracker:
    """Steady faces for a clip's frames, in order (one per clip or live connection; not thread-safe).

    *stage*: a :class:`~animelite.faces.stage.FaceStage` in mode "auto" (its
    :meth:`detect` finds the faces). *stride*: frames between routine
    detections (1 detects every frame); *fade_frames*: frames a face takes to
    fade in or out (1: no fade). *min_cutoff* and *beta* tune the One-Euro
    filter (cycles per frame, and per face size per frame of innovation);
    *local_motion*: carry tracks by phase correlation between detections
    (False: by velocity alone).
    """

    def __init__(self, stage, *, stride: int = 5, fade_frames: int = 4, min_cutoff: float = 0.02,
                 beta: float = 2.0, d_cutoff: float = 0.1, local_motion: bool = True):
        if getattr(stage, "mode", None) != "auto" or getattr(stage, "detector", None) is None:
            raise ValueError("FaceTracker needs a FaceStage in mode 'auto' (with a detector); "
                             f"this one is in mode {getattr(stage, 'mode', None)!r}")
        if int(stride) < 1 or int(fade_frames) < 1:
            raise ValueError(f"stride and fade_frames must be at least 1, not {stride} and {fade_frames}")
        if min_cutoff <= 0 or beta < 0 or d_cutoff <= 0:
            raise ValueError(f"min_cutoff and d_cutoff must be > 0 and beta >= 0, not {min_cutoff}, {d_cutoff}, {beta}")
        self.stage = stage
        self.stride = int(stride)
        self.fade_frames = int(fade_frames)
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.local_motion = bool(local_motion)
        self.detections = 0  # detector runs since construction (not reset): for tests and benchmarks
        self.detect_seconds = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new clip, a seek, a scene cut): the next frame is detected afresh."""
        self._tracks: list[_Track] = []
        self._frame = 0  # frames since reset
        self._since_detection: int | None = None  # None: never detected since reset
        self._shape: tuple[int, ...] | None = None

    def update(self, rgb: np.ndarray) -> tuple[list[Face], list[float], float]:
        """The faces of the next frame *rgb* (H, W, 3 uint8, the input frame before resizing).

        Returns (faces with smoothed boxes and landmarks in *rgb*'s pixels, largest
        first; one opacity in (0, 1] per face; seconds this call took, detection
        included). A face whose opacity is 0 is not returned."""
        t0 = time.perf_counter()
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"FaceTracker.update wants an (H, W, 3) uint8 frame, not {rgb.shape} {rgb.dtype}")
        if self._shape is not None and rgb.shape != self._shape:
            self.reset()  # a new frame size: coordinates no longer carry over
        self._shape = rgb.shape
        first = self._since_detection is None
        moves = [self._predict(track, rgb) for track in self._tracks]
        old = list(self._tracks)
        if first or self._since_detection + 1 >= self.stride or any(t.uncertain for t in self._tracks):
            faces, seconds = self.stage.detect(rgb)
            self.detections += 1
            self.detect_seconds += seconds
            self._since_detection = 0
            self._match(faces, first)
        else:
            self._since_detection += 1
        for track, move in zip(old, moves):  # one filter step toward this frame's measurement (or prediction)
            self._filter(track, move)
        height, width = rgb.shape[:2]
        step = 1.0 / self.fade_frames
        for track in self._tracks:
            cx, cy = track.raw[10], track.raw[11]
            if not (0 <= cx < width and 0 <= cy < height):
                track.missed = max(track.missed, 1)  # carried out of the picture: let it go
            track.opacity = float(np.clip(track.opacity + (-step if track.missed else step), 0.0, 1.0))
        self._tracks = [t for t in self._tracks if t.opacity > 0.0]
        if self.local_motion:
            for track in self._tracks:
                self._reference(track, rgb)
        self._frame += 1
        shown = sorted((t for t in self._tracks if t.opacity > 0), key=lambda t: t.size, reverse=True)
        faces = [Face(_box(t.smooth), t.smooth[:10].reshape(5, 2).astype(np.float32), t.score) for t in shown]
        return faces, [float(t.opacity) for t in shown], time.perf_counter() - t0

    # -- steps --------------------------------------------------------------------------------

    def _motion(self, track: _Track, rgb: np.ndarray) -> np.ndarray:
        """The predicted change of *track*'s state from the previous frame to *rgb*."""
        move = track.velocity.copy()
        if track.missed:
            move *= 0.5 ** track.missed  # a lost face's velocity is a guess: slow it down
        if track.patch is None or track.region is None:
            return move
        x0, y0, x1, y1 = track.region
        dx, dy, peak = phase_shift(track.patch, self._grey(rgb, track.region))
        if peak < MIN_PEAK:
            return move
        sx, sy = (x1 - x0) / PATCH, (y1 - y0) / PATCH
        # the measured shift replaces the velocity's common translation; its scale change stays
        move[_X] += dx * sx - move[0:10:2].mean()
        move[_Y] += dy * sy - move[1:10:2].mean()
        return move

    def _predict(self, track: _Track, rgb: np.ndarray) -> np.ndarray:
        """Carry *track*'s measurement path to this frame; returns the move (for :meth:`_filter`)."""
        move = self._motion(track, rgb)
        track.raw = track.raw + move
        track.since_detected += 1
        return move

    def _filter(self, track: _Track, move: np.ndarray) -> None:
        """One-Euro step: the smoothed state moved by *move* (the motion-compensated prediction), then
        pulled toward the measurement path by a factor that grows with the (smoothed) disagreement."""
        predicted = track.smooth + move
        innovation = track.raw - predicted
        rate = float(np.sqrt(np.mean(innovation[:10] ** 2))) / max(track.size, 1.0)
        track.speed += _alpha(self.d_cutoff) * (rate - track.speed)
        a = _alpha(self.min_cutoff + self.beta * track.speed)
        track.smooth = predicted + a * innovation

    def _match(self, faces: list[Face], first: bool) -> None:
        pairs = sorted(((iou(t_box, f.box), ti, fi) for ti, t_box in enumerate(_box(t.raw) for t in self._tracks)
                        for fi, f in enumerate(faces)), reverse=True)
        used_t, used_f = set(), set()
        for overlap, ti, fi in pairs:
            if overlap < MATCH_IOU:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            self._correct(self._tracks[ti], faces[fi])
        for ti, track in enumerate(self._tracks):
            if ti not in used_t:
                track.missed += 1
        for fi, face in enumerate(faces):
            if fi not in used_f:
                state = _state(face)
                self._tracks.append(_Track(raw=state, smooth=state.copy(), score=face.score,
                                           opacity=1.0 if first else 0.0, last_detected=state.copy(),
                                           since_detected=0))

    def _correct(self, track: _Track, face: Face) -> None:
        measured = _state(face)
        size = max(track.size, 1.0)
        track.surprised = float(np.abs(measured[10:12] - track.raw[10:12]).max()) > SURPRISE * size
        if track.last_detected is not None and track.since_detected > 0:
            seen = (measured - track.last_detected) / track.since_detected
            # inverse-variance weighting: a difference over g frames has 1/g the noise of one over 1 frame;
            # older estimates count half as much at each detection, a surprise forgets them
            weight = float(track.since_detected) ** 2
            prior = 0.0 if track.surprised else 0.5 * track.velocity_weight
            track.velocity = (prior * track.velocity + weight * seen) / (prior + weight)
            track.velocity_weight = prior + weight
        track.raw = measured
        track.last_detected = measured.copy()
        track.since_detected = 0
        track.detections += 1
        track.missed = 0
        track.score = face.score

    def _reference(self, track: _Track, rgb: np.ndarray) -> None:
        """Cut the grey patch around where *track* is expected next frame (compared with that frame)."""
        height, width = rgb.shape[:2]
        cx, cy, w, h = track.raw[10:] + track.velocity[10:]
        half = 0.6 * max(w, h)
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
        if x1 - x0 < 16 or y1 - y0 < 16:
            track.region, track.patch = None, None
            return
        track.region = (x0, y0, x1, y1)
        track.patch = self._grey(rgb, track.region)

    @staticmethod
    def _grey(rgb: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = region
        small = area_resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (PATCH, PATCH))
        return small.astype(np.float32) @ _GREY
