"""The web page: ``/`` and its static files (``/static``), served from the package."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..service import StylizeService


def add_routes(app: FastAPI, _service: StylizeService) -> None:
    static_dir = resources.files("animelite.server").joinpath("static")
    index_html = static_dir.joinpath("index.html").read_bytes()
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")
