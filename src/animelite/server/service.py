"""The work behind the HTTP API: admission, a bounded worker pool, warm stylizers, the cache.

Nothing here knows about HTTP. Every image goes through
:class:`animelite.pipeline.Stylizer` (decode, preprocess, inference,
postprocess, encode), run on a worker thread, never on the event loop.

Admission is a counter, not an unbounded executor queue: at most
``workers`` jobs run and at most ``queue_size`` wait; a request beyond that
is refused at once with :class:`Busy` (HTTP 503 + Retry-After) instead of
piling up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from .. import engine, imageio, pipeline
from ..errors import AnimeliteError, ModelError, StyleError
from ..pipeline import MIN_SIZE, Stylizer
from ..store import ModelStore
from ..styles import Style
from .cache import CachedResult, ResultCache, cache_key
from .config import ServerConfig
from .metrics import ServerMetrics

log = logging.getLogger("animelite.server")

OUTPUT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
FORMAT_ALIASES = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 90
PREVIEW_QUALITY = 85
MAX_STYLIZERS = 32
UPLOAD_LABEL = "upload"  # what imageio calls the picture in its messages
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


# ----------------------------------------------------------------------------- errors
class ServiceError(AnimeliteError):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadParameter(ServiceError):
    status, code = 400, "bad_parameter"


class Busy(ServiceError):
    status, code = 503, "busy"


class TimedOut(ServiceError):
    status, code = 504, "timeout"


# ----------------------------------------------------------------------------- params
@dataclass(frozen=True)
class Params:
    """A request's validated parameters; every field is part of the cache key."""

    style: str  # canonical catalog name
    size: int
    format: str  # "jpeg" | "png" | "webp"
    quality: int
    precision: str
    faces: str | None = None  # None: the pipeline's default; else "auto", "off", "portrait", ...
    face_style: str | None = None
    mode: str | None = None  # None: the pipeline's default; else one of animelite.pipeline.MODES

    @property
    def content_type(self) -> str:
        return OUTPUT_TYPES[self.format]


PARAM_NAMES = ("style", "size", "format", "quality", "precision", "mode", "faces", "face_style")


def _whole(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw.strip())
    except (ValueError, AttributeError):
        raise BadParameter(f"{name} must be a whole number from {lo} to {hi}, not {raw!r}") from None
    if not lo <= value <= hi:
        raise BadParameter(f"{name} must be from {lo} to {hi}, not {value}")
    return value


@dataclass(frozen=True)
class FaceSupport:
    """What the pipeline offers for faces, found by looking at it (the face stage is optional)."""

    where: str | None = None  # "init": Stylizer(faces=...); "call": stylize(faces=...); None: no face option
    options: frozenset[str] = frozenset()  # of "faces", "face_style"
    boolean: bool = False  # the pipeline takes faces=True/False rather than a mode name
    modes: tuple[str, ...] = ()
    available: bool = False  # the face stage can run here (its dependencies are installed)
    default: str = "off"  # what the pipeline does when faces is not given
    detector: str | None = None  # catalog name of the detector model, part of the cache key

    @property
    def supported(self) -> bool:
        return self.where is not None


def detect_face_support(store: ModelStore) -> FaceSupport:
    for where, fn in (("init", Stylizer.__init__), ("call", Stylizer.stylize)):
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if "faces" not in params:
            continue
        options = frozenset(set(params) & {"faces", "face_style"})
        if isinstance(params["faces"].default, bool):
            return FaceSupport(where, options, True, ("on", "off"), True, "on" if params["faces"].default else "off")
        modes: tuple[str, ...] = ("auto", "off")
        available, default, detector = True, "off", None
        try:  # the face stage of this codebase, when present: its modes, dependencies and default
            from .. import faces as _faces

            modes = tuple(getattr(_faces, "MODES", modes))
            available = bool(_faces.cv2_available()) if hasattr(_faces, "cv2_available") else True
            if hasattr(_faces, "resolve_mode"):
                default = _faces.resolve_mode(None, store)
            from ..faces import stage as _stage

            detector = getattr(_stage, "DETECTOR_STYLE", None)
        except Exception:  # noqa: BLE001 - a missing or changed optional stage only hides the option
            pass
        return FaceSupport(where, options, False, modes, available, default, detector)
    return FaceSupport()


