"""Turn a request's query/form text into typed parameters (:class:`Params`): syntax, not validation.

Text becomes ints, canonical names and catalog styles here; whether a value
or a combination can run is decided by :class:`animelite.pipeline.Stylizer`
(the one place that validates options), whose ``OptionError`` the API answers
with 400. What stays here is what only the server knows: the parameter
names, the style catalog of *this* server (installed or not), its size cap
(``--max-size``) and its default values.

Face options follow the pipeline's own rule (:func:`animelite.faces.resolve_mode`):
``faces`` left out means "auto" when a ``face_style`` is given or when the
face detector is installed, else "off"; the resolved mode is what the
stylizer gets and what the cache key holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AnimeliteError, StyleError
from ..faces import resolve_mode
from ..options import (DEFAULT_MODE, DEFAULT_PRECISION, DEFAULT_TEMPORAL, DEFAULT_VIDEO_FORMAT, FORMAT_ALIASES,
                       FORMAT_MIME, MAX_QUALITY, MIN_QUALITY, SIZE_AUTO, TEMPORAL_MODES, VIDEO_FORMATS, whole_number)
from ..store import ModelStore
from ..styles import Style
from .config import ServerConfig
from .errors import BadParameter, ServiceError, shown

PARAM_NAMES = ("style", "size", "format", "quality", "precision", "mode", "faces", "face_style")
DEFAULT_FORMAT = "jpeg"
#: JPEG/WebP quality of HTTP answers (files written by the CLI/API default to options.DEFAULT_QUALITY)
HTTP_DEFAULT_QUALITY = 90
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Params:
    """A request's parameters, parsed; every field is part of the cache key."""

    style: str  # canonical catalog name
    size: int
    format: str  # canonical: "jpeg" | "png" | "webp"
    quality: int
    precision: str
    faces: str = "off"  # the resolved face mode (the pipeline validates it)
    face_style: str | None = None  # None whenever faces are off
    mode: str = DEFAULT_MODE

    @property
    def content_type(self) -> str:
        return FORMAT_MIME[self.format]


def is_style(style: Style) -> bool:
    """An image-to-image style (the catalog also lists helper models, e.g. a face detector)."""
    return style.kind == "style"


def is_present(store: ModelStore, style: Style) -> bool:
    try:
        return store.is_present(style)
    except AnimeliteError:
        return False


def lookup_style(store: ModelStore, name: str, what: str = "style") -> Style:
    """A style from the catalog (or the operator's own styles) by name; never a path.

    Unknown: 400 ``unknown_style`` naming the installed ones; known but not
    installed: 404 ``style_not_installed``.
    """
    name = name.strip()
    if not name or len(name) > 64:
        raise BadParameter(f"{what} must be a style name, see GET /v1/styles", code="unknown_style")
    try:
        style = store.style(name)
        if not is_style(style):
            raise StyleError(name)
    except StyleError:
        known = ", ".join(s.name for s in store.styles() if is_style(s) and is_present(store, s))
        raise BadParameter(f"unknown {what} {shown(name)}; styles on this server: {known or 'none'}",
                           code="unknown_style") from None
    if not is_present(store, style):
        raise ServiceError(f"the style '{style.name}' is known but its model is not installed on this server",
                           status=404, code="style_not_installed")
    return style


