"""Shared pieces of the server tests: the synthetic models, request helpers, a gated stylizer, a metrics reader."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import warnings
from pathlib import Path

import pytest
from helpers import make_store, photo_like
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's notice about httpx2 at import time
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from animelite.pipeline import Stylizer  # noqa: E402
from animelite.server import ServerConfig, create_app  # noqa: E402

ERROR_SHAPE = {"error"}


def synthetic_models(tmp_path_factory) -> Path:
    """A models directory with the synthetic styles 'tiny' and 'randv2' (see helpers.make_store)."""
    return make_store(tmp_path_factory.mktemp("server")).root


def jpeg(width: int = 300, height: int = 200, seed: int = 0, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def config(models: Path, **kw) -> ServerConfig:
    kw.setdefault("default_style", "tiny")
    kw.setdefault("workers", 1)
    kw.setdefault("threads", 1)
    kw.setdefault("preview_size", 128)
    return ServerConfig(models_dir=models, **kw)


def client(cfg: ServerConfig, **kw) -> TestClient:
    return TestClient(create_app(cfg), **kw)


def wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_SHAPE and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message and "Traceback" not in message and "File \"" not in message
    return message


class Gate:
    """A stylizer factory whose stylize() blocks until released: makes queue states deterministic."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def factory(self, style, **kwargs):
        st = Stylizer(style, **kwargs)
        real = st.stylize

        def gated(image, **kw):
            self.started += 1
            assert self.release.wait(20), "gate never released"
            return real(image, **kw)

        st.stylize = gated
        return st


def timings_of(headers) -> dict:
    timings = json.loads(headers["x-animelite-timings"])
    server_timing = dict(re.findall(r"(\w+);dur=([\d.]+)", headers["server-timing"]))
    assert set(server_timing) == set(timings)
    return timings


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                     r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def parse_prometheus(text: str) -> dict[str, list[tuple[str, float]]]:
    """A strict reader of the text format: every line is a comment or a well-formed sample."""
    assert text.endswith("\n")
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            types[name] = kind
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"malformed metrics line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert base in types, f"{name} has no TYPE line"
            samples.setdefault(name, []).append((labels, value))
    return samples


# ------------------------------------------------------------------ a real server on loopback
class LiveServer:
    """The app served by ``animelite serve``'s own listener (uvicorn + its guards) in a thread, on loopback.

    ``url`` is ready after ``with``; leaving the block asks the server to stop as SIGINT would
    (``should_exit``) and waits for it; ``stopped_in`` is how long that took.
    """

    def __init__(self, cfg: ServerConfig, app=None):
        from animelite.server import listener

        self.app = app or create_app(cfg)
        self.sock = listener.bind("127.0.0.1", 0)
        self.port = listener.bound_port(self.sock)
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = listener.make_server(self.app, cfg, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.stopped_in: float | None = None

    def __enter__(self) -> LiveServer:
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < end and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not stop"
        self.stopped_in = time.monotonic() - t0
        return self.stopped_in

    def __exit__(self, *exc) -> None:
        if self.stopped_in is None:
            self.stop()
        self.sock.close()


def raw_request(port: int, data: bytes, timeout: float = 10.0, source: str = "127.0.0.1") -> bytes:
    """Send *data* on a fresh connection and read until the server closes it (or *timeout*)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def http_get(url: str, timeout: float = 10.0, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library (a fresh connection each time)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def http_post(url: str, data: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    return http_get(url, timeout, "POST", data, {"Content-Type": "application/octet-stream"})
