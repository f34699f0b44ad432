"""Faces across video frames (animelite.faces.track) and faded paste-back (FaceStage.apply's opacities).

A scripted detector stands in for YuNet: it reads the frame's index from its
first pixel and returns the face its script puts there, with seeded noise, so
the tracker's smoothing, schedule and fades are checked against a known truth
without a real face. The last test pans a real portrait (../shared) with
tests/clips.py and runs the real detector.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from clips import pan_frames
from helpers import photo_like
from PIL import Image

from animelite.faces import align
from animelite.faces.detect import Face, FaceDetector, find_faces
from animelite.faces.stage import FaceStage
from animelite.faces.track import FaceTracker, jitter, phase_shift


class Negative:
    """A stand-in generator: the crop's negative (any visible change will do)."""

    spec = SimpleNamespace(size_multiple=8)

    def run(self, x):
        return 1.0 - x


def landmarks_at(cx: float, cy: float, side: float) -> np.ndarray:
    return (align.TEMPLATE - [0.5, 0.55]) * (side / 0.55) + [cx, cy]


class Scripted(FaceDetector):
    """Faces from *path(i)* -> (cx, cy, side) or None for frame i, plus Gaussian noise of *noise* px."""

    name = "scripted"
    min_score = 0.5

    def __init__(self, path, noise: float = 1.0, seed: int = 0):
        self.path, self.noise, self.seed, self.calls = path, noise, seed, []

    def truth(self, i: int) -> np.ndarray:
        return landmarks_at(*self.path(i))

    def detect(self, rgb):
        i = int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])
        self.calls.append(i)
        where = self.path(i)
        if where is None:
            return []
        cx, cy, side = where
        rng = np.random.default_rng((self.seed, i))
        lm = landmarks_at(cx, cy, side) + rng.normal(0, self.noise, (5, 2))
        b = rng.normal(0, self.noise, 4)
        return [Face((cx - side / 2 + b[0], cy - side / 2 + b[1], side + b[2], side + b[3]), lm.astype(np.float32),
                     0.9)]


def frame(i: int, width: int = 640, height: int = 480) -> np.ndarray:
    f = np.zeros((height, width, 3), np.uint8)
    f[0, 0, 0], f[0, 0, 1] = i % 256, i // 256
    return f


def tracker(path, noise=1.0, **kw) -> tuple[FaceTracker, Scripted]:
    det = Scripted(path, noise)
    return FaceTracker(FaceStage("auto", Negative(), detector=det), **kw), det


def run(path, frames: int, noise=1.0, **kw):
    """(tracked landmarks (T, 5, 2) NaN where no face, opacities of the first face, tracker, detector)."""
    tr, det = tracker(path, noise, **kw)
    marks, ops = [], []
    for i in range(frames):
        faces, opacities, seconds = tr.update(frame(i))
        assert len(faces) == len(opacities) and seconds >= 0
        marks.append(faces[0].landmarks if faces else np.full((5, 2), np.nan))
        ops.append(opacities[0] if faces else 0.0)
    return np.array(marks, np.float64), ops, tr, det


def per_frame(det: Scripted, frames: int) -> np.ndarray:
    return np.array([det.detect(frame(i))[0].landmarks for i in range(frames)], np.float64)


def error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1)


# -- the measure and the motion estimate ----------------------------------------------------------
def test_jitter_is_zero_for_uniform_motion_and_skips_missing_frames():
    t = np.arange(10, dtype=np.float64)[:, None, None]
    uniform = np.broadcast_to(t * [[2.0, -1.0]], (10, 5, 2)).copy()
    assert jitter(uniform) == pytest.approx(0.0, abs=1e-12)
    shaken = uniform.copy()
    shaken[4] += [3.0, 4.0]  # one frame 5 px off: second differences 5, 10, 5 at frames 3, 4, 5
    assert jitter(shaken) == pytest.approx(20 / 8)
    shaken[0] = np.nan
    assert jitter(shaken) == pytest.approx(20 / 7)


def test_phase_shift_finds_a_sub_pixel_translation():
    img = np.asarray(Image.fromarray(photo_like(200, 200, seed=3)).convert("L"), np.float32)
    big = Image.fromarray(img, "F")
    for dx, dy in [(0.0, 0.0), (2.5, -1.25), (-4.0, 3.3)]:
        a = np.asarray(big.transform((64, 64), Image.Transform.AFFINE, (1, 0, 60, 0, 1, 60), Image.BILINEAR))
        b = np.asarray(big.transform((64, 64), Image.Transform.AFFINE, (1, 0, 60 - dx, 0, 1, 60 - dy),
                                     Image.BILINEAR))
        sx, sy, peak = phase_shift(a, b)
        assert abs(sx - dx) < 0.3 and abs(sy - dy) < 0.3 and peak > 0.3
    noise = np.random.default_rng(0).normal(0, 1, (2, 64, 64)).astype(np.float32)
    assert phase_shift(noise[0], noise[1])[2] < 0.1  # unrelated patches: nothing to trust


