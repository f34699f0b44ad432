"""``POST /v1/stylize``: a photo in, the stylized picture out (or JSON with a data URL and the timings)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from ...errors import AnimeliteError
from ...options import FACE_MODES, FORMAT_EXTENSIONS, FORMAT_MIME, MIN_SIZE, MODES, PRECISION_CHOICES
from ..cache import CachedResult
from ..errors import service_error
from ..params import DEFAULT_FORMAT, HTTP_DEFAULT_QUALITY, PARAM_NAMES
from ..service import StylizeService
from ..uploads import check_image, is_multipart, read_upload

HASH_OFF_LOOP_BYTES = 4 * 1024 * 1024  # above this, the cache key is hashed on a thread

STYLIZE_BODY = {
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
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The stylized picture (or JSON with `Accept: application/json`). Headers "
                         "`Server-Timing` and `X-Animelite-Timings` give the time of each stage.",
          "content": {t: {} for t in FORMAT_MIME.values()} | {"application/json": {}}},
    400: {"description": "bad parameter, unknown style or no picture"},
    404: {"description": "style not installed on this server"},
    413: {"description": "upload or pixel count above the limit"},
    415: {"description": "not an image in a supported format"},
    422: {"description": "truncated or corrupt image, or a model this server cannot load (the reason says why)"},
    503: {"description": "busy (queue full) or short of memory: retry after `Retry-After` seconds"},
    504: {"description": "took longer than the server's time limit"},
}


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


def image_response(request: Request, entry: CachedResult, cache: str, timings: dict[str, float],
                   start: float) -> Response:
    """The picture (or JSON with a data URL) with its timing, cache and size headers."""
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
    name = f"animelite-{meta['style']}{FORMAT_EXTENSIONS[meta['format']]}"
    headers["Content-Disposition"] = f'inline; filename="{name}"'
    return Response(entry.data, media_type=meta["content_type"], headers=headers)


def add_routes(app: FastAPI, service: StylizeService) -> None:
    config = service.config
    router = APIRouter()
    q = Query  # documentation only: the values are parsed by .params, also when sent as form fields

    @router.post("/v1/stylize", summary="Stylize a photo", tags=["stylize"], responses=IMAGE_RESPONSES,
                 openapi_extra={"requestBody": STYLIZE_BODY})
    async def stylize(
        request: Request,
        style: str | None = q(None, description=f"style name (default {config.default_style}); see /v1/styles"),
        size: str | None = q(None, description=f"working long side in pixels, {MIN_SIZE}..{config.max_size} "
                                                f"(default {config.default_size})"),
        format: str | None = q(None, description=f"output: jpg, png or webp (default {DEFAULT_FORMAT})"),  # noqa: A002
        quality: str | None = q(None, description=f"jpg/webp quality 1..100 (default {HTTP_DEFAULT_QUALITY})"),
        precision: str | None = q(None, description=f"inference precision: {', '.join(PRECISION_CHOICES)} "
                                                     "(what the server's backend supports)"),
        mode: str | None = q(None, description=f"pipeline mode: {', '.join(MODES)} (default full)"),
        faces: str | None = q(None, description=f"face enhancement: {', '.join(FACE_MODES)} or true/false "
                                                 "(default: auto when face_style is given or the face detector "
                                                 "is installed)"),
        face_style: str | None = q(None, description="style for the faces (turns faces on when faces is left out)"),
    ) -> Response:
        start = time.perf_counter()
        deadline = start + config.timeout
        raw = dict(request.query_params)
        if not is_multipart(request):
            service.parse_params(raw)  # bad parameters are refused before the upload is read
        data, fields = await read_upload(request, config.max_upload_bytes, len(PARAM_NAMES))
        for key, value in fields.items():
            raw.setdefault(key, value)
        params = service.parse_params(raw)
        check_image(data, request.headers.get("content-type", ""))
        if len(data) > HASH_OFF_LOOP_BYTES:  # hashing megabytes would hold up every other request
            key = await asyncio.to_thread(service.key_for, data, params)
        else:
            key = service.key_for(data, params)
        entry = service.cached(key)
        if entry is not None:
            timings = {"cache": _ms(time.perf_counter() - start)}
            return image_response(request, entry, "hit", timings, start)
        try:
            entry = await service.run(data, params, key, deadline=deadline)
        except AnimeliteError as exc:
            raise service_error(exc, style=params.style, precision=params.precision) from None
        timings = {"queue": _ms(entry.meta.get("queue", 0.0))}
        if entry.meta.get("cache") == "disk":
            timings["cache"] = _ms(entry.meta.get("disk_read", 0.0))
        else:
            timings.update({k: _ms(v) for k, v in entry.meta.get("timings", {}).items()})
        return image_response(request, entry, entry.meta.get("cache", "miss"), timings, start)

    app.include_router(router)