def _faces_value(raw: str, support: FaceSupport) -> str:
    low = raw.strip().lower()
    if low in _TRUE:
        low = "on" if support.boolean else ("auto" if "auto" in support.modes else low)
    elif low in _FALSE:
        low = "off"
    if low not in support.modes:
        raise BadParameter(f"faces must be one of {', '.join(support.modes)} (or true/false), not {raw!r}")
    return low


# ----------------------------------------------------------------------------- service
class StylizeService:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics):
        self.config = config
        self.metrics = metrics
        self.store = ModelStore(config.models_dir)
        self.workers = config.effective_workers
        self.threads = config.effective_threads
        self.capacity = self.workers + config.queue_size
        self.cache = ResultCache(config.cache_bytes, config.cache_dir, config.disk_cache_bytes)
        self._factory: Callable[..., Any] = config.stylizer_factory or Stylizer
        self.face_support = detect_face_support(self.store)
        self._init_params = _parameters(Stylizer.__init__)
        self.modes: tuple[str, ...] = tuple(getattr(pipeline, "MODES", ())) if "mode" in self._init_params else ()
        self.backend = config.backend if "backend" in self._init_params else ""
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="animelite-worker")
        self._lock = threading.Lock()
        self._pending = 0  # admitted and not finished (running + waiting)
        self._running = 0
        self._avg_job = 1.0  # seconds, smoothed; for Retry-After
        self._stylizers: OrderedDict[tuple, Any] = OrderedDict()
        self._stylizer_lock = threading.Lock()
        self._previews: dict[str, bytes] = {}
        self._preview_jobs: dict[str, concurrent.futures.Future] = {}
        self._preview_lock = threading.Lock()
        self.sample = resources.files("animelite.server").joinpath("static/sample.png").read_bytes()
        self.ready = False
        self.ready_reason = "starting: loading the default style"
        metrics.workers.set(self.workers)
        metrics.queue_capacity.set(config.queue_size)

    # ---------------------------------------------------------------- lifecycle
    def start_warmup(self) -> None:
        """Load the default style and render its preview on a worker (startup does not wait)."""
        if not self.config.warmup:
            self._check_ready_without_loading()
            return
        fut = self._submit(self._warm, admitted=False)
        fut.add_done_callback(self._warm_done)

    def _warm(self, *, queue_wait: float = 0.0) -> None:
        style = self.store.style(self.config.default_style)
        if not self.store.is_present(style):
            raise ModelError(f"the default style '{style.name}' is not installed; "
                             f"run `animelite models pull {style.name}`")
        self._render_preview(style.name, queue_wait=queue_wait)

    def _warm_done(self, fut: concurrent.futures.Future) -> None:
        if fut.cancelled():
            self.ready_reason = "shutting down"
            return
        exc = fut.exception()
        if exc is None:
            self.ready, self.ready_reason = True, "ok"
            self.metrics.ready.set(1)
            log.info("ready: style '%s' loaded and warm", self.config.default_style)
        else:
            self.ready_reason = str(exc) if isinstance(exc, AnimeliteError) else f"warm-up failed: {exc!r}"
            log.error("not ready: %s", self.ready_reason)

    def _check_ready_without_loading(self) -> None:
        try:
            present = self.store.is_present(self.config.default_style)
        except AnimeliteError as exc:
            self.ready_reason = str(exc)
            return
        if present:
            self.ready, self.ready_reason = True, "ok (not warmed up)"
            self.metrics.ready.set(1)
        else:
            self.ready_reason = f"the default style '{self.config.default_style}' is not installed"

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- params
    def parse_params(self, raw: dict[str, str]) -> Params:
        unknown = sorted(set(raw) - set(PARAM_NAMES))
        if unknown:
            raise BadParameter(f"unknown parameter {unknown[0]!r}; the parameters are: {', '.join(PARAM_NAMES)}")
        cfg = self.config
        style = self.lookup_style(raw.get("style") or cfg.default_style)
        size = _whole("size", raw["size"], MIN_SIZE, cfg.max_size) if raw.get("size") else cfg.default_size
        fmt_raw = (raw.get("format") or DEFAULT_FORMAT).strip().lower()
        fmt = FORMAT_ALIASES.get(fmt_raw)
        if fmt is None:
            raise BadParameter(f"format must be one of jpg, png, webp, not {raw.get('format')!r}")
        quality = _whole("quality", raw["quality"], 1, 100) if raw.get("quality") else DEFAULT_QUALITY
        precision = (raw.get("precision") or "fp32").strip().lower()
        if precision not in engine.PRECISIONS:
            raise BadParameter(f"precision must be one of {', '.join(engine.PRECISIONS)}, not {raw.get('precision')!r}")
        if precision != "fp32" or self.backend:
            self.check_precision(precision)
        mode = None
        if raw.get("mode"):
            mode = raw["mode"].strip().lower()
            if mode not in self.modes:
                choices = ", ".join(self.modes) or "none on this server"
                raise BadParameter(f"mode must be one of {choices}, not {raw['mode']!r}")
        fs = self.face_support
        faces = face_style = None
        if raw.get("faces") or raw.get("face_style"):
            if not fs.supported:
                raise BadParameter("face enhancement (faces, face_style) is not available on this server yet")
        if raw.get("faces"):
            faces = _faces_value(raw["faces"], fs)
            if faces != "off" and not fs.available:
                raise BadParameter("face enhancement is not installed on this server; send faces=off or leave it out",
                                   code="faces_unavailable")
        if raw.get("face_style"):
            if "face_style" not in fs.options:
                raise BadParameter("face_style is not supported by this server's pipeline")
            face_style = self.lookup_style(raw["face_style"], what="face_style").name
        if faces == "off" or (faces is None and fs.default == "off"):
            face_style = None  # no faces, so no face style: one cache entry, not two
        return Params(style.name, size, fmt, quality, precision, faces, face_style, mode)

    def check_precision(self, precision: str) -> None:
        """Refuse a precision this server's backend cannot run, with the engine's reason."""
        check = getattr(engine, "check_backend", None)
        if check is None:
            return
        try:
            check(self.backend or "onnxruntime", precision)
        except ModelError as exc:
            raise BadParameter(f"precision {precision} is not available on this server: {exc}") from None

    def lookup_style(self, name: str, what: str = "style") -> Style:
        """A style from the catalog (or the operator's own styles) by name; never a path."""
        name = name.strip()
        if not name or len(name) > 64:
            raise BadParameter(f"{what} must be a style name, see GET /v1/styles", code="unknown_style")
        try:
            style = self.store.style(name)
            if not is_style(style):
                raise StyleError(name)
        except StyleError:
            known = ", ".join(s.name for s in self.store.styles() if is_style(s) and self._present(s))
            raise BadParameter(f"unknown {what} {name!r}; styles on this server: {known or 'none'}",
                               code="unknown_style") from None
        if not self._present(style):
            raise ServiceError(f"the style '{style.name}' is known but its model is not installed on this server",
                               status=404, code="style_not_installed")
        return style

    def _present(self, style: Style) -> bool:
        try:
            return self.store.is_present(style)
        except AnimeliteError:
            return False

    def model_identity(self, style_name: str) -> list:
        """Changes when the model file is replaced, so cached results of an old model are never served."""
        try:
            st = self.store.source_path(style_name).stat()
            return [style_name, st.st_size, st.st_mtime_ns]
        except OSError:
            return [style_name, None, None]

    def key_for(self, data: bytes, params: Params) -> str:
        ident = {"params": asdict(params), "model": self.model_identity(params.style)}
        if params.face_style:
            ident["face_model"] = self.model_identity(params.face_style)
        fs = self.face_support
        if fs.detector and (params.faces or fs.default) != "off":
            ident["detector"] = self.model_identity(fs.detector)
        return cache_key(data, ident)

    # ---------------------------------------------------------------- admission
    @property
    def queue_depth(self) -> int:
        return max(0, self._pending - self._running)

    @property
    def running(self) -> int:
        return self._running

    def retry_after(self) -> int:
        waiting = self._pending + 1
        return int(min(60, max(1, math.ceil(self._avg_job * waiting / self.workers))))

    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.capacity:
                self.metrics.rejected.inc(reason="busy")
                raise Busy(
                    "the server is busy with other pictures right now; please try again in a few seconds",
                    headers={"Retry-After": str(self.retry_after())},
                )
            self._pending += 1
            self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.jobs_running.set(self._running)
        self.metrics.queue_depth.set(self.queue_depth)

    def _submit(self, fn: Callable[..., Any], *args: Any, admitted: bool) -> concurrent.futures.Future:
        """Run fn on a worker; ``admitted`` jobs hold a slot until they finish or are cancelled."""
        enqueued = time.perf_counter()
        if not admitted:
            with self._lock:
                self._pending += 1

        def job():
            started = time.perf_counter()
            with self._lock:
                self._running += 1
                self._update_gauges()
            try:
                return fn(*args, queue_wait=started - enqueued)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self._running -= 1
                    self._avg_job = 0.8 * self._avg_job + 0.2 * elapsed

        fut = self._executor.submit(job)

        def release(_f):
            with self._lock:
                self._pending -= 1
                self._update_gauges()

        fut.add_done_callback(release)
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """Admit (or raise Busy), run fn on a worker, wait until ``deadline`` (perf_counter) or raise TimedOut."""
        self._admit()
        try:
            fut = self._submit(fn, *args, admitted=True)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.0, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            fut.cancel()  # frees the slot now if it had not started; a running job finishes on its own
            self.metrics.rejected.inc(reason="timeout")
            raise TimedOut(
                f"the picture took longer than {self.config.timeout:g} s to process and was abandoned; "
                "try a smaller size, or try again when the server is less busy"
            ) from None

    # ---------------------------------------------------------------- the work
    def stylizer(self, params: Params) -> Any:
        options = self._face_kwargs(params) if self.face_support.where == "init" else {}
        if params.mode:
            options["mode"] = params.mode
        if self.backend:
            options["backend"] = self.backend
        if "sessions" in self._init_params and self.workers > 1:
            options["sessions"] = self.workers  # one session per worker: images in flight do not share threads
        key = (params.style, params.size, params.precision, tuple(sorted(options.items())))
        with self._stylizer_lock:
            st = self._stylizers.get(key)
            if st is not None:
                self._stylizers.move_to_end(key)
                return st
            st = self._factory(
                params.style, size=params.size, store=self.store, threads=self.threads,
                precision=params.precision, auto_pull=False, max_pixels=self.config.max_pixels,
                notice=lambda text: log.warning("%s", text), **options,
            )
            self._stylizers[key] = st
            while len(self._stylizers) > MAX_STYLIZERS:
                self._stylizers.popitem(last=False)
            return st

    def process(self, data: bytes, params: Params, key: str, *, queue_wait: float = 0.0) -> CachedResult:
        """Worker thread: the disk cache, else the pipeline; records stage metrics."""
        t0 = time.perf_counter()
        cached = self.cache.get_disk(key)
        if cached is not None:
            self.metrics.cache_hits.inc(tier="disk")
            return CachedResult(cached.data, {**cached.meta, "cache": "disk", "queue": queue_wait,
                                              "disk_read": time.perf_counter() - t0})
        self.metrics.cache_misses.inc()
        st = self.stylizer(params)
        call_kwargs = self._face_kwargs(params) if self.face_support.where == "call" else {}
        result = st.stylize(data, name=UPLOAD_LABEL, **call_kwargs)
        st.encode(result, EXTENSIONS[params.format], params.quality)
        timings = {k: float(v) for k, v in result.timings.items()}
        for stage, seconds in timings.items():
            self.metrics.stage_seconds.observe(seconds, stage=stage)
        self.metrics.stage_seconds.observe(queue_wait, stage="queue")
        w, h = result.size
        meta = {
            "content_type": params.content_type, "format": params.format, "style": params.style,
            "size": params.size, "width": w, "height": h,
            "input_width": result.input_size[0], "input_height": result.input_size[1],
            "timings": timings,
        }
        found = getattr(getattr(result, "faces", None), "found", None)
        if isinstance(found, int):
            meta["faces_found"] = found
        entry = CachedResult(result.encoded, meta)
        self.cache.put(key, entry)
        self._cache_gauges()
        return CachedResult(entry.data, {**meta, "cache": "miss", "queue": queue_wait})

    def _face_kwargs(self, params: Params) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if params.faces is not None:
            kwargs["faces"] = (params.faces == "on") if self.face_support.boolean else params.faces
        if params.face_style:
            kwargs["face_style"] = params.face_style
        return kwargs

    def _cache_gauges(self) -> None:
        self.metrics.cache_bytes.set(self.cache.bytes)
        self.metrics.cache_entries.set(len(self.cache))

    def cached(self, key: str) -> CachedResult | None:
        """The in-memory tier only: cheap enough for the event loop."""
        entry = self.cache.get_memory(key)
        if entry is None:
            return None
        self.metrics.cache_hits.inc(tier="memory")
        return entry

    # ---------------------------------------------------------------- previews
    def preview_params(self, style: str) -> Params:
        # faces off: the sample has no faces, and previews then never need the detector
        faces = "off" if self.face_support.supported and not self.face_support.boolean else None
        return Params(style, self.config.preview_size, "jpeg", PREVIEW_QUALITY, "fp32", faces)

    def _render_preview(self, style: str, *, queue_wait: float = 0.0) -> bytes:
        params = self.preview_params(style)
        out = self.process(self.sample, params, self.key_for(self.sample, params), queue_wait=queue_wait)
        self._previews[style] = out.data
        return out.data

    async def preview(self, style: str) -> bytes:
        """The style applied to the bundled sample picture, rendered once per style on a worker."""
        data = self._previews.get(style)
        if data is not None:
            return data
        with self._preview_lock:
            fut = self._preview_jobs.get(style)
            if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
                # previews skip admission (one job per style at most), so a busy queue never hides them
                fut = self._preview_jobs[style] = self._submit(self._render_preview, style, admitted=False)
        try:  # shielded: one impatient client must not cancel the job others wait for
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.config.timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"the preview of '{style}' is not ready yet; try again shortly") from None


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def is_style(style: Style) -> bool:
    """An image-to-image style (the catalog also lists helper models, e.g. a face detector)."""
    return getattr(style, "kind", "style") == "style"


def is_supported_image(prefix: bytes) -> bool:
    """Whether a supported decoder recognises these first bytes (content sniffing, no decoding)."""
    from PIL import Image

    Image.init()
    for fmt in (*imageio.SUPPORTED_INPUT_FORMATS, "MPO"):
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        accept = entry[1]
        try:
            verdict = accept(prefix) if accept is not None else False
        except Exception:  # noqa: BLE001 - a sniffer choking on odd bytes means "not mine"
            continue
        if verdict and not isinstance(verdict, str):
            return True
    return False
