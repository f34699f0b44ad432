"""Every error the HTTP API answers, and the one place that turns an exception into a status and a JSON body.

Each answer is ``{"error": {"code": ..., "message": ...}}`` with a message a
person understands; tracebacks and server paths go to the log only. The
mapping, in one table (:func:`service_error` and :func:`install`):

- :class:`ServiceError` and its subclasses carry their own status and code;
- :class:`~animelite.options.OptionError` (the pipeline refused an option) -> 400 ``bad_parameter``;
- :class:`~animelite.errors.StyleError` -> 400 ``unknown_style`` (a known style
  that is not installed is found before, by the style lookup: 404);
- face enhancement not installed (``FacesUnavailable``) -> 400 ``faces_unavailable``;
- too many pixels -> 413, any other unreadable picture -> 422;
- a model that cannot be loaded: 503 + ``Retry-After`` only when the cause
  passes (memory, file handles: :func:`is_transient`), else 422
  ``model_unavailable`` with the reason: a permanent condition (e.g. no INT8
  model for that style) is not "try again later";
- FastAPI's own 404/405/validation errors keep their status with our shape;
- a client that hangs up before its request is complete: one log line and
  the status label 499 in ``/metrics`` (not a 500 with a traceback);
- anything else: 500 with no details.
"""

from __future__ import annotations

import errno
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import imageio
from ..errors import AnimeliteError, ImageError, ModelError, StyleError
from ..faces import FacesUnavailable
from ..options import OptionError

log = logging.getLogger("animelite.server")

UPLOAD_LABEL = "upload"  # what imageio calls the picture in its messages
SHOWN_CHARS = 40  # the longest piece of a request echoed back in a message
CLIENT_CLOSED = 499  # nginx's "client closed request": the status label in /metrics; nobody receives it
STATUS_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
                408: "request_timeout", 413: "too_large", 415: "unsupported_media_type", 422: "unreadable_image",
                500: "internal_error", 503: "unavailable", 504: "timeout"}


# ----------------------------------------------------------------------------- the errors
class ServiceError(AnimeliteError):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadParameter(ServiceError):
    status, code = 400, "bad_parameter"


class Busy(ServiceError):
    status, code = 503, "busy"


class ShuttingDown(ServiceError):
    status, code = 503, "shutting_down"


class TimedOut(ServiceError):
    status, code = 504, "timeout"


class UploadTooLarge(ServiceError):
    status, code = 413, "too_large"


class BodyTimeout(ServiceError):
    """The client stopped sending its body: answered, then the connection is closed."""

    status, code = 408, "body_timeout"


# ----------------------------------------------------------------------------- helpers
def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to *limit* characters with "...": a request's text is never echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clipped(text: str, limit: int = SHOWN_CHARS) -> str:
    """*text* (a path, say) cut to *limit* characters with "..."."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def plain(exc: Exception) -> str:
    """imageio's message without the "upload: " label it puts in front."""
    text = str(exc)
    prefix = UPLOAD_LABEL + ": "
    if not text.startswith(prefix):
        return text
    rest = text[len(prefix):]
    return "the file " + rest if rest.startswith(("is ", "looks ")) else rest


_PATH = re.compile(r"(?<![\w.~])(?:/[^\s'\"`,;:()]+)+")


def scrub_paths(text: str) -> str:
    """*text* with every absolute path cut to its last part: the server's paths stay in its log."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


_TRANSIENT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EBUSY, errno.ETXTBSY}
_TRANSIENT_WORDS = ("bad_alloc", "bad allocation", "failed to allocate", "out of memory")


def is_transient(exc: BaseException) -> bool:
    """Whether a failure comes from a passing shortage (memory, file handles) rather than from the files or options.

    Follows the chain of causes: a ModelError raised from a MemoryError or an
    EMFILE OSError is transient, one raised because a file is missing, corrupt
    or was never made (no INT8 model) is not.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MemoryError) or (isinstance(cur, OSError) and cur.errno in _TRANSIENT_ERRNOS):
            return True
        if any(word in str(cur).lower() for word in _TRANSIENT_WORDS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


# ----------------------------------------------------------------------------- the mapping
def service_error(exc: Exception, *, style: str | None = None, precision: str | None = None) -> ServiceError:
    """The answer for an exception raised while serving a request (*style*/*precision*: what it asked for)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, OptionError):
        return BadParameter(str(exc))
    if isinstance(exc, imageio.PixelLimitError):
        mp = exc.width * exc.height / 1e6
        return ServiceError(
            f"the picture is {exc.width}x{exc.height} ({mp:.1f} megapixels); this server accepts up to "
            f"{exc.max_pixels / 1e6:.1f} megapixels, please send a smaller one",
            status=413, code="too_many_pixels")
    if isinstance(exc, ImageError):
        return ServiceError(f"the picture cannot be read: {plain(exc)}", status=422, code="unreadable_image")
    if isinstance(exc, StyleError):
        return BadParameter(str(exc), code="unknown_style")
    log.error("style '%s' failed: %s", style, exc)  # may name server paths: log only
    if isinstance(exc, FacesUnavailable):
        return BadParameter("face enhancement is not installed on this server; try again with faces off",
                            code="faces_unavailable")
    if isinstance(exc, ModelError):
        how = f" at precision {precision}" if precision and precision != "fp32" else ""
        name = f"the style '{style}'" if style else "the style"
        if is_transient(exc):
            return ServiceError(f"{name} cannot be used{how} right now (the server is short of memory or file "
                                "handles); please try again shortly", status=503, code="model_unavailable",
                                headers={"Retry-After": "5"})
        return ServiceError(f"{name} cannot be used{how} on this server: {scrub_paths(str(exc))}",
                            status=422, code="model_unavailable")
    return ServiceError(f"the picture could not be stylized ({type(exc).__name__}); the server log has "
                        "the details", status=500, code="pipeline_error")


def install(app: FastAPI) -> None:
    """Register the handlers that answer every exception with the JSON error shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.headers or None)

    @app.exception_handler(AnimeliteError)
    async def _animelite_error(_request: Request, exc: AnimeliteError):
        err = service_error(exc)
        return error_response(err.status, err.code, err.message, err.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        status = exc.status_code
        code = STATUS_CODES.get(status, "error")
        if status == 404:
            message = f"there is nothing at {clipped(request.url.path)}; the API is described at /docs"
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = (f"{request.method} is not allowed on {request.url.path}"
                       + (f"; use {allowed}" if allowed else ""))
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

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect):
        # Not a server error: one line in the log, "499" in the request metrics, no answer (nobody is listening).
        who = request.client.host if request.client else "a client"
        log.info("%s hung up during %s %s before sending the whole request", who, request.method,
                 clipped(request.url.path))
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error",
                              "something went wrong on the server; the error was logged, please try again")
