"""``animelite serve``: its flags and the command. Imports FastAPI/uvicorn only when run."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..errors import AnimeliteError
from ..options import AUTO_SIZE_MAX, AUTO_SIZE_MIN, BACKENDS, DEFAULT_BACKEND, DEFAULT_MAX_PIXELS, SIZE_AUTO
from ..styles import DEFAULT_STYLE
from .config import ENV_PREFIX, ConfigError, ServerConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _size_or_auto(text: str) -> int | str:
    """--default-size: a whole number of pixels or 'auto'."""
    return SIZE_AUTO if text.strip().lower() == SIZE_AUTO else int(text)


def add_serve_parser(sub) -> argparse.ArgumentParser:
    e = ENV_PREFIX
    s = sub.add_parser(
        "serve", help="web page and HTTP API (needs the server extra)",
        description="Serve the web page at / and the HTTP API at /v1 (docs at /docs). Every flag also has an "
                    f"environment variable ({e}HOST, {e}PORT, ...); flags win. Sizes take KB/MB/GB.",
    )
    s.add_argument("--host", help=f"address to listen on (default 127.0.0.1, loopback only; ${e}HOST)")
    s.add_argument("--port", type=int, help=f"port (default 8000, 0: any free port; ${e}PORT)")
    s.add_argument("--workers", type=int, help=f"images stylized at once (default: half the cores, 1..4; ${e}WORKERS)")
    s.add_argument("--threads", type=int, help=f"inference threads per image (default: cores / workers; ${e}THREADS)")
    s.add_argument("--queue-size", type=int, help=f"requests that may wait for a worker before 503 (default 8; "
                                                  f"${e}QUEUE_SIZE)")
    s.add_argument("--timeout", type=float, help=f"seconds per request, waiting included, before 504 (default 60; "
                                                 f"${e}TIMEOUT)")
    s.add_argument("--header-timeout", type=float, metavar="SECONDS",
                   help=f"a request's headers must arrive within this, else 408 and the connection closes "
                        f"(default 10; ${e}HEADER_TIMEOUT)")
    s.add_argument("--body-timeout", type=float, metavar="SECONDS",
                   help=f"the longest pause allowed within an upload, else 408 (default 20; ${e}BODY_TIMEOUT)")
    s.add_argument("--max-connections", type=int, metavar="N",
                   help=f"open connections in all; over it new ones get 503 (default 512, 0: no cap; "
                        f"${e}MAX_CONNECTIONS)")
    s.add_argument("--max-client-connections", type=int, metavar="N",
                   help=f"connections per client address; over it requests get 503, /healthz, /readyz and /metrics "
                        f"excepted (default 32, 0: no cap, e.g. behind a reverse proxy; ${e}MAX_CLIENT_CONNECTIONS)")
    s.add_argument("--shutdown-grace", type=float, metavar="SECONDS",
                   help=f"on Ctrl-C/SIGTERM, how long running pictures may finish; waiting ones get 503 at once "
                        f"(default 10; ${e}SHUTDOWN_GRACE)")
    s.add_argument("--cache-size", dest="cache_bytes", metavar="SIZE",
                   help=f"in-memory results cache, in bytes (default 64MB, 0 disables; ${e}CACHE_BYTES)")
    s.add_argument("--cache-dir", metavar="DIR", help=f"also keep results on disk in DIR (${e}CACHE_DIR)")
    s.add_argument("--disk-cache-size", dest="disk_cache_bytes", metavar="SIZE",
                   help=f"bound of the disk cache (default 512MB; ${e}DISK_CACHE_BYTES)")
    s.add_argument("--default-style",
                   help=f"style when a request names none (default {DEFAULT_STYLE}; ${e}DEFAULT_STYLE)")
    s.add_argument("--default-size", type=_size_or_auto,
                   help=f"working long side when a request names none: pixels, or auto (the default: "
                        f"{AUTO_SIZE_MIN}..{AUTO_SIZE_MAX} chosen per photo from its detail and faces; "
                        f"${e}DEFAULT_SIZE)")
    s.add_argument("--max-size", type=int, help=f"largest working long side a request may ask for (default 1024; "
                                                f"${e}MAX_SIZE)")
    s.add_argument("--max-upload", dest="max_upload_bytes", metavar="SIZE",
                   help=f"largest upload (default 20MB; ${e}MAX_UPLOAD_BYTES)")
    s.add_argument("--max-pixels", type=int,
                   help=f"largest image in pixels (default {DEFAULT_MAX_PIXELS}; ${e}MAX_PIXELS)")
    s.add_argument("--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN",
                   help=f"allow this origin to call the API from a browser (repeatable; default none: CORS off; "
                        f"${e}CORS_ORIGINS, comma-separated)")
    s.add_argument("--backend", choices=BACKENDS,
                   help=f"inference backend for every request (default {DEFAULT_BACKEND}; ${e}BACKEND)")
    s.add_argument("--no-warmup", dest="warmup", action="store_const", const=False,
                   help="do not load the default style at startup (/readyz then only checks that it is installed)")
    s.add_argument("--jobs-dir", metavar="DIR",
                   help=f"where video jobs and their results are kept (default: <cache dir>/jobs; ${e}JOBS_DIR)")
    s.add_argument("--max-video-upload", dest="max_video_bytes", metavar="SIZE",
                   help=f"largest video upload (default 200MB; ${e}MAX_VIDEO_BYTES)")
    s.add_argument("--max-video-seconds", type=float, metavar="SECONDS",
                   help=f"longest video accepted (default 300; ${e}MAX_VIDEO_SECONDS)")
    s.add_argument("--max-jobs", type=int, metavar="N",
                   help=f"video jobs running at once (default 1; ${e}MAX_JOBS)")
    s.add_argument("--max-queued-jobs", type=int, metavar="N",
                   help=f"video jobs that may wait before 503 (default 4; ${e}MAX_QUEUED_JOBS)")
    s.add_argument("--job-retention", type=float, metavar="SECONDS",
                   help=f"how long finished video jobs are kept (default 86400; ${e}JOB_RETENTION)")
    s.add_argument("--jobs-size", dest="jobs_bytes", metavar="SIZE",
                   help=f"bound of the job store; the oldest finished jobs go first (default 2GB; ${e}JOBS_BYTES)")
    s.add_argument("--max-live-sessions", type=int, metavar="N",
                   help=f"live camera connections at once (default 4; ${e}MAX_LIVE_SESSIONS)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)
    return s


def _err(msg: str) -> None:
    print(f"animelite: error: {msg}", file=sys.stderr)


def config_from_args(args) -> ServerConfig:
    keys = ("host", "port", "workers", "threads", "queue_size", "timeout", "shutdown_grace", "header_timeout",
            "body_timeout", "max_connections", "max_client_connections", "cache_bytes", "cache_dir",
            "disk_cache_bytes", "default_style", "default_size", "max_size", "max_upload_bytes", "max_pixels",
            "cors_origins", "warmup", "backend", "jobs_dir", "max_video_bytes", "max_video_seconds", "max_jobs",
            "max_queued_jobs", "job_retention", "jobs_bytes", "max_live_sessions")
    overrides = {k: getattr(args, k, None) for k in keys}
    overrides["models_dir"] = getattr(args, "models", None)
    return ServerConfig.from_env(**overrides)


def cmd_serve(args) -> int:
    from . import INSTALL_HINT, missing_dependencies

    missing = missing_dependencies()
    if missing:
        _err(f"the web server needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}")
        return EXIT_FAILED
    try:
        config = config_from_args(args)
    except AnimeliteError as exc:
        _err(str(exc))
        return EXIT_USAGE

    import logging

    from . import listener
    from .app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        app = create_app(config)  # refuses an unknown --default-style
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        sock = listener.bind(config.host, config.port)
    except OSError as exc:
        _err(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
        return EXIT_FAILED
    try:
        loopback = ipaddress.ip_address(config.host).is_loopback
    except ValueError:
        loopback = config.host == "localhost"
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"animelite: serving http://{shown}:{listener.bound_port(sock)}/ (API docs at /docs); "
          f"{config.effective_workers} worker(s) x {config.effective_threads} thread(s), "
          f"queue {config.queue_size}; Ctrl-C to stop", file=sys.stderr, flush=True)
    if not loopback:
        print(f"animelite: note: listening on {config.host}, reachable from other machines; put a TLS proxy in "
              "front of it for anything beyond a trusted network", file=sys.stderr)
    try:
        listener.make_server(app, config, args.log_level).run(sockets=[sock])
    finally:
        sock.close()
    print("animelite: stopped", file=sys.stderr)
    return EXIT_OK
