"""Read the picture out of a request (a multipart field ``image`` or the raw body), bounded in bytes, and sniff it.

The format is recognised from the first bytes (the decoders' own sniffers),
never from a file name or a Content-Type (any body that is not multipart is
the raw picture, whatever its label); nothing here decodes the picture.
"""

from __future__ import annotations

from fastapi import Request

from .. import imageio
from ..errors import ImageError
from .errors import UPLOAD_LABEL, BadParameter, ServiceError, UploadTooLarge, plain, shown

MULTIPART_SLACK = 64 * 1024  # form boundaries and small fields around the image


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


def _too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(f"the picture is larger than this server accepts ({megabytes(limit)}); send a smaller one")


async def _read_raw(request: Request, limit: int) -> bytes:
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def is_multipart(request: Request) -> bool:
    return _media_type(request) == "multipart/form-data"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def form_fields(form, file_field: str) -> dict[str, str]:
    """The text fields of a multipart *form* besides its one file, *file_field*; another file is refused (400)."""
    fields = {}
    for key, value in form.multi_items():
        if key == file_field:
            continue
        if not isinstance(value, str):
            raise BadParameter(f"only the '{file_field}' field may be a file, {shown(key)} is one too")
        fields[key] = value
    return fields


async def read_upload(request: Request, limit: int, max_fields: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes and any parameters sent as form fields (at most *max_fields* of them)."""
    mtype = _media_type(request)
    if mtype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=max_fields + 1) as form:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise BadParameter("no picture found: send it in a multipart form field named 'image'",
                                   code="missing_image")
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise _too_large(limit)
            fields = form_fields(form, "image")
        return data, fields
    # Anything else is the raw picture, whatever its label: `curl --data-binary @photo.jpg` sends
    # application/x-www-form-urlencoded, and the content is sniffed anyway (check_image).
    return await _read_raw(request, limit), {}


def is_supported_image(prefix: bytes) -> bool:
    """Whether a supported decoder recognises these first bytes (content sniffing, no decoding)."""
    from PIL import Image

    Image.init()
    for fmt in (*imageio.SUPPORTED_INPUT_FORMATS, "MPO"):
        entry = Image.OPEN.get(fmt)
        if entry is None:
            continue
        accept = entry[1]
        try:
            verdict = accept(prefix) if accept is not None else False
        except Exception:  # noqa: BLE001 - a sniffer choking on odd bytes means "not mine"
            continue
        if verdict and not isinstance(verdict, str):
            return True
    return False


def check_image(data: bytes, content_type: str = "") -> None:
    """Refuse an empty body (400) or bytes no supported decoder recognises (415, naming the format when known)."""
    if not data:
        raise BadParameter("no picture was sent (the body is empty)", code="missing_image")
    if is_supported_image(data[:32]):
        return
    try:  # only the sniffing runs here (no decoder accepts the prefix): cheap, and the best message
        imageio.decode_image(data[:64], name=UPLOAD_LABEL)
        message = "the file is not an image in a supported format"
    except ImageError as exc:
        message = plain(exc)
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded" and b"=" in data[:256]:
        message += ("; the body looks like form fields: send the picture as multipart/form-data (field 'image') "
                    "or as the raw request body")
    raise ServiceError(message, status=415, code="not_an_image")
