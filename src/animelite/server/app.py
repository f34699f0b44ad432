"""The FastAPI application: routes, error handling, limits, metrics and the web page.

Create it with :func:`create_app` (``uvicorn --factory`` or ``animelite serve``).
Every error is answered as ``{"error": {"code": ..., "message": ...}}`` with a
message a person understands; tracebacks go to the server log only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, engine, imageio
from ..errors import AnimeliteError, ImageError, ModelError
from ..pipeline import MIN_SIZE
from .config import ServerConfig
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import ServerMetrics
from .service import (
    DEFAULT_FORMAT, DEFAULT_QUALITY, EXTENSIONS, OUTPUT_TYPES, PARAM_NAMES, BadParameter, CachedResult, Params,
    UPLOAD_LABEL, ServiceError, StylizeService, is_style, is_supported_image,
)

log = logging.getLogger("animelite.server")

MULTIPART_SLACK = 64 * 1024
HASH_OFF_LOOP_BYTES = 4 * 1024 * 1024  # form boundaries and small fields around the image
STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
                413: "too_large", 415: "unsupported_media_type", 422: "unreadable_image", 500: "internal_error",
                503: "unavailable", 504: "timeout"}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class UploadTooLarge(ServiceError):
    status, code = 413, "too_large"


def _plain(exc: Exception) -> str:
    """imageio's message without the "upload: " label it puts in front."""
    text = str(exc)
    prefix = UPLOAD_LABEL + ": "
    if not text.startswith(prefix):
        return text
    rest = text[len(prefix):]
    return "the file " + rest if rest.startswith(("is ", "looks ")) else rest


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


# ------------------------------------------------------------------------ ASGI guard
class Guard:
    """Outer ASGI layer: request metrics, the body-size limit (streamed), security headers."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, max_body: int):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        path: str = scope.get("path", "")
        m = self.metrics
        m.http_in_flight.inc()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if not path.startswith(("/docs", "/redoc")):
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise UploadTooLarge(self._too_large_message())
            return message

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                response = error_response(413, "too_large", self._too_large_message(), {"Connection": "close"})
                await response(scope, receive, send_with_headers)
                return
            await self.app(scope, limited_receive, send_with_headers)
        finally:
            m.http_in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            m.requests.inc(method=scope.get("method", ""), route=label, status=str(status[0]))
            m.request_seconds.observe(time.perf_counter() - start, route=label)

    def _too_large_message(self) -> str:
        return (f"the upload is larger than this server accepts ({_megabytes(self.max_body - MULTIPART_SLACK)}); "
                "send a smaller picture")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


# ------------------------------------------------------------------------ helpers
def wants_json(accept: str) -> bool:
    """True when the client asks for JSON explicitly and prefers it to an image."""
    json_q, image_q = 0.0, 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        mtype = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.lower().startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if mtype == "application/json":
            json_q = max(json_q, q)
        elif mtype.startswith("image/"):
            image_q = max(image_q, q)
    return json_q > 0 and json_q >= image_q


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _server_timing(timings_ms: dict[str, float], cache: str) -> str:
    parts = [f"{name};dur={value:.2f}" for name, value in timings_ms.items()]
    parts.append(f'cache;desc="{cache}"')
    return ", ".join(parts)


async def _read_raw(request: Request, limit: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadTooLarge(f"the picture is larger than this server accepts ({_megabytes(limit)}); "
                                 "send a smaller one")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes and any parameters sent as form fields."""
    mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mtype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=len(PARAM_NAMES) + 1) as form:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise BadParameter("no picture found: send it in a multipart form field named 'image'",
                                   code="missing_image")
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise UploadTooLarge(f"the picture is larger than this server accepts ({_megabytes(limit)}); "
                                     "send a smaller one")
            fields = {}
            for key, value in form.multi_items():
                if key == "image":
                    continue
                if not isinstance(value, str):
                    raise BadParameter(f"only the 'image' field may be a file, '{key}' is one too")
                fields[key] = value
        return data, fields
    if mtype == "application/x-www-form-urlencoded":
        raise ServiceError("send the picture as multipart/form-data (field 'image') or as the raw request body",
                           status=415, code="unsupported_media_type")
    return await _read_raw(request, limit), {}


