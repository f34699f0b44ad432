"""Connection-level guards against slow and greedy clients: a header read timeout and connection caps.

Why here, and why this way. A slow-loris client opens connections and sends
its request a few bytes at a time, or sends the headers and then a body that
never comes. uvicorn (0.3x up to the 0.54 in use here) has no timeout for
either: ``timeout_keep_alive`` only covers the idle time *between* requests,
and ``limit_concurrency`` counts stalled connections like any others and then
answers plain-text 503 to everyone, ``/healthz`` included, which is what made
~70 stalled uploads take the server down. The ASGI application cannot help
with the headers: it is called only once they are complete.

So the guards sit in two places, each where the information is:

- here, in :class:`GuardedH11Protocol`, a subclass of uvicorn's own h11
  protocol (``uvicorn.Config(http=...)`` takes a protocol class): a deadline
  for the request headers (:data:`408`, JSON, then close), a cap on open
  connections in total (over it: JSON 503 at once) and per client address
  (over it: once its headers are in, a request gets JSON 503, except the
  cheap operations paths ``/healthz``, ``/readyz`` and ``/metrics``, so a
  health check from the same address still gets through), and a deadline
  for a body the client keeps sending after it was answered;
- in the ASGI layer :class:`~.middleware.BodyLimit`: a deadline between two
  pieces of a body the application is reading (408, JSON).

Every such answer is counted in ``animelite_connections_dropped_total`` by
reason; ``animelite_connections_open`` is the number of open connections.
Behind a reverse proxy every request comes from the proxy's address: raise
or disable the per-client cap there (``--max-client-connections 0``) and let
the proxy limit clients (see the README).

Only uvicorn's documented protocol interface is overridden (``connection_made``,
``data_received``, ``connection_lost``); the request state is read from the
``h11.Connection`` uvicorn keeps (``conn``), which is h11's public API.
"""

from __future__ import annotations

import asyncio
import http
import json
import threading
from dataclasses import dataclass, field

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import ServerMetrics

OPS_PATHS = (b"/healthz", b"/readyz", b"/metrics")
MAX_HELD_BYTES = 64 * 1024  # request headers read while deciding on a connection over the per-client cap