# -- smoothing ------------------------------------------------------------------------------------
def test_smoothing_steadies_a_noisy_still_face():
    path = lambda i: (320.0, 240.0, 120.0)  # noqa: E731
    marks, ops, tr, det = run(path, 60, noise=1.0)
    raw = per_frame(det, 60)
    truth = det.truth(0)
    assert jitter(marks[5:]) * 10 < jitter(raw[5:])  # measured: about 16x steadier
    assert error(marks[5:], truth).mean() < 1.6  # no drift: about as close as one detection (1.25 px)
    assert ops == [1.0] * 60


def test_tracking_keeps_up_with_a_moving_face():
    path = lambda i: (100.0 + 4.0 * i, 200.0 + 1.5 * i, 100.0 + 0.5 * i)  # noqa: E731  # a pan with a zoom
    marks, _, tr, det = run(path, 80, noise=1.0)
    raw = per_frame(det, 80)
    truth = np.array([det.truth(i) for i in range(80)])
    lag = error(marks[10:], truth[10:])
    assert lag.max() < 4.0 and lag.mean() < 2.0  # bounded lag at 4 px per frame (measured: 3.6 px at most, 1.3)
    assert jitter(marks[10:]) * 3 < jitter(raw[10:])
    assert tr.detections <= 80 // 5 + 3


# -- the detection schedule -----------------------------------------------------------------------
def test_detection_runs_every_stride_frames_and_again_while_unsure():
    still = lambda i: (320.0, 240.0, 120.0)  # noqa: E731
    _, _, _, det = run(still, 30, noise=0.5, stride=5)
    assert det.calls == [0, 1, 6, 11, 16, 21, 26]  # frame 1 confirms the new face, then every 5th
    _, _, _, det = run(lambda i: None, 12, stride=4)
    assert det.calls == [0, 4, 8]
    _, _, _, det = run(still, 6, noise=0.5, stride=1)
    assert det.calls == list(range(6))
    with pytest.raises(ValueError, match="stride"):
        tracker(still, stride=0)
    with pytest.raises(ValueError, match="mode 'auto'"):
        FaceTracker(FaceStage("portrait", Negative()))


# -- fading ---------------------------------------------------------------------------------------
def test_a_new_face_fades_in_and_a_lost_one_fades_out_where_it_was():
    path = lambda i: (320.0, 240.0, 120.0) if 10 <= i < 31 else None  # noqa: E731
    marks, ops, tr, det = run(path, 40, noise=0.0, stride=5, fade_frames=4)
    assert ops[:10] == [0.0] * 10 and np.isnan(marks[:10]).all()
    assert ops[10:14] == [0.25, 0.5, 0.75, 1.0]  # born at the detection of frame 10
    assert ops[14:31] == [1.0] * 17
    assert ops[31:35] == [0.75, 0.5, 0.25, 0.0]  # frame 31's detection misses it: fades out, then ends
    assert ops[35:] == [0.0] * 5 and not tr._tracks
    np.testing.assert_allclose(marks[31:34], np.broadcast_to(det.truth(20), (3, 5, 2)), atol=1e-3)  # held in place
    assert 32 in det.calls and 33 in det.calls  # a lost face is looked for on every frame


def test_the_first_frame_of_a_clip_shows_its_faces_at_once():
    _, ops, _, _ = run(lambda i: (320.0, 240.0, 120.0), 3, noise=0.0)
    assert ops == [1.0, 1.0, 1.0]


def test_a_face_missed_by_one_detection_does_not_pop():
    path = lambda i: None if i == 11 else (200.0 + 2.0 * i, 240.0, 120.0)  # noqa: E731
    marks, ops, tr, det = run(path, 30, noise=0.5, stride=5)
    assert 11 in det.calls and 12 in det.calls  # missed at 11, looked for again at once, found
    assert min(ops) == 0.75 and ops[-1] == 1.0
    assert max(abs(a - b) for a, b in zip(ops, ops[1:])) <= 0.25 + 1e-9
    assert np.isfinite(marks).all()
    assert np.abs(np.diff(marks[:, 0, 0])).max() < 4.0  # no jump: still the same track
    assert len(tr._tracks) == 1


