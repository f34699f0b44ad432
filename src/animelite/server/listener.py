"""How ``animelite serve`` listens: bind the socket first, then run uvicorn on it.

The socket is bound (and listening) before anything is announced, so the
"serving" line names the real port (``--port 0`` picks a free one) and a
port in use is an error before startup, not after the announcement.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from .config import ServerConfig

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


def make_server(app: FastAPI, config: ServerConfig, log_level: str = "info") -> uvicorn.Server:
    """The uvicorn server for *app* (run it with ``server.run(sockets=[bind(...)])``)."""
    uv_config = uvicorn.Config(
        app, log_level=log_level, lifespan="on", server_header=False, backlog=BACKLOG,
        limit_concurrency=max(64, 4 * (config.effective_workers + config.queue_size)),
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(uv_config)
