"""The ASGI layers around the routes, one job each: request metrics, security headers, the body limit.

Outermost first (as :func:`animelite.server.app.create_app` stacks them):
:class:`RequestMetrics` counts every answer by route and status (also those
the inner layers give), :class:`SecurityHeaders` adds the headers every
answer carries, :class:`BodyLimit` refuses a body above the upload limit
while it streams in.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import UploadTooLarge, error_response
from .metrics import ServerMetrics
from .uploads import MULTIPART_SLACK, megabytes

PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
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
    """Refuses a body above ``max_body`` bytes: at once from Content-Length, else while it streams in (413)."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = error_response(413, "too_large", self._too_large_message(), {"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise UploadTooLarge(self._too_large_message())
            return message

        await self.app(scope, limited_receive, send)

    def _too_large_message(self) -> str:
        return (f"the upload is larger than this server accepts ({megabytes(self.max_body - MULTIPART_SLACK)}); "
                "send a smaller picture")