def test_reset_forgets_the_faces_and_detects_the_next_frame():
    tr, det = tracker(lambda i: (320.0, 240.0, 120.0) if i < 5 else (100.0, 100.0, 60.0), noise=0.0)
    for i in range(3):
        tr.update(frame(i))
    tr.reset()
    faces, ops, _ = tr.update(frame(7))
    assert det.calls[-1] == 7 and ops == [1.0]
    np.testing.assert_allclose(faces[0].landmarks, landmarks_at(100.0, 100.0, 60.0), atol=1e-3)
    faces, ops, _ = tr.update(frame(8, 320, 240))  # a new frame size resets too
    assert det.calls[-1] == 8 and ops == [1.0]


# -- faded paste-back -----------------------------------------------------------------------------
def _stage_and_faces():
    rgb = photo_like(400, 300, seed=2)
    faces = [Face((100.0, 60.0, 120.0, 120.0), landmarks_at(160, 120, 120).astype(np.float32), 0.9),
             Face((260.0, 150.0, 80.0, 80.0), landmarks_at(300, 190, 80).astype(np.float32), 0.9)]
    stage = FaceStage("auto", Negative(), detector=Scripted(lambda i: None), face_size=256)
    base = (photo_like(200, 150, seed=4).astype(np.float32) / 255)
    return stage, rgb, base, faces


def test_opacity_one_is_today_s_paste_and_zero_leaves_the_base():
    stage, rgb, base, faces = _stage_and_faces()
    before, summary = stage.apply(rgb, base, (faces, 0.0))
    assert summary.stylized == 2 and not np.array_equal(before, base)
    same, _ = stage.apply(rgb, base, (faces, 0.0), opacities=[1.0, 1.0])
    np.testing.assert_array_equal(same, before)
    none, summary = stage.apply(rgb, base, (faces, 0.0), opacities=[0.0, 0.0])
    assert none is base and summary.stylized == 0  # nothing stylized, nothing pasted
    only_second, summary = stage.apply(rgb, base, (faces, 0.0), opacities=[0.0, 1.0])
    alone, _ = stage.apply(rgb, base, ([faces[1]], 0.0))
    np.testing.assert_array_equal(only_second, alone)
    with pytest.raises(ValueError, match="2 faces"):
        stage.apply(rgb, base, (faces, 0.0), opacities=[1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stage.apply(rgb, base, (faces, 0.0), opacities=[1.5, 1.0])


def test_half_opacity_blends_halfway():
    stage, rgb, base, faces = _stage_and_faces()
    full, _ = stage.apply(rgb, base, ([faces[0]], 0.0))
    half, _ = stage.apply(rgb, base, ([faces[0]], 0.0), opacities=[0.5])
    np.testing.assert_allclose(half, base + 0.5 * (full - base), atol=1e-5)
    assert np.abs(full - base).max() > 0.1


# -- a real portrait, panned ---------------------------------------------------------------------
def _panned_portrait(shared_photos, name: str, frames: int) -> list[np.ndarray]:
    """*name* (a portrait) set into a street scene and panned/zoomed across with sensor noise (tests/clips.py)."""
    canvas = Image.open(shared_photos / "scenes" / "china.jpg").convert("RGB").resize((1280, 960))
    with Image.open(shared_photos / "portraits" / name) as im:
        face = im.convert("RGB")
    k = 480 / max(face.size)
    face = face.resize((round(face.size[0] * k), round(face.size[1] * k)), Image.Resampling.BOX)
    canvas.paste(face, ((1280 - face.size[0]) // 2, (960 - face.size[1]) // 2))
    return list(pan_frames(np.asarray(canvas), frames, (640, 480)))


@pytest.mark.parametrize("name", ["faces_1.jpg", "obama.jpg"])
def test_a_real_panned_face_is_followed_and_steadied(shared_photos, name):
    from animelite.faces.detect import YuNetDetector
    from animelite.store import EMBEDDED_DIR
    from animelite.styles import get_style

    detector = YuNetDetector(EMBEDDED_DIR / get_style("yunet").file)
    frames = _panned_portrait(shared_photos, name, 40)
    raw = np.array([find_faces(detector, f)[0].landmarks for f in frames], np.float64)
    tr = FaceTracker(FaceStage("auto", Negative(), detector=detector))
    tracked = []
    for f in frames:
        faces, ops, _ = tr.update(f)
        assert len(faces) == 1 and ops == [1.0]
        tracked.append(faces[0].landmarks)
    tracked = np.array(tracked, np.float64)
    iod = np.linalg.norm(raw[:, 1] - raw[:, 0], axis=1).mean()
    assert error(tracked, raw).mean() < 0.08 * iod  # measured: 1.2 px (iod 30) and 3.3 px (iod 62)
    assert jitter(tracked) * 3 < jitter(raw)  # measured: 5x to 8x steadier
    assert tr.detections <= 40 // 5 + 3
