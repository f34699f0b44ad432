"""Video jobs: ``POST /v1/jobs`` (a clip in, 202 and a job id out), ``GET`` its status and result, ``DELETE`` it.

The upload is streamed to a file in the job store (never held in memory),
then sniffed by content before anything is queued: a photo or anything that
is not a video is refused with 415, a clip longer than the server's limit with
413 (a body over the byte limit is refused by :class:`~..middleware.BodyLimit`
while it streams in, 413 too). The result is served with ``Range`` support
(Starlette's ``FileResponse``: 206 + ``Content-Range``, ``Accept-Ranges``), so a
browser can play it while it downloads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from ...errors import AnimeliteError
from ..errors import BadParameter, ServiceError, UploadTooLarge, service_error, shown
from ..jobs import ACTIVE, DONE, Job
from ..params import VIDEO_PARAM_NAMES
from ..service import StylizeService
from ..uploads import form_fields, is_multipart, is_supported_image, megabytes

VIDEO_MIME = {"mp4": "video/mp4", "webm": "video/webm"}
CHUNK = 1024 * 1024
CANCEL_WAIT = 2.0  # seconds DELETE waits for a running job to stop before answering

JOB_BODY = {
    "required": True,
    "description": "The clip: a multipart form field `video`, or the raw bytes as the body. The format is read "
                   "from the content (any container FFmpeg reads: MP4, MOV, MKV, WebM, AVI...).",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["video"], "properties": {
            "video": {"type": "string", "format": "binary"}}}},
        "video/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _not_found(job_id: str) -> ServiceError:
    return ServiceError(f"there is no video job {shown(job_id)} on this server (finished jobs are kept for a "
                        "limited time)", status=404, code="job_not_found")


async def _receive(request: Request, dest: Path, limit: int) -> dict[str, str]:
    """Stream the clip into *dest*; the form fields sent with it (multipart) are returned."""
    fields: dict[str, str] = {}
    if is_multipart(request):
        async with request.form(max_files=1, max_fields=len(VIDEO_PARAM_NAMES) + 1) as form:
            upload = form.get("video")
            if upload is None or isinstance(upload, str):
                raise BadParameter("no video found: send it in a multipart form field named 'video'",
                                   code="missing_video")
            fields = form_fields(form, "video")
            await upload.seek(0)
            copied = await asyncio.to_thread(_copy, upload.file, dest, limit)
    else:
        copied = 0
        with open(dest, "wb") as out:
            async for chunk in request.stream():
                copied += len(chunk)
                if copied > limit:
                    raise UploadTooLarge(_too_large(limit))
                out.write(chunk)
    if copied == 0:
        raise BadParameter("no video was sent (the body is empty)", code="missing_video")
    return fields


def _copy(src, dest: Path, limit: int) -> int:
    total = 0
    with open(dest, "wb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                return total
            total += len(chunk)
            if total > limit:
                raise UploadTooLarge(_too_large(limit))
            out.write(chunk)


def _too_large(limit: int) -> str:
    return f"the video is larger than this server accepts ({megabytes(limit)}); send a shorter or smaller one"


def sniff_video(path: Path, max_seconds: float) -> dict[str, Any]:
    """415 unless *path* holds a video (by content), 413 when it is longer than *max_seconds*; its probe info."""
    from ...video import VideoError, is_video, probe_video

    with open(path, "rb") as f:
        head = f.read(64)
    if is_supported_image(head[:32]):
        raise ServiceError("the file is a photo, not a video: send photos to /v1/stylize", status=415,
                           code="not_a_video")
    if not is_video(path):
        raise ServiceError("the file is not a video in a format this server reads", status=415,
                           code="not_a_video")
    try:
        info = probe_video(path)
    except VideoError as exc:
        raise ServiceError(f"the video cannot be read: {_plain_video(exc, path)}", status=422,
                           code="unreadable_video") from None
    duration = info.duration_s
    if duration is not None and duration > max_seconds:
        raise ServiceError(f"the video is {duration:.1f} s long; this server accepts up to {max_seconds:g} s, "
                           "please send a shorter one", status=413, code="too_long")
    return {"duration_s": duration}


def _plain_video(exc: Exception, path: Path) -> str:
    return str(exc).replace(str(path), "the video").replace(path.name, "the video")


def add_routes(app: FastAPI, service: StylizeService) -> None:
    config = service.config
    jobs = service.jobs
    router = APIRouter(tags=["video jobs"])
    q = Query

    @router.post("/v1/jobs", status_code=202, summary="Stylize a video (a job: poll its status_url)",
                 openapi_extra={"requestBody": JOB_BODY},
                 responses={202: {"description": "queued: `{\"id\", \"status_url\"}`"},
                            400: {"description": "bad parameter or no video"},
                            413: {"description": "upload or duration above the limit"},
                            415: {"description": "not a video"},
                            503: {"description": "too many jobs: retry after `Retry-After` seconds"}})
    async def create_job(
        request: Request,
        style: str | None = q(None, description=f"style name (default {config.default_style})"),
        size: str | None = q(None, description="working long side in pixels (default 512)"),
        temporal: str | None = q(None, description="temporal stability: off, default or strong"),
        format: str | None = q(None, description="output container: mp4 (H.264) or webm (VP9)"),  # noqa: A002
        precision: str | None = q(None, description="inference precision"),
        faces: str | None = q(None, description="face enhancement (auto, off, ...)"),
        face_style: str | None = q(None, description="style for the faces"),
        mode: str | None = q(None, description="pipeline mode"),
    ) -> JSONResponse:
        raw = dict(request.query_params)
        if not is_multipart(request):
            service.parse_video_params(raw)  # bad parameters are refused before the upload is read
        jobs.check_capacity()  # and a full queue (503) too
        dest = jobs.store.upload_path()
        try:
            fields = await _receive(request, dest, config.max_video_bytes)
            for key, value in fields.items():
                raw.setdefault(key, value)
            params = service.parse_video_params(raw)
            await asyncio.to_thread(sniff_video, dest, config.max_video_seconds)
            try:  # the Stylizer validates the options (OptionError: 400) and loads the model before queueing
                await asyncio.to_thread(service.video_stylizer, params)
            except AnimeliteError as exc:
                raise service_error(exc, style=params["style"], precision=params["precision"]) from None
            job = jobs.submit(params, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        url = f"/v1/jobs/{job.id}"
        return JSONResponse({"id": job.id, "status_url": url, "status": job.status}, status_code=202,
                            headers={"Location": url, "Cache-Control": "no-store"})

    def _job(job_id: str) -> Job:
        job = jobs.store.get(job_id)
        if job is None:
            raise _not_found(job_id)
        return job

    @router.get("/v1/jobs/{job_id}", summary="A video job's status and progress")
    async def job_status(job_id: str) -> JSONResponse:
        return JSONResponse(_job(job_id).public(), headers={"Cache-Control": "no-store"})

    @router.head("/v1/jobs/{job_id}/result", include_in_schema=False)
    @router.get("/v1/jobs/{job_id}/result", summary="The finished video (supports Range requests)",
                response_class=FileResponse,
                responses={200: {"content": {m: {} for m in VIDEO_MIME.values()}},
                           206: {"description": "the part asked for with Range"},
                           404: {"description": "unknown job"}, 409: {"description": "not finished"}})
    async def job_result(job_id: str) -> FileResponse:
        job = _job(job_id)
        path = jobs.store.result_path(job)
        if job.status != DONE or not path.is_file():
            what = "is still " + job.status if job.status in ACTIVE else "ended " + job.status
            raise ServiceError(f"the video job {what}; its result is not available", status=409,
                               code="job_not_done")
        return FileResponse(path, media_type=VIDEO_MIME.get(job.format, "application/octet-stream"),
                            filename=f"animelite-{job.params.get('style', 'video')}.{job.format}",
                            content_disposition_type="inline", headers={"Cache-Control": "private, max-age=3600"})

    @router.delete("/v1/jobs/{job_id}", summary="Cancel a job (or delete a finished one and its result)")
    async def delete_job(job_id: str) -> JSONResponse:
        job = _job(job_id)
        if jobs.cancel(job):
            loop = asyncio.get_running_loop()
            end = loop.time() + CANCEL_WAIT
            while job.status in ACTIVE and loop.time() < end:
                await asyncio.sleep(0.05)
            return JSONResponse(job.public(), headers={"Cache-Control": "no-store"})
        jobs.store.remove(job)
        jobs.gauges()
        return JSONResponse({"id": job.id, "status": "deleted"}, headers={"Cache-Control": "no-store"})

    app.include_router(router)
