"""The style catalog: ``GET /v1/styles`` (what this server offers) and ``GET /v1/styles/{name}/preview``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from ...errors import AnimeliteError
from ...options import DEFAULT_BACKEND, MIN_SIZE, MODES, OUTPUT_FORMATS, PRECISION_CHOICES
from ...quantize import auto_precision
from ..errors import BadParameter, ServiceError, service_error
from ..params import LIVE_DEFAULT_SIZE, LIVE_MAX_SIZE, is_style
from ..service import StylizeService

FORMAT_NAMES = ["jpg" if f == "jpeg" else f for f in OUTPUT_FORMATS]


def add_routes(app: FastAPI, service: StylizeService) -> None:
    config = service.config
    router = APIRouter(tags=["styles"])

    @router.get("/v1/styles", summary="The styles, whether each is installed, licence and preview")
    async def styles() -> dict[str, Any]:
        items = []
        for s in service.store.styles():
            if not is_style(s):
                continue
            present = service.present(s)
            items.append({
                "name": s.name, "family": s.family, "description": s.description, "present": present,
                "licence": s.licence, "non_commercial": s.non_commercial, "aliases": list(s.aliases),
                "preview_url": f"/v1/styles/{s.name}/preview" if present else None,
                # what precision="auto" (the default) runs this style at here, and why
                "auto_precision": dict(zip(("precision", "why"), auto_precision(s, config.backend or DEFAULT_BACKEND))),
            })
        fs = service.face_support
        return {
            "default_style": config.default_style,
            "styles": items,
            "sizes": {"default": config.default_size, "min": MIN_SIZE, "max": config.max_size},
            "formats": FORMAT_NAMES,
            "precisions": list(PRECISION_CHOICES),
            "modes": list(MODES),
            "faces": {"supported": fs.supported, "available": fs.available, "modes": list(fs.modes),
                      "default": fs.default},
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                       "timeout_seconds": config.timeout,
                       "video": {"max_video_bytes": config.max_video_bytes,
                                 "max_video_seconds": config.max_video_seconds},
                       "live": {"default_size": LIVE_DEFAULT_SIZE, "max_size": min(LIVE_MAX_SIZE, config.max_size),
                                "max_frame_bytes": config.live_max_frame_bytes}},
        }

    @router.get("/v1/styles/{name}/preview", summary="The style applied to the bundled sample picture",
                response_class=Response,
                responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown or not installed"}})
    async def preview(name: str) -> Response:
        try:
            style = service.lookup_style(name)
        except BadParameter as exc:
            raise ServiceError(exc.message, status=404, code=exc.code) from None
        try:
            data = await service.preview(style.name)
        except AnimeliteError as exc:
            raise service_error(exc, style=style.name, precision="fp32") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    app.include_router(router)
