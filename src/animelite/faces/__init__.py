"""Face-aware stylization ("face2paint"): keep eyes, mouths and identity sharp.

A whole-photo pass renders small faces as mush. With faces on, each face is
found (:mod:`.detect`: YuNet by default, MTCNN when asked for; 5 landmarks), aligned to
a canonical face and cropped with a generous margin (:mod:`.align`), stylized
at full detail with the photo's style or a separate ``face_style``, then
colour-corrected against its surroundings and pasted back through a feathered
mask (:mod:`.blend`). :mod:`.stage` ties this into the pipeline;
:mod:`animelite.face_report` measures it. In a video, :mod:`.track` detects on a
stride of frames, tracks and smooths the faces in between and fades them in and out.

Needs nothing beyond animelite's own dependencies: YuNet ships inside the
package (``animelite/models/yunet_n_dynamic.onnx``) and runs on ONNX Runtime
(:mod:`.yunet` decodes its outputs), and the warps, resizes and blurs are
numpy and Pillow. Only the optional MTCNN detector needs OpenCV
(``pip install 'animelite[mtcnn]'``); nothing imports OpenCV unless it is asked for.
"""

from .detect import (Face, FaceDetector, FacesUnavailable, MtcnnDetector, YuNetDetector, cv2_available, find_faces,
                     nms, nms_boxes)
from .stage import DETECTORS, MODES, FaceStage, FaceSummary, get_detector, make_face_stage, resolve_mode
from .track import FaceTracker

__all__ = [
    "DETECTORS", "MODES", "Face", "FaceDetector", "FaceStage", "FaceSummary", "FaceTracker", "FacesUnavailable",
    "MtcnnDetector", "YuNetDetector", "cv2_available", "find_faces", "get_detector", "make_face_stage", "nms",
    "nms_boxes", "resolve_mode",
]
