"""The shared vocabulary: every setting's name, allowed values, bounds and default, defined once.

Front ends (CLI, server, page) read their choices and help texts from here;
the pipeline (:class:`animelite.pipeline.Stylizer`) is the one place that
*validates* a combination of them, with :class:`OptionError`. Nothing in this
module imports the rest of animelite except :mod:`animelite.errors`, so any
layer may use it.
"""

from __future__ import annotations

from .errors import AnimeliteError, StyleError

# -- working size ---------------------------------------------------------------
DEFAULT_SIZE = 512  #: working long side in pixels
MIN_SIZE = 64
MAX_SIZE = 8192
SIZE_AUTO = "auto"  #: ``size="auto"``: chosen per photo from its detail and faces (animelite.sizing)
AUTO_SIZE_MIN, AUTO_SIZE_MAX = 384, 768  #: the range ``size="auto"`` picks from
#: Tiling turns on by itself when the working image has more pixels than this
#: (a whole-frame AnimeGANv2 run needs ~1.6 KB per working pixel: 1024x1024 is
#: ~1.7 GB, a 3:2 photo at ``--size 1536`` ~2.5 GB). See :mod:`animelite.tiling`.
AUTO_TILE_PIXELS = 1024 * 1024
AUTO_TILE_TEXT = "1024x1024 working pixels (~1 MP)"
DEFAULT_TILE = 384  #: tile side when tiling is automatic
MIN_TILE = 128

# -- speed ------------------------------------------------------------------------
BACKENDS = ("onnxruntime", "openvino")
DEFAULT_BACKEND = "onnxruntime"
PRECISIONS = ("fp32", "bf16", "int8")  #: what the engine runs (a resolved precision)
#: "auto": the fastest precision measured as equivalent to fp32 for the style, on this CPU
#: (:func:`animelite.quantize.resolve_precision`); never a precision the engine runs itself
AUTO_PRECISION = "auto"
#: what a user may ask for (front ends' choices): "auto" or one of PRECISIONS
PRECISION_CHOICES = (AUTO_PRECISION,) + PRECISIONS
DEFAULT_PRECISION = AUTO_PRECISION
MODES = ("full", "hd")  #: "hd": run small, restore detail with a guided filter
DEFAULT_MODE = "full"
HD_SCALE = 0.75  #: HD mode runs the generator at this fraction of the working long side
#: HD mode's guided filter works on the whole working image in float32 (~15
#: arrays of it): above this long side it is refused rather than trying to
#: allocate tens of GB (full mode tiles instead).
HD_MAX_SIZE = 4096
MAX_THREADS = 256  #: threads per session; more than any CPU this runs on
MAX_SESSIONS = 64

# -- faces ------------------------------------------------------------------------
FACE_MODES = ("auto", "off", "portrait")
DEFAULT_FACES = "auto"  #: YuNet ships in the package and runs on ONNX Runtime: faces on by default, offline
#: "yunet": embedded, ONNX Runtime; "mtcnn": optional (pip install 'animelite[mtcnn]': OpenCV), only when asked
FACE_DETECTORS = ("yunet", "mtcnn")
DEFAULT_FACE_DETECTOR = "yunet"
DEFAULT_FACE_SIZE = 512
MIN_FACE_SIZE = 64
MAX_FACE_SIZE = 2048

# -- files --------------------------------------------------------------------------
#: suffixes of the photos a folder walk picks up (content is sniffed anyway)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
#: output formats, canonical names; ``FORMAT_ALIASES`` maps what users type to them
OUTPUT_FORMATS = ("jpeg", "png", "webp")
FORMAT_ALIASES = {"jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "webp": "webp"}
FORMAT_CHOICES = ("png", "jpg", "jpeg", "webp")  #: what the CLI accepts for --format
FORMAT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}
FORMAT_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
DEFAULT_QUALITY = 92  #: JPEG/WebP quality for files (CLI, API)
MIN_QUALITY, MAX_QUALITY = 1, 100
DEFAULT_MAX_PIXELS = 50_000_000  #: decoded images above this are refused (decompression bombs)

# -- video ------------------------------------------------------------------------------
#: "off": each frame on its own (the baseline); "default": shared statistics smoothed across frames, reset at
#: cuts, and a light blend with the previous output warped by the optical flow; "strong": a heavier blend
#: (animelite.video.temporal)
TEMPORAL_MODES = ("off", "default", "strong")
DEFAULT_TEMPORAL = "default"
#: suffixes of the videos a folder walk picks up (content decides, as for photos: a PyAV probe)
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
#: output containers: H.264 (yuv420p) in MP4, or VP9 in WebM
VIDEO_FORMATS = ("mp4", "webm")
DEFAULT_VIDEO_FORMAT = "mp4"
VIDEO_FORMAT_EXTENSIONS = {"mp4": ".mp4", "webm": ".webm"}
#: constant rate factor: lower is better and larger; x264 takes 0..51, libvpx-vp9 0..63
DEFAULT_CRF = 20  #: for MP4/H.264 (visually close to the input at working size)
DEFAULT_WEBM_CRF = 32  #: for WebM/VP9 (its scale differs: ~32 looks like x264's ~20)
CRF_BOUNDS = {"mp4": (0, 51), "webm": (0, 63)}
#: encoder speed presets, fastest first (x264's names; VP9 maps them onto its cpu-used levels)
VIDEO_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_PRESET = "veryfast"


# -- the models directory -------------------------------------------------------------
MODELS_ENV = "ANIMELITE_MODELS"


class OptionError(AnimeliteError, ValueError):
    """An option value or combination that cannot run: the user's to fix (CLI exit 2, HTTP 400)."""


class UnknownStyleError(StyleError, OptionError):
    """A style name that is neither in the catalog nor among the user's styles (a usage error)."""


def canonical_format(name: str) -> str:
    """``"jpg"``/``"JPEG"``/``".jpg"`` -> ``"jpeg"``; an OptionError naming the choices otherwise."""
    key = str(name).strip().lower().lstrip(".")
    try:
        return FORMAT_ALIASES[key]
    except KeyError:
        raise OptionError(f"unknown output format {name!r}; choose one of png, jpg, webp") from None


def format_for_suffix(suffix: str) -> str | None:
    """The output format a file suffix names (``".JPG"`` -> ``"jpeg"``), or None when it names none."""
    return FORMAT_ALIASES.get(suffix.strip().lower().lstrip("."))


def whole_number(name: str, value, lo: int, hi: int) -> int:
    """*value* as an int within [lo, hi], or an OptionError that names the option and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise OptionError(f"{name} must be a whole number from {lo} to {hi}, got {shown}")
    return value


def one_of(name: str, value, choices: tuple[str, ...]) -> str:
    """*value* (case and spaces ignored) if it is one of *choices*, else an OptionError listing them."""
    key = value.strip().lower() if isinstance(value, str) else value
    if key not in choices:
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise OptionError(f"unknown {name} {shown}: {name} must be one of {', '.join(choices)}")
    return key
