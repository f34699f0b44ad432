"""Server settings: one dataclass, filled from defaults, environment variables and flags.

Every field has an ``ANIMELITE_<FIELD>`` environment variable (e.g.
``ANIMELITE_PORT=9000``, ``ANIMELITE_CORS_ORIGINS=https://a.example,https://b.example``);
command-line flags override the environment, which overrides the defaults.
This module imports nothing from FastAPI, so the CLI can read and check the
settings before it knows whether the server extra is installed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import default_threads
from ..errors import AnimeliteError
from ..options import AUTO_SIZE_MAX, BACKENDS, DEFAULT_MAX_PIXELS, MIN_SIZE, MODELS_ENV, SIZE_AUTO
from ..styles import DEFAULT_STYLE

ENV_PREFIX = "ANIMELITE_"
HOOKS = ("stylizer_factory", "video_runner", "frame_stream_factory")  # code hooks, never from the environment


class ConfigError(AnimeliteError):
    """A setting has a value the server cannot use."""


def default_workers(cores: int | None = None) -> int:
    """Images processed at once: one per core (each with one thread), 1 to 16.

    ``animelite bench --concurrency`` measures two images in flight with one
    thread each serving more images/s than one image with two threads (README).
    """
    cores = cores or default_threads()
    return max(1, min(16, cores))


@dataclass
class ServerConfig:
    """Everything ``create_app`` needs. All sizes are bytes, all times seconds."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0  # images stylized at once; 0: from the cores (see default_workers)
    threads: int = 0  # inference threads per image; 0: cores / workers
    queue_size: int = 8  # requests allowed to wait for a worker; beyond that: 503 + Retry-After
    timeout: float = 60.0  # per request, queue wait included; beyond that: 504
    header_timeout: float = 10.0  # a request's headers must arrive within this; else 408 and the connection closes
    body_timeout: float = 20.0  # the longest pause within a request body; else 408 and the connection closes
    max_connections: int = 512  # open connections in all; over it, new ones get 503 (0: no cap)
    max_client_connections: int = 32  # per client address; over it, requests get 503 except /healthz etc. (0: off)
    shutdown_grace: float = 10.0  # on Ctrl-C/SIGTERM: how long running jobs may finish (waiting ones get 503 at once)
    cache_bytes: int = 64 * 1024 * 1024  # in-memory results cache bound (0 disables)
    cache_dir: Path | None = None  # optional on-disk results cache
    disk_cache_bytes: int = 512 * 1024 * 1024
    models_dir: Path | None = None  # None: $ANIMELITE_MODELS or the per-user cache
    default_style: str = DEFAULT_STYLE
    # size="auto" earned the default: as faithful as 512 on detailed photos (+1.6 dB) at 0.91x its mean time
    # on ../shared/photos (README, "Adaptive working size")
    default_size: int | str = SIZE_AUTO
    max_size: int = 1024  # largest working long side a request may ask for
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    warmup: bool = True  # load the default style and render previews at startup
    backend: str = ""  # inference backend for every request ("": the pipeline's default); see options.BACKENDS
    preview_size: int = 256
    # video jobs (POST /v1/jobs) and the live camera (WebSocket /v1/live)
    jobs_dir: Path | None = None  # None: <cache dir>/jobs (--cache-dir), else the per-user cache's animelite/jobs
    max_video_bytes: int = 200 * 1024 * 1024  # largest video upload
    max_video_seconds: float = 300.0  # longest video accepted (by its container's duration)
    max_jobs: int = 1  # video jobs running at once (each pauses between frames while photos wait)
    max_queued_jobs: int = 4  # video jobs allowed to wait; beyond that: 503 + Retry-After
    job_retention: float = 24 * 3600.0  # finished jobs (and their results) are kept this long
    jobs_bytes: int = 2 * 1024 * 1024 * 1024  # the job store's bound; the oldest finished jobs go first
    max_live_sessions: int = 4  # live camera connections at once; beyond that a new one is closed (1013)
    live_max_frame_bytes: int = 1024 * 1024  # largest frame message on /v1/live
    live_max_rate: int = 60  # frame messages per second a live client may send; beyond it they are dropped
    live_idle_timeout: float = 60.0  # a live connection with no message for this long is closed
    # Test and embedding hook, never set from the environment: called as
    # factory(style, **kwargs) instead of animelite.pipeline.Stylizer(style, **kwargs).
    stylizer_factory: Callable[..., Any] | None = field(default=None, repr=False)
    # Same kind of hooks for the video work: video_runner(src, dst, stylizer=..., progress=, cancel=, ...) instead
    # of animelite.video.stylize_video, frame_stream_factory(stylizer, temporal=, size=) instead of FrameStream.
    video_runner: Callable[..., Any] | None = field(default=None, repr=False)
    frame_stream_factory: Callable[..., Any] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ derived
    @property
    def effective_workers(self) -> int:
        return self.workers or default_workers()

    @property
    def effective_jobs_dir(self) -> Path:
        if self.jobs_dir is not None:
            return Path(self.jobs_dir)
        if self.cache_dir is not None:
            return Path(self.cache_dir) / "jobs"
        from ..store.directory import default_models_dir

        return default_models_dir().parent / "jobs"

    @property
    def effective_threads(self) -> int:
        return self.threads or max(1, default_threads() // self.effective_workers)

    def validate(self) -> ServerConfig:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.port, int) and 0 <= self.port <= 65535, f"port must be 0..65535, got {self.port!r}")
        need(bool(self.host), "host must not be empty")
        need(0 <= self.workers <= 256, f"workers must be 1..256 (0: automatic), got {self.workers!r}")
        need(0 <= self.threads <= 256, f"threads must be 1..256 (0: automatic), got {self.threads!r}")
        need(0 <= self.queue_size <= 100_000, f"queue size must be 0..100000, got {self.queue_size!r}")
        need(math.isfinite(self.timeout) and self.timeout > 0, f"timeout must be above 0 seconds, got {self.timeout!r}")
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            need(math.isfinite(value) and 0 < value <= 3600, f"{name.replace('_', ' ')} must be above 0 and at "
                                                             f"most 3600 seconds, got {value!r}")
        need(0 <= self.max_connections <= 1_000_000,
             f"max connections must be 0..1000000, got {self.max_connections!r}")
        need(0 <= self.max_client_connections <= 1_000_000,
             f"max client connections must be 0..1000000, got {self.max_client_connections!r}")
        need(math.isfinite(self.shutdown_grace) and 0 <= self.shutdown_grace <= 3600,
             f"shutdown grace must be 0..3600 seconds, got {self.shutdown_grace!r}")
        need(self.cache_bytes >= 0, "cache size must not be negative")
        need(self.disk_cache_bytes >= 0, "disk cache size must not be negative")
        need(MIN_SIZE <= self.max_size <= 4096, f"max size must be {MIN_SIZE}..4096, got {self.max_size!r}")
        if self.default_size == SIZE_AUTO:
            need(AUTO_SIZE_MAX <= self.max_size, f"default size auto picks up to {AUTO_SIZE_MAX}: max size must be at "
                                                 f"least that, got {self.max_size!r}")
        else:
            need(isinstance(self.default_size, int) and MIN_SIZE <= self.default_size <= self.max_size,
                 f"default size must be auto or {MIN_SIZE}..max size ({self.max_size}), got {self.default_size!r}")
        need(MIN_SIZE <= self.preview_size <= 1024,
             f"preview size must be {MIN_SIZE}..1024, got {self.preview_size!r}")
        need(self.max_upload_bytes >= 1024, "the upload limit must be at least 1 KB")
        need(self.max_pixels >= 4096, "the pixel limit must be at least 4096")
        need(self.max_video_bytes >= 1024, "the video upload limit must be at least 1 KB")
        need(math.isfinite(self.max_video_seconds) and self.max_video_seconds > 0,
             f"max video seconds must be above 0, got {self.max_video_seconds!r}")
        need(1 <= self.max_jobs <= 64, f"max jobs must be 1..64, got {self.max_jobs!r}")
        need(0 <= self.max_queued_jobs <= 10_000, f"max queued jobs must be 0..10000, got {self.max_queued_jobs!r}")
        need(math.isfinite(self.job_retention) and self.job_retention > 0,
             f"job retention must be above 0 seconds, got {self.job_retention!r}")
        need(self.jobs_bytes >= 1024 * 1024, "the job store's size limit must be at least 1 MB")
        need(0 <= self.max_live_sessions <= 1000, f"max live sessions must be 0..1000, got {self.max_live_sessions!r}")
        need(self.live_max_frame_bytes >= 1024, "the live frame limit must be at least 1 KB")
        need(1 <= self.live_max_rate <= 1000, f"live max rate must be 1..1000 frames/s, got {self.live_max_rate!r}")
        need(math.isfinite(self.live_idle_timeout) and 0 < self.live_idle_timeout <= 3600,
             f"live idle timeout must be above 0 and at most 3600 seconds, got {self.live_idle_timeout!r}")
        need(not self.backend or self.backend in BACKENDS,
             f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for origin in self.cors_origins:
            need(origin == "*" or origin.startswith(("http://", "https://")),
                 f"CORS origin {origin!r} must be '*' or start with http:// or https://")
        return self

    # ------------------------------------------------------------- environment
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then ``ANIMELITE_*`` variables, then ``overrides`` (skipping None values)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in HOOKS:
                continue
            name = ENV_PREFIX + f.name.upper()
            # ANIMELITE_MODELS is the models directory everywhere else in animelite
            raw = environ.get(name) if f.name != "models_dir" else environ.get(MODELS_ENV)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, raw.strip(), name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in _BYTES:
            if isinstance(values.get(key), str):
                values[key] = parse_bytes(values[key])
        if isinstance(values.get("cors_origins"), (list, str)):
            values["cors_origins"] = _origins(values["cors_origins"])
        for key in ("cache_dir", "models_dir", "jobs_dir"):
            if values.get(key) is not None:
                values[key] = Path(values[key]).expanduser()
        return cls(**values).validate()


_INTS = {"port", "workers", "threads", "queue_size", "default_size", "max_size", "max_pixels", "preview_size",
         "max_connections", "max_client_connections", "max_jobs", "max_queued_jobs", "max_live_sessions",
         "live_max_rate"}
_BYTES = {"cache_bytes", "disk_cache_bytes", "max_upload_bytes", "max_video_bytes", "jobs_bytes",
          "live_max_frame_bytes"}
_FLOATS = {"timeout", "shutdown_grace", "header_timeout", "body_timeout", "max_video_seconds", "job_retention",
           "live_idle_timeout"}


def parse_bytes(text: str) -> int:
    """``"64MB"``, ``"512k"``, ``"1.5G"``, ``"1000"`` -> bytes (binary units: 1 KB = 1024 bytes)."""
    t = text.strip().upper().replace(" ", "").removesuffix("IB").removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = float(t)
    except ValueError:
        raise ConfigError(f"{text!r} is not a size; write e.g. 64MB, 512KB or 1000000") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{text!r} is not a size")
    return int(value * mult)


def _origins(value: str | list[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    return tuple(o.strip().rstrip("/") for o in items if o.strip())


def _parse(field_name: str, raw: str, env_name: str) -> Any:
    try:
        if field_name == "default_size" and raw.strip().lower() == SIZE_AUTO:
            return SIZE_AUTO
        if field_name in _INTS:
            return int(raw)
        if field_name in _BYTES:
            return parse_bytes(raw)
        if field_name in _FLOATS:
            return float(raw)
        if field_name == "warmup":
            low = raw.lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return low in ("1", "true", "yes", "on")
        if field_name == "cors_origins":
            return _origins(raw)
    except ValueError:
        raise ConfigError(f"{env_name}={raw!r} is not a valid value") from None
    return raw