def _whole(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except (ValueError, AttributeError):
        raise BadParameter(f"{name} must be a whole number, not {shown(raw)}") from None


def _word(raw: str | None, default: str) -> str:
    return raw.strip().lower() if raw and raw.strip() else default


def parse_faces(raw: str) -> str | None:
    """``true``/``false`` words as "auto"/"off", other text as given (lower case); empty: None (the default)."""
    low = raw.strip().lower()
    if not low:
        return None
    if low in _TRUE:
        return "auto"
    if low in _FALSE:
        return "off"
    return low


def parse_params(raw: dict[str, str], config: ServerConfig, store: ModelStore) -> Params:
    """The request's parameters from its query/form text, or a 400/404 for what cannot even be parsed."""
    unknown = sorted(set(raw) - set(PARAM_NAMES))
    if unknown:
        raise BadParameter(f"unknown parameter {shown(unknown[0])}; the parameters are: {', '.join(PARAM_NAMES)}")
    style = lookup_style(store, raw.get("style") or config.default_style)
    if raw.get("size") and raw["size"].strip().lower() == SIZE_AUTO:
        size = SIZE_AUTO
    else:
        size = _whole("size", raw["size"]) if raw.get("size") else config.default_size
    if size != SIZE_AUTO and size > config.max_size:  # the server's own cap (--max-size), below the pipeline's bound
        raise BadParameter(f"size must be at most {config.max_size} on this server, not {size}")
    fmt_raw = _word(raw.get("format"), DEFAULT_FORMAT)
    fmt = FORMAT_ALIASES.get(fmt_raw)
    if fmt is None:
        raise BadParameter(f"format must be one of jpg, png, webp, not {shown(raw.get('format'))}")
    # quality is an encoder setting, not a Stylizer option: checked here against the shared bounds
    quality = whole_number("quality", _whole("quality", raw["quality"]), MIN_QUALITY, MAX_QUALITY) \
        if raw.get("quality") else HTTP_DEFAULT_QUALITY
    precision = _word(raw.get("precision"), DEFAULT_PRECISION)
    mode = _word(raw.get("mode"), DEFAULT_MODE)
    faces = parse_faces(raw["faces"]) if raw.get("faces") else None
    face_style = lookup_style(store, raw["face_style"], what="face_style").name if raw.get("face_style") else None
    faces = resolve_mode(faces)  # the pipeline's rule for faces left out
    if faces == "off":
        face_style = None  # no faces, so no face style: one cache entry, not two
    return Params(style.name, size, fmt, quality, precision, faces, face_style, mode)


# ----------------------------------------------------------------------------- video jobs and the live camera
VIDEO_PARAM_NAMES = ("style", "size", "precision", "mode", "faces", "face_style", "temporal", "format")
LIVE_PARAM_NAMES = ("style", "size", "precision", "faces", "face_style", "temporal")
VIDEO_DEFAULT_SIZE = 512  # a video's working long side when the request names none
LIVE_DEFAULT_SIZE, LIVE_MAX_SIZE = 256, 512  # the live camera: latency first


def _video_size(raw: dict[str, str], default: int, cap: int, what: str) -> int:
    text = (raw.get("size") or "").strip()
    if not text:
        return default
    if text.lower() == SIZE_AUTO:
        raise BadParameter(f"size auto is chosen per photo; a {what} needs a number of pixels (default {default})")
    size = _whole("size", text)
    if size > cap:
        raise BadParameter(f"size must be at most {cap} for a {what} on this server, not {size}")
    return size


def _image_params(raw: dict[str, str], size: int, config: ServerConfig, store: ModelStore) -> Params:
    image_raw = {k: v for k, v in raw.items() if k in ("style", "precision", "mode", "faces", "face_style")}
    return parse_params({**image_raw, "size": str(size)}, config, store)


def parse_video_params(raw: dict[str, str], config: ServerConfig, store: ModelStore) -> dict:
    """A video job's parameters (the photo ones, plus temporal and format mp4/webm), as the job record keeps them."""
    unknown = sorted(set(raw) - set(VIDEO_PARAM_NAMES))
    if unknown:
        raise BadParameter(f"unknown parameter {shown(unknown[0])}; the parameters of a video job are: "
                           f"{', '.join(VIDEO_PARAM_NAMES)}")
    size = _video_size(raw, min(VIDEO_DEFAULT_SIZE, config.max_size), config.max_size, "video")
    p = _image_params(raw, size, config, store)
    temporal = _word(raw.get("temporal"), DEFAULT_TEMPORAL)
    if temporal not in TEMPORAL_MODES:
        raise BadParameter(f"temporal must be one of {', '.join(TEMPORAL_MODES)}, not {shown(raw.get('temporal'))}")
    fmt = _word(raw.get("format"), DEFAULT_VIDEO_FORMAT)
    if fmt not in VIDEO_FORMATS:
        raise BadParameter(f"format must be one of {', '.join(VIDEO_FORMATS)} for a video, not "
                           f"{shown(raw.get('format'))}")
    return {"style": p.style, "size": p.size, "precision": p.precision, "mode": p.mode, "faces": p.faces,
            "face_style": p.face_style, "temporal": temporal, "format": fmt}


def parse_live_params(raw: dict[str, str], config: ServerConfig, store: ModelStore) -> tuple[Params, str]:
    """The live camera's parameters (size 256 by default, at most 512) and its temporal mode."""
    unknown = sorted(set(raw) - set(LIVE_PARAM_NAMES))
    if unknown:
        raise BadParameter(f"unknown parameter {shown(unknown[0])}; the live parameters are: "
                           f"{', '.join(LIVE_PARAM_NAMES)}")
    size = _video_size(raw, LIVE_DEFAULT_SIZE, min(LIVE_MAX_SIZE, config.max_size), "live camera")
    p = _image_params(raw, size, config, store)
    temporal = _word(raw.get("temporal"), DEFAULT_TEMPORAL)
    if temporal not in TEMPORAL_MODES:
        raise BadParameter(f"temporal must be one of {', '.join(TEMPORAL_MODES)}, not {shown(raw.get('temporal'))}")
    return p, temporal
