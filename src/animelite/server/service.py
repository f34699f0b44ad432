"""The work behind the HTTP API: warm stylizers, the cache, previews and readiness. Nothing here knows about HTTP.

Every image goes through :class:`animelite.pipeline.Stylizer` (decode,
preprocess, inference, postprocess, encode), called with its real
parameters and run on a worker of :class:`~.admission.Admission`, never on
the event loop. The stylizer validates the options; its errors travel up to
:mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from ..errors import AnimeliteError, ModelError, StyleError
from ..engine import default_threads
from ..faces.stage import DETECTOR_STYLE, resolve_mode
from ..options import DEFAULT_BACKEND, FACE_MODES, FORMAT_EXTENSIONS, MAX_SESSIONS
from ..pipeline import Stylizer
from ..store import ModelStore
from .admission import Admission
from .cache import CachedResult, ResultCache, cache_key
from .config import ConfigError, ServerConfig
from .errors import UPLOAD_LABEL, TimedOut, shown
from .metrics import ServerMetrics
from .jobs import JobStore
from .params import (HTTP_DEFAULT_QUALITY, Params, is_present, is_style, lookup_style, parse_live_params, parse_params,
                     parse_video_params)
from .videojobs import JobManager

log = logging.getLogger("animelite.server")

PREVIEW_QUALITY = 85
MAX_STYLIZERS = 32


@dataclass(frozen=True)
class FaceSupport:
    """What the face stage can do on this server (for ``GET /v1/styles``)."""

    available: bool  # the face stage can run here
    default: str  # what a request that leaves faces out gets (the pipeline's rule)
    modes: tuple[str, ...] = FACE_MODES
    supported: bool = True  # the pipeline has a face stage


class StylizeService:
    def __init__(self, config: ServerConfig, metrics: ServerMetrics):
        self.config = config
        self.metrics = metrics
        self.store = ModelStore(config.models_dir)
        self._check_default_style()
        self.admission = Admission(config.effective_workers, config.queue_size, config.timeout, metrics)
        self.workers = config.effective_workers
        self.threads = config.effective_threads
        self.backend = config.backend or DEFAULT_BACKEND
        self.cache = ResultCache(config.cache_bytes, config.cache_dir, config.disk_cache_bytes)
        self._factory: Callable[..., Any] = config.stylizer_factory or Stylizer
        self._stylizers: OrderedDict[tuple, Any] = OrderedDict()
        self._stylizer_lock = threading.Lock()
        self._previews: dict[str, bytes] = {}
        self._preview_jobs: dict[str, concurrent.futures.Future] = {}
        self._preview_lock = threading.Lock()
        self.sample = resources.files("animelite.server").joinpath("static/sample.png").read_bytes()
        self.ready = False
        self.ready_reason = "starting: loading the default style"
        self.live_sessions = 0  # live camera connections open (routes.live counts them)
        self.live_in_flight = 0  # live frames being stylized now
        self.jobs = JobManager(
            JobStore(config.effective_jobs_dir, retention=config.job_retention, max_bytes=config.jobs_bytes),
            metrics, max_jobs=config.max_jobs, max_queued=config.max_queued_jobs, stylizer=self.video_stylizer,
            busy=self.photos_waiting, max_seconds=config.max_video_seconds, runner=config.video_runner)

    def _check_default_style(self) -> None:
        """An unknown default style is a setting error (ConfigError), not a server that is never ready."""
        name = self.config.default_style
        try:
            style = self.store.style(name)
        except StyleError:
            style = None
        if style is None or not is_style(style):
            known = ", ".join(sorted(s.name for s in self.store.styles() if is_style(s)))
            raise ConfigError(f"unknown default style {shown(name)}; known styles: {known or 'none'}")

    # ---------------------------------------------------------------- lifecycle
    def start_warmup(self) -> None:
        """Load the default style and render its preview on a worker (startup does not wait).

        Also loads the job store: finished jobs stay, jobs a previous run left unfinished are marked failed.
        """
        try:
            interrupted = self.jobs.store.recover()
        except OSError as exc:
            log.error("cannot read the job store %s: %s", self.jobs.store.root, exc)
        else:
            if interrupted:
                log.warning("%d video job(s) were interrupted by the last stop and are marked failed", interrupted)
            self.jobs.gauges()
        if not self.config.warmup:
            self._check_ready_without_loading()
            return
        fut = self.admission.submit(self._warm)
        fut.add_done_callback(self._warm_done)

    def _warm(self, *, queue_wait: float = 0.0) -> None:
        style = self.store.style(self.config.default_style)
        if not self.store.is_present(style):
            raise ModelError(f"the default style '{style.name}' is not installed; "
                             f"run `animelite models pull {style.name}`")
        self._render_preview(style.name, queue_wait=queue_wait)

    def _warm_done(self, fut: concurrent.futures.Future) -> None:
        if fut.cancelled() or self.admission.draining:
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

    def begin_shutdown(self) -> None:
        """The server was asked to stop: not ready, no new work, waiting jobs answered now (see Admission.drain)."""
        self.ready, self.ready_reason = False, "shutting down"
        self.metrics.ready.set(0)
        self.admission.drain(self.config.shutdown_grace)
        self.jobs.drain()

    def shutdown(self) -> None:
        self.admission.close()
        self.jobs.drain()
        self.jobs.close()

    def photos_waiting(self) -> bool:
        """Whether photos (or live frames) are being stylized or wait for a worker: video jobs then yield."""
        a = self.admission
        return a.running > 0 or a.queue_depth > 0 or self.live_in_flight > 0

    def video_stylizer(self, params: dict) -> Any:
        """The Stylizer of a video job: one session per core, one thread each, so frames are in flight on
        every core; each waits for photos before its model run (see .videojobs)."""
        p = Params(params["style"], params["size"], "jpeg", HTTP_DEFAULT_QUALITY, params["precision"],
                   params["faces"], params.get("face_style"), params["mode"])
        return self.stylizer(p, threads=1, sessions=min(default_threads(), MAX_SESSIONS))

    # ---------------------------------------------------------------- what this server offers
    @property
    def face_support(self) -> FaceSupport:
        # YuNet ships in the package and runs on ONNX Runtime: faces can always run
        return FaceSupport(available=True, default=resolve_mode(None))

    def parse_params(self, raw: dict[str, str]) -> Params:
        return parse_params(raw, self.config, self.store)

    def parse_video_params(self, raw: dict[str, str]) -> dict:
        return parse_video_params(raw, self.config, self.store)

    def parse_live_params(self, raw: dict[str, str]) -> tuple[Params, str]:
        return parse_live_params(raw, self.config, self.store)

    def lookup_style(self, name: str, what: str = "style"):
        return lookup_style(self.store, name, what)

    def present(self, style) -> bool:
        return is_present(self.store, style)

    def model_identity(self, style_name: str) -> list:
        """Changes when the model file is replaced, so cached results of an old model are never served."""
        try:
            st = self.store.source_path(style_name).stat()
            return [style_name, st.st_size, st.st_mtime_ns]
        except OSError:
            return [style_name, None, None]

    def key_for(self, data: bytes, params: Params) -> str:
        ident = {"params": asdict(params), "backend": self.backend, "model": self.model_identity(params.style)}
        if params.face_style:
            ident["face_model"] = self.model_identity(params.face_style)
        if params.faces == "auto":
            ident["detector"] = self.model_identity(DETECTOR_STYLE)
        return cache_key(data, ident)

    # ---------------------------------------------------------------- the work
    def stylizer(self, params: Params, *, threads: int | None = None, sessions: int | None = None) -> Any:
        """A warm Stylizer for these parameters (it validates them: OptionError for what cannot run).

        ``threads``/``sessions``: other than the photo workers' (a video job runs one frame at a time on
        all the cores: one session with every thread).
        """
        threads = threads or self.threads
        sessions = sessions or min(self.workers, MAX_SESSIONS)
        key = (params.style, params.size, params.precision, params.mode, params.faces, params.face_style,
               threads, sessions)
        with self._stylizer_lock:
            st = self._stylizers.get(key)
            if st is not None:
                self._stylizers.move_to_end(key)
                return st
            st = self._factory(
                params.style, size=params.size, store=self.store, threads=threads, backend=self.backend,
                precision=params.precision, mode=params.mode, faces=params.faces, face_style=params.face_style,
                # one session per worker: images in flight do not share threads
                sessions=sessions,
                auto_pull=False, max_pixels=self.config.max_pixels, notice=lambda text: log.warning("%s", text),
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
            self.metrics.cache_hits.labels(tier="disk").inc()
            return CachedResult(cached.data, {**cached.meta, "cache": "disk", "queue": queue_wait,
                                              "disk_read": time.perf_counter() - t0})
        self.metrics.cache_misses.inc()
        st = self.stylizer(params)
        result = st.stylize(data, name=UPLOAD_LABEL)
        st.encode(result, FORMAT_EXTENSIONS[params.format].lstrip("."), params.quality)
        timings = {k: float(v) for k, v in result.timings.items()}
        for stage, seconds in timings.items():
            self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
        self.metrics.stage_seconds.labels(stage="queue").observe(queue_wait)
        w, h = result.size
        meta = {
            "content_type": params.content_type, "format": params.format, "style": params.style,
            "size": params.size, "width": w, "height": h,
            "input_width": result.input_size[0], "input_height": result.input_size[1],
            "timings": timings,
        }
        if result.faces is not None:
            meta["faces_found"] = result.faces.found
        entry = CachedResult(result.encoded, meta)
        self.cache.put(key, entry)
        self._cache_gauges()
        return CachedResult(entry.data, {**meta, "cache": "miss", "queue": queue_wait})

    def _cache_gauges(self) -> None:
        self.metrics.cache_bytes.set(self.cache.bytes)
        self.metrics.cache_entries.set(len(self.cache))

    def cached(self, key: str) -> CachedResult | None:
        """The in-memory tier only: cheap enough for the event loop."""
        entry = self.cache.get_memory(key)
        if entry is None:
            return None
        self.metrics.cache_hits.labels(tier="memory").inc()
        return entry

    async def run(self, data: bytes, params: Params, key: str, *, deadline: float) -> CachedResult:
        """Admit the job (or Busy), run it on a worker, wait until *deadline* (or TimedOut)."""
        return await self.admission.run(self.process, data, params, key, deadline=deadline)

    # ---------------------------------------------------------------- previews
    def preview_params(self, style: str) -> Params:
        # faces off: the sample has no faces, and previews then never need the detector
        return Params(style, self.config.preview_size, "jpeg", PREVIEW_QUALITY, "fp32", "off")

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
                fut = self._preview_jobs[style] = self.admission.submit(self._render_preview, style)
        try:  # shielded: one impatient client must not cancel the job others wait for
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), self.config.timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"the preview of '{style}' is not ready yet; try again shortly") from None
