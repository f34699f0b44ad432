"""The ASGI layers around the routes, one job each: request metrics, security headers, the body limits.

Outermost first (as :func:`animelite.server.app.create_app` stacks them):
:class:`RequestMetrics` counts every answer by route and status (also those
the inner layers give), :class:`SecurityHeaders` adds the headers every
answer carries, :class:`BodyLimit` bounds the request body: its size (413)
and the pause between two of its pieces (408; a stalled upload must not hold
a connection for ever, see :mod:`.connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTimeout, ShuttingDown, UploadTooLarge, error_response
from .metrics import ServerMetrics
from .uploads import MULTIPART_SLACK, megabytes

# media-src blob: plays the picked clip before it is uploaded; connect-src 'self' covers ws(s):// to this host
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                     (b"x-frame-options", b"DENY")]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestMetrics:
    """Counts requests by method, route and status; times them by route; tracks requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        m = self.metrics
        m.http_in_flight.inc()

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            m.http_in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            m.requests.labels(method=scope.get("method", ""), route=label, status=str(status[0])).inc()
            m.request_seconds.labels(route=label).observe(time.perf_counter() - start)


class SecurityHeaders:
    """nosniff, no referrer, no framing, and a strict Content-Security-Policy (except on the API docs)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _SECURITY_HEADERS
                if not path.startswith(("/docs", "/redoc")):
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses a body above ``max_body`` bytes: at once from Content-Length, else while it streams in (413);
    and one that stalls: no piece for ``body_timeout`` seconds while the application waits for one (408)."""

    def __init__(self, app: ASGIApp, max_body: int, body_timeout: float, metrics: ServerMetrics,
                 drain_signal: Callable[[], AbstractContextManager[asyncio.Future]] | None = None,
                 path_limits: dict[str, tuple[int, str]] | None = None):
        self.app = app
        self.max_body = max_body
        # exact paths with their own limit and the word for what they take (video uploads: POST /v1/jobs)
        self.path_limits = path_limits or {}
        self.body_timeout = body_timeout
        self.metrics = metrics
        self.drain_signal = drain_signal  # when the server stops, an unfinished upload is answered 503 at once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body, what = self.path_limits.get(scope.get("path", ""), (self.max_body, "picture"))
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            response = error_response(413, "too_large", self._too_large_message(max_body, what),
                                      {"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body, receive() only waits for a disconnect: no deadline
                return await receive()
            message = await self._next_piece(receive, received)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > max_body:
                    raise UploadTooLarge(self._too_large_message(max_body, what))
            return message

        await self.app(scope, limited_receive, send)

    async def _next_piece(self, receive: Receive, received: int) -> Message:
        piece = asyncio.ensure_future(receive())
        with self.drain_signal() if self.drain_signal else contextlib.nullcontext(None) as stopping:
            waits = {piece} if stopping is None else {piece, stopping}
            try:
                done, _ = await asyncio.wait(waits, timeout=self.body_timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not piece.done():
                    piece.cancel()
        if piece in done:
            return piece.result()
        if stopping is not None and stopping in done:
            raise ShuttingDown("the server is shutting down and takes no new pictures",
                               headers={"Retry-After": "5", "Connection": "close"})
        self.metrics.connections_dropped.labels(reason="body_timeout").inc()
        raise BodyTimeout(f"the upload stalled: nothing arrived for {self.body_timeout:g} s "
                          f"({received} bytes received); the connection is closed", headers={"Connection": "close"})

    @staticmethod
    def _too_large_message(max_body: int, what: str) -> str:
        return (f"the upload is larger than this server accepts ({megabytes(max_body - MULTIPART_SLACK)}); "
                f"send a smaller {what}")
