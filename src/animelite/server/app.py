"""Assemble the FastAPI application from its parts: the service, the error handlers, the routers, the layers.

Create it with :func:`create_app` (``animelite serve``, or ``uvicorn --factory``).
What each part does lives in its own module: :mod:`.service` (the work),
:mod:`.admission` (workers and queue), :mod:`.params` and :mod:`.uploads`
(reading a request), :mod:`.errors` (every error answer), :mod:`.routes`
(the endpoints), :mod:`.middleware` (metrics, headers, body limit).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from . import errors, routes
from .config import ServerConfig
from .metrics import ServerMetrics
from .middleware import BodyLimit, RequestMetrics, SecurityHeaders
from .service import StylizeService
from .uploads import MULTIPART_SLACK

DESCRIPTION = (
    "Photo-to-anime style transfer on the CPU. POST a photo to `/v1/stylize` and get the "
    "stylized picture back (or JSON with a data URL and per-stage timings with "
    "`Accept: application/json`). Errors are `{\"error\": {\"code\", \"message\"}}`. "
    "The AnimeGAN model weights are for non-commercial use only."
)
EXPOSED_HEADERS = ["Server-Timing", "X-Animelite-Timings", "X-Animelite-Cache", "X-Animelite-Size", "Retry-After",
                   "Content-Disposition", "Location", "Content-Range", "Accept-Ranges"]


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """Build the application. ``config.stylizer_factory`` can replace the Stylizer (tests)."""
    config = (config or ServerConfig()).validate()
    metrics = ServerMetrics()
    service = StylizeService(config, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start_warmup()
        try:
            yield
        finally:
            service.shutdown()

    app = FastAPI(title="animelite", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs is served from local files by routes.ops
    app.state.config = config
    app.state.metrics = metrics
    app.state.service = service

    errors.install(app)
    for area in (routes.stylize, routes.jobs, routes.live, routes.styles, routes.ops, routes.pages):
        area.add_routes(app, service)

    # outer layers: the last added is the outermost
    app.add_middleware(BodyLimit, max_body=config.max_upload_bytes + MULTIPART_SLACK,
                       body_timeout=config.body_timeout, metrics=metrics, drain_signal=service.admission.drain_signal,
                       path_limits={"/v1/jobs": (config.max_video_bytes + MULTIPART_SLACK, "video")})
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics, metrics=metrics)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Content-Type", "Accept", "Range"],
                           max_age=600, expose_headers=EXPOSED_HEADERS)
    return app
