"""Operations: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics`` (Prometheus) and the API docs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from ... import __version__
from ..metrics import CONTENT_TYPE as METRICS_TYPE
from ..service import StylizeService

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


def add_routes(app: FastAPI, service: StylizeService) -> None:
    config, metrics = service.config, service.metrics
    router = APIRouter(tags=["operations"])

    @router.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD too
    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @router.head("/readyz", include_in_schema=False)
    @router.get("/readyz", summary="Readiness: the default style is loaded and warm")
    async def readyz() -> JSONResponse:
        admission = service.admission
        body = {"ready": service.ready, "reason": service.ready_reason, "default_style": config.default_style,
                "workers": admission.workers, "queue_depth": admission.queue_depth}
        return JSONResponse(body, status_code=200 if service.ready else 503)

    @router.get("/metrics", summary="Prometheus metrics (text format)", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        metrics.cache_bytes.set(service.cache.bytes)
        metrics.cache_entries.set(len(service.cache))
        return Response(metrics.render(), media_type=METRICS_TYPE)

    app.include_router(router)
    _add_docs(app)


def _add_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from local files (FastAPI's default page loads it from a CDN)."""
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