@dataclass
class ConnectionLimits:
    """The open connections of one server, by client address, and the limits on them."""

    header_timeout: float
    body_timeout: float
    max_connections: int  # 0: no cap
    max_client_connections: int  # 0: no cap
    metrics: ServerMetrics
    _per_client: dict[str, int] = field(default_factory=dict)
    _total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, client: str) -> str | None:
        """Count a new connection from *client*; the cap it is over ("server_limit", "client_limit"), or None."""
        with self._lock:
            self._total += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
            self.metrics.connections_open.set(self._total)
            if self.max_connections and self._total > self.max_connections:
                return "server_limit"
            if self.max_client_connections and self._per_client[client] > self.max_client_connections:
                return "client_limit"
        return None

    def over_client_cap(self, client: str) -> bool:
        with self._lock:
            return bool(self.max_client_connections) and self._per_client.get(client, 0) > self.max_client_connections

    def close(self, client: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._per_client.get(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)
            self.metrics.connections_open.set(self._total)

    def dropped(self, reason: str) -> None:
        self.metrics.connections_dropped.labels(reason=reason).inc()


def _answer_bytes(status: int, code: str, message: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close", "x-content-type-options: nosniff",
             *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _is_ops_request(request_line: bytes) -> bool:
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return False
    return parts[1].split(b"?", 1)[0] in OPS_PATHS


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and connection caps (see the module docstring)."""

    limits: ConnectionLimits  # set on the subclass protocol_class() makes

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._peer: str | None = None  # counted in limits while set
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._over_cap = False  # this connection is over the per-client cap
        self._held: bytearray | None = None  # a request over the cap, read until its headers end
        self._finished = False  # answered by the guard and closing

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "unknown"
        refusal = self.limits.open(self._peer)
        if refusal == "server_limit":
            self._finish(503, "server_limit", "too_many_connections",
                         "the server has too many open connections right now; please try again shortly")
            return
        self._over_cap = refusal == "client_limit"
        self._arm("header", self.limits.header_timeout)
        if self._over_cap:
            self._held = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._finished:
            return
        if self._held is None and self._over_cap and self.conn.their_state is h11.IDLE and self._timer is None:
            # a new request on a connection that was let through for an operations path: decide again
            if self.limits.over_client_cap(self._peer or ""):
                self._held = bytearray()
            else:
                self._over_cap = False
        if self._held is not None:
            self._hold(data)
            return
        self._pass(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._peer is not None:
            self.limits.close(self._peer)
            self._peer = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Hand the connection to uvicorn's WebSocket protocol, which also takes over its place in the counts.

        After the switch this protocol object sees no more events (not even ``connection_lost``), so the
        header timer stops here and the WebSocket protocol's ``connection_lost`` releases the count.
        """
        self._cancel_timer()
        super().handle_websocket_upgrade(event)
        successor = self.transport.get_protocol()
        peer, self._peer = self._peer, None
        if successor is self or peer is None:
            self._peer = peer
            return
        limits, lost = self.limits, successor.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            limits.close(peer)
            lost(exc)

        successor.connection_lost = connection_lost

    # ------------------------------------------------------------------ the guards
    def _pass(self, data: bytes) -> None:
        """Hand *data* to uvicorn, keeping the header deadline and the drain deadline up to date."""
        if self.conn.their_state is h11.IDLE and self._timer is None:
            self._arm("header", self.limits.header_timeout)  # the first bytes of a new request
        super().data_received(data)
        if self._timer_kind == "header" and self.conn.their_state is not h11.IDLE:
            self._cancel_timer()  # the headers are in: the application (and BodyLimit) takes over
        if (self._timer is None and self.conn.their_state is h11.SEND_BODY
                and self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)):
            # answered already, and the client keeps sending a body nobody reads: bounded too
            self._arm("drain", self.limits.body_timeout)

    def _hold(self, data: bytes) -> None:
        """Over the per-client cap: read the request headers, then let operations paths through, refuse the rest."""
        assert self._held is not None
        self._held += data
        end = self._held.find(b"\r\n\r\n")
        if end < 0:
            if len(self._held) > MAX_HELD_BYTES:
                self._refuse_over_cap()
            return
        request_line = bytes(self._held.split(b"\r\n", 1)[0])
        if not _is_ops_request(request_line):
            self._refuse_over_cap()
            return
        held, self._held = bytes(self._held), None
        self._pass(held)

    def _refuse_over_cap(self) -> None:
        cap = self.limits.max_client_connections
        self._finish(503, "client_limit", "too_many_connections",
                     f"this client has more than {cap} connections open to the server; close some and try again",
                     extra=(("retry-after", "1"),))

    def _arm(self, kind: str, seconds: float) -> None:
        self._cancel_timer()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_kind = None, ""

    def _deadline(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, ""
        if self._finished or self.transport.is_closing():
            return
        if kind == "header" and (self._held is not None or self.conn.their_state is h11.IDLE):
            self._finish(408, "header_timeout", "header_timeout",
                         f"the request headers did not arrive within {self.limits.header_timeout:g} s")
        elif kind == "drain" and self.conn.their_state is h11.SEND_BODY:
            self.limits.dropped("body_timeout")
            self._finished = True
            self.transport.close()

    def _finish(self, status: int, reason: str, code: str, message: str,
                extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer with a JSON error, count it, and close the connection (no request reaches the application)."""
        self._finished = True
        self._held = None
        self._cancel_timer()
        self.limits.dropped(reason)
        self.transport.write(_answer_bytes(status, code, message, extra))
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to *limits* (one per server)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
