"""How ``animelite serve`` listens and stops: bind the socket first, run uvicorn on it, drain on a signal.

The socket is bound (and listening) before anything is announced, so the
"serving" line names the real port (``--port 0`` picks a free one) and a
port in use is an error before startup, not after the announcement.

Stopping (Ctrl-C, SIGTERM): :class:`Server` tells the service the moment the
stop begins, before uvicorn waits for the open requests: new work is refused
with 503, jobs waiting for a worker are answered 503 at once, running ones
get ``shutdown_grace`` seconds. Then uvicorn closes what is left and the
process exits without waiting for a worker still busy (daemon threads).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI

from .config import ServerConfig
from .connections import ConnectionLimits, protocol_class

BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on *host*:*port* (0: a free port); OSError when that is impossible."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


class Server(uvicorn.Server):
    """uvicorn's server, draining the service as soon as a stop begins and ending cleanly on a signal."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]):
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets=None) -> None:
        self._on_stop()  # before uvicorn waits for the open requests, so queued ones are answered now
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version raises the signal again after a graceful stop (a Ctrl-C then ends as a
        # KeyboardInterrupt, exit 130; a SIGTERM kills the process): a drained stop is a clean exit here.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def websocket_protocol() -> str:
    """uvicorn's WebSocket implementation for ``/v1/live``: websockets' sans-I/O one, or none without the library."""
    import importlib.util

    return "websockets-sansio" if importlib.util.find_spec("websockets") is not None else "none"


def make_server(app: FastAPI, config: ServerConfig, log_level: str = "info") -> Server:
    """The server for *app* (from :func:`animelite.server.create_app`); run it with ``run(sockets=[bind(...)])``.

    HTTP/1.1 through :class:`~.connections.GuardedH11Protocol` (header deadline, connection caps);
    uvicorn's ``limit_concurrency`` stays off: it answers plain-text 503 to everyone, health checks included.
    """
    limits = ConnectionLimits(config.header_timeout, config.body_timeout, config.max_connections,
                              config.max_client_connections, app.state.metrics)
    uv_config = uvicorn.Config(
        app, log_level=log_level, lifespan="on", server_header=False, backlog=BACKLOG,
        http=protocol_class(limits), ws=websocket_protocol(), timeout_graceful_shutdown=config.shutdown_grace,
        # a frame over live_max_frame_bytes gets an error message from the route; one far over it closes (1009)
        ws_max_size=2 * config.live_max_frame_bytes + 64 * 1024,
    )
    return Server(uv_config, on_stop=app.state.service.begin_shutdown)