# ------------------------------------------------------------------------ the app
DOCS_FALLBACK_HTML = """<!doctype html><meta charset="utf-8"><title>animelite API</title>
<p>The interactive API page needs the <code>swagger-ui-bundle</code> package
(<code>pip install 'animelite[server]'</code> installs it). The API description itself is at
<a href="/openapi.json">/openapi.json</a>.</p>"""


def _swagger_ui_dir():
    """Swagger UI's files from the swagger-ui-bundle package (so /docs works offline), or None."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = getattr(swagger_ui_bundle, "swagger_ui_path", None)
    return path if path and (Path(path) / "swagger-ui-bundle.js").is_file() else None


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """Build the application. ``config.stylizer_factory`` can replace the Stylizer (tests)."""
    config = (config or ServerConfig()).validate()
    metrics = ServerMetrics()
    service = StylizeService(config, metrics)
    static_dir = resources.files("animelite.server").joinpath("static")
    index_html = static_dir.joinpath("index.html").read_bytes()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.start_warmup()
        try:
            yield
        finally:
            service.shutdown()

    app = FastAPI(
        title="animelite",
        version=__version__,
        description=(
            "Photo-to-anime style transfer on the CPU. POST a photo to `/v1/stylize` and get the "
            "stylized picture back (or JSON with a data URL and per-stage timings with "
            "`Accept: application/json`). Errors are `{\"error\": {\"code\", \"message\"}}`. "
            "The AnimeGAN model weights are for non-commercial use only."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default page loads Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.service = service

    # -------------------------------------------------------------- errors
    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        status = exc.status_code
        code = STATUS_CODES.get(status, "error")
        if status == 404:
            message = f"there is nothing at {request.url.path}; the API is described at /docs"
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        else:
            message = str(exc.detail) if exc.detail else "the request could not be handled"
        return error_response(status, code, message, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return error_response(400, "bad_parameter", "invalid request: " + "; ".join(problems))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error",
                               "something went wrong on the server; the error was logged, please try again")

    def pipeline_error(exc: AnimeliteError, params: Params) -> ServiceError:
        if isinstance(exc, imageio.PixelLimitError):
            mp = exc.width * exc.height / 1e6
            return ServiceError(
                f"the picture is {exc.width}x{exc.height} ({mp:.1f} megapixels); this server accepts up to "
                f"{exc.max_pixels / 1e6:.1f} megapixels, please send a smaller one",
                status=413, code="too_many_pixels")
        if isinstance(exc, ImageError):
            return ServiceError(f"the picture cannot be read: {_plain(exc)}", status=422, code="unreadable_image")
        log.error("style '%s' failed: %s", params.style, exc)  # may name server paths: log only
        if type(exc).__name__ == "FacesUnavailable":
            return ServiceError("face enhancement is not installed on this server; try again with faces off",
                                status=400, code="faces_unavailable")
        if isinstance(exc, ModelError):
            how = f" at precision {params.precision}" if params.precision != "fp32" else ""
            return ServiceError(f"the style '{params.style}' cannot be used{how} right now (its model failed to "
                                "load); the server log has the details", status=503, code="model_unavailable")
        return ServiceError(f"the picture could not be stylized ({type(exc).__name__}); the server log has "
                            "the details", status=500, code="pipeline_error")

    # -------------------------------------------------------------- API
    q = Query  # documentation only: values are validated by the service, also when sent as form fields
    stylize_body = {
        "required": True,
        "description": "The photo: a multipart form field `image`, or the raw bytes as the body. "
                       "The format is read from the content, not from the name or Content-Type.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    image_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "The stylized picture (or JSON with `Accept: application/json`). Headers "
                             "`Server-Timing` and `X-Animelite-Timings` give the time of each stage.",
              "content": {t: {} for t in OUTPUT_TYPES.values()} | {"application/json": {}}},
        400: {"description": "bad parameter, unknown style or no picture"},
        404: {"description": "style not installed on this server"},
        413: {"description": "upload or pixel count above the limit"},
        415: {"description": "not an image in a supported format"},
        422: {"description": "truncated or corrupt image"},
        503: {"description": "busy (queue full): retry after `Retry-After` seconds"},
        504: {"description": "took longer than the server's time limit"},
    }

    @app.post("/v1/stylize", summary="Stylize a photo", tags=["stylize"], responses=image_responses,
              openapi_extra={"requestBody": stylize_body})
    async def stylize(
        request: Request,
        style: str | None = q(None, description=f"style name (default {config.default_style}); see /v1/styles"),
        size: str | None = q(None, description=f"working long side in pixels, {MIN_SIZE}..{config.max_size} "
                                                f"(default {config.default_size})"),
        format: str | None = q(None, description=f"output: jpg, png or webp (default {DEFAULT_FORMAT})"),  # noqa: A002
        quality: str | None = q(None, description=f"jpg/webp quality 1..100 (default {DEFAULT_QUALITY})"),
        precision: str | None = q(None, description=f"inference precision: {', '.join(engine.PRECISIONS)} "
                                                     "(what the server's backend supports)"),
        mode: str | None = q(None, description="pipeline mode, when the pipeline has modes (see /v1/styles)"),
        faces: str | None = q(None, description="true: enhance faces (when the server's pipeline supports it)"),
        face_style: str | None = q(None, description="style for the faces (when supported)"),
    ) -> Response:
        start = time.perf_counter()
        deadline = start + config.timeout
        raw = dict(request.query_params)
        if "multipart/" not in request.headers.get("content-type", ""):
            service.parse_params(raw)  # bad parameters are refused before the upload is read
        data, fields = await read_upload(request, config.max_upload_bytes)
        for key, value in fields.items():
            raw.setdefault(key, value)
        params = service.parse_params(raw)
        if not data:
            raise BadParameter("no picture was sent (the body is empty)", code="missing_image")
        if not is_supported_image(data[:32]):
            try:  # only the sniffing runs here (no decoder accepts the prefix): cheap, and the best message
                imageio.decode_image(data[:64], name=UPLOAD_LABEL)
                message = "the file is not an image in a supported format"
            except ImageError as exc:
                message = _plain(exc)
            raise ServiceError(message, status=415, code="not_an_image")
        if len(data) > HASH_OFF_LOOP_BYTES:  # hashing megabytes would hold up every other request
            key = await asyncio.to_thread(service.key_for, data, params)
        else:
            key = service.key_for(data, params)
        entry = service.cached(key)
        if entry is not None:
            timings = {"cache": _ms(time.perf_counter() - start)}
            return _image_response(request, entry, "hit", timings, start)
        try:
            entry = await service.run(service.process, data, params, key, deadline=deadline)
        except ServiceError:
            raise
        except AnimeliteError as exc:
            raise pipeline_error(exc, params) from None
        timings = {"queue": _ms(entry.meta.get("queue", 0.0))}
        if entry.meta.get("cache") == "disk":
            timings["cache"] = _ms(entry.meta.get("disk_read", 0.0))
        else:
            timings.update({k: _ms(v) for k, v in entry.meta.get("timings", {}).items()})
        return _image_response(request, entry, entry.meta.get("cache", "miss"), timings, start)

    def _image_response(request: Request, entry: CachedResult, cache: str, timings: dict[str, float],
                        start: float) -> Response:
        meta = entry.meta
        timings = {**timings, "total": _ms(time.perf_counter() - start)}
        headers = {
            "Server-Timing": _server_timing(timings, cache),
            "X-Animelite-Timings": json.dumps(timings, separators=(",", ":")),
            "X-Animelite-Cache": cache,
            "X-Animelite-Style": meta["style"],
            "X-Animelite-Size": f"{meta['width']}x{meta['height']}",
            "Cache-Control": "no-store",
            "Vary": "Accept",
        }
        if wants_json(request.headers.get("accept", "")):
            body: dict[str, Any] = {
                "image": f"data:{meta['content_type']};base64," + base64.b64encode(entry.data).decode("ascii"),
                "content_type": meta["content_type"], "format": meta["format"],
                "width": meta["width"], "height": meta["height"],
                "input_width": meta["input_width"], "input_height": meta["input_height"],
                "style": meta["style"], "size": meta["size"], "bytes": len(entry.data),
                "cache": cache, "timings_ms": timings,
            }
            if "faces_found" in meta:
                body["faces_found"] = meta["faces_found"]
            if cache != "miss":
                body["original_timings_ms"] = {k: _ms(v) for k, v in meta.get("timings", {}).items()}
            return JSONResponse(body, headers=headers)
        name = f"animelite-{meta['style']}.{EXTENSIONS[meta['format']]}"
        headers["Content-Disposition"] = f'inline; filename="{name}"'
        return Response(entry.data, media_type=meta["content_type"], headers=headers)

    @app.get("/v1/styles", summary="The styles, whether each is installed, licence and preview", tags=["styles"])
    async def styles() -> dict[str, Any]:
        items = []
        fs = service.face_support
        for s in service.store.styles():
            if not is_style(s):
                continue
            present = service._present(s)
            items.append({
                "name": s.name, "family": s.family, "description": s.description, "present": present,
                "licence": s.licence, "non_commercial": s.non_commercial, "aliases": list(s.aliases),
                "preview_url": f"/v1/styles/{s.name}/preview" if present else None,
            })
        return {
            "default_style": config.default_style,
            "styles": items,
            "sizes": {"default": config.default_size, "min": MIN_SIZE, "max": config.max_size},
            "formats": ["jpg", "png", "webp"],
            "precisions": list(engine.PRECISIONS),
            "modes": list(service.modes),
            "faces": {"supported": fs.supported, "available": fs.supported and fs.available,
                      "modes": list(fs.modes), "default": fs.default},
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                       "timeout_seconds": config.timeout},
        }

    @app.get("/v1/styles/{name}/preview", summary="The style applied to the bundled sample picture",
             tags=["styles"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown or not installed"}})
    async def preview(name: str) -> Response:
        try:
            style = service.lookup_style(name)
        except BadParameter as exc:
            raise ServiceError(exc.message, status=404, code=exc.code) from None
        try:
            data = await service.preview(style.name)
        except AnimeliteError as exc:
            raise pipeline_error(exc, service.preview_params(style.name)) from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/healthz", summary="Liveness: the process answers", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", summary="Readiness: the default style is loaded and warm", tags=["operations"])
    async def readyz() -> JSONResponse:
        body = {"ready": service.ready, "reason": service.ready_reason, "default_style": config.default_style,
                "workers": service.workers, "queue_depth": service.queue_depth}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (text format)", tags=["operations"],
             response_class=PlainTextResponse)
    async def prometheus() -> Response:
        metrics.cache_bytes.set(service.cache.bytes)
        metrics.cache_entries.set(len(service.cache))
        return Response(metrics.render(), media_type=METRICS_TYPE)

    # -------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    # -------------------------------------------------------------- API docs, offline
    swagger_dir = _swagger_ui_dir()

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        if swagger_dir is None:
            return HTMLResponse(DOCS_FALLBACK_HTML)
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url=app.openapi_url, title="animelite API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    if swagger_dir is not None:
        app.mount("/docs/assets", StaticFiles(directory=str(swagger_dir)), name="docs-assets")

    # -------------------------------------------------------------- outer layers (last added = outermost)
    app.add_middleware(Guard, metrics=metrics, max_body=config.max_upload_bytes + MULTIPART_SLACK)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept"], max_age=600,
            expose_headers=["Server-Timing", "X-Animelite-Timings", "X-Animelite-Cache", "X-Animelite-Size",
                            "Retry-After", "Content-Disposition"],
        )
    return app
