"""The bad-input catalogue's server rows: the HTTP API under hostile input (issue 15).

Most rows go through the ASGI app in-process (FastAPI's TestClient); the rows
about connections (stalled headers and uploads, hang-ups, stopping with work
queued) run against a real server on loopback (``LiveServer``: the listener
``animelite serve`` uses, in a thread). Each row gets its own models
directory and disk cache, and :func:`catalogue.run_case` checks that nothing
in them was lost.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest
from catalogue import Case, Outcome, cli, run_case
from PIL import Image

from helpers import make_store, photo_like

fastapi = pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_helpers import LiveServer, client, config, http_get, jpeg  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


def srv(root, **cfg) -> dict:
    """A models directory and a disk cache for one row. No warm-up: a row ends as soon as its answer is in,
    and a warm-up still writing its preview to the disk cache then would race the "nothing left" check
    (a cut-short cache write is cleaned at the next start; see server/cache.py)."""
    store = make_store(root)
    return {"models": store.root, "cfg": {"cache_dir": root / "cache", "warmup": False, **cfg}}


def post(query: str = "", *, body=None, files=None, data=None, headers=None, **cfg):
    def act(ctx) -> Outcome:
        with client(config(ctx["models"], **{**ctx["cfg"], **cfg})) as c:
            r = c.post(f"/v1/stylize{query}", content=body, files=files, data=data, headers=headers or {})
            return Outcome(r.status_code, r.text, r)
    return act


def request(method: str, path: str, **cfg):
    def act(ctx) -> Outcome:
        with client(config(ctx["models"], **{**ctx["cfg"], **cfg})) as c:
            r = c.request(method, path)
            return Outcome(r.status_code, r.text, r)
    return act


def error_code(code: str):
    def check(_ctx, outcome: Outcome) -> None:
        body = json.loads(outcome.text)
        assert body["error"]["code"] == code, body
    return check


def _png_bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def _truncated() -> bytes:
    data = jpeg(320, 240)
    return data[: len(data) // 2]


def _lying_header() -> bytes:
    import struct

    data = bytearray(jpeg(320, 213))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 7000, 7000)
    return bytes(data)


def _corrupt_cache_entry(root) -> dict:
    """A first request fills the disk cache; the entry is then cut in half (defect 13)."""
    ctx = srv(root, disk_cache_bytes=10_000_000)
    ctx["photo"] = jpeg(200, 150, seed=4)
    with client(config(ctx["models"], **ctx["cfg"])) as c:
        first = c.post("/v1/stylize?size=64", content=ctx["photo"])
        assert first.status_code == 200
        ctx["first"] = first.content
    entries = [p for p in (root / "cache").rglob("*") if p.is_file() and p.stat().st_size > 100]
    assert entries, "the disk cache wrote nothing"
    for p in entries:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return ctx


def _served_again(ctx) -> Outcome:
    with client(config(ctx["models"], **ctx["cfg"])) as c:
        r = c.post("/v1/stylize?size=64", content=ctx["photo"])
    return Outcome(r.status_code, r.text[:200], r)


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_like(w, h)).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- live rows


def _stalled_headers_and_uploads(ctx) -> Outcome:
    """Defect 3: 70 connections that stall (headers, or an upload after 2 bytes) while /healthz keeps answering."""
    cfg = config(ctx["models"], header_timeout=1.0, body_timeout=1.5, max_client_connections=0, **ctx["cfg"])
    socks, health = [], []
    with LiveServer(cfg) as live:
        for i in range(70):
            s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
            if i % 2:
                s.sendall(b"POST /v1/stylize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
            else:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            socks.append(s)
        for _ in range(10):
            t0 = time.monotonic()
            status, _h, _b = http_get(live.url + "/healthz", timeout=5)
            health.append((status, time.monotonic() - t0))
        answers = []
        for s in socks:
            s.settimeout(10)
            try:
                answers.append(s.recv(4096).split(b"\r\n", 1)[0])
            except OSError as exc:
                answers.append(repr(exc).encode())
            s.close()
    ok = all(st == 200 and dt < 2.0 for st, dt in health)
    text = f"healthz {health}; first answers: {sorted(set(answers))}"
    return Outcome(200 if ok and all(b" 408" in a for a in answers) else 500, text)


def _hang_up_mid_upload(ctx) -> Outcome:
    """Defect 7: a client that hangs up mid-upload is counted as 499, not 500."""
    cfg = config(ctx["models"], **ctx["cfg"])
    with LiveServer(cfg) as live:
        s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        s.sendall(b"POST /v1/stylize HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + b"\xff\xd8" * 100)
        s.close()
        time.sleep(0.5)
        status, _h, body = http_get(live.url + "/metrics")
    lines = [ln for ln in body.decode().splitlines() if ln.startswith("animelite_http_requests_total")]
    has_499 = any('status="499"' in ln and not ln.endswith(" 0.0") for ln in lines)
    has_500 = any('status="500"' in ln and not ln.endswith(" 0.0") for ln in lines)
    return Outcome(499 if has_499 and not has_500 else 500, "\n".join(lines))


def _stop_with_work_queued(ctx) -> Outcome:
    """Defect 12: stopping answers queued requests 503 at once, lets the running one finish, exits promptly."""
    import urllib.error
    import urllib.request

    cfg = config(ctx["models"], queue_size=8, shutdown_grace=5.0, **ctx["cfg"])
    results: list[tuple[int, float]] = []
    with LiveServer(cfg) as live:
        def one(i: int) -> None:
            req = urllib.request.Request(live.url + "/v1/stylize?style=randv2&size=512",
                                         data=jpeg(400, 300, seed=i), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    results.append((r.status, time.monotonic()))
            except urllib.error.HTTPError as exc:
                results.append((exc.code, time.monotonic()))
            except OSError:
                results.append((0, time.monotonic()))
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(5)]
        for t in threads:
            t.start()
        time.sleep(0.8)  # one running, the rest queued
        t0 = time.monotonic()
        took = live.stop()
        for t in threads:
            t.join(10)
    statuses = sorted(s for s, _ in results)
    ok = took < 5.0 and len(results) == 5 and set(statuses) <= {200, 503} and 503 in statuses
    return Outcome(0 if ok else 1, f"stopped in {took:.2f} s; answers {statuses}; "
                                   f"503s after {[round(t - t0, 2) for s, t in results if s == 503]} s")


SERVER_CASES = [
    Case("srv-empty-body", "server", srv, post(body=b""), 400, ""),
    Case("srv-text-body", "server", srv, post(body=b"hello, this is text"), 415, ""),
    Case("srv-raw-body-labelled-form", "server", srv,
         post("?size=64", body=jpeg(120, 90), headers={"Content-Type": "application/x-www-form-urlencoded"}), 200,
         defect=5),
    Case("srv-raw-body-no-label", "server", srv, post("?size=64", body=jpeg(120, 90)), 200),
    Case("srv-multipart-without-image", "server", srv, post(data={"style": "tiny"}), 415, "picture"),
    Case("srv-multipart-image", "server", srv, post("?size=64", files={"image": ("a.jpg", jpeg(120, 90))}), 200),
    Case("srv-unknown-parameter-60kb", "server", srv, post("?" + "x" * 60_000 + "=1", body=jpeg(64, 48)), 400,
         defect=18, check=lambda c, o: _short(o)),
    Case("srv-size-not-a-number", "server", srv, post("?size=abc", body=jpeg(64, 48)), 400, "size"),
    Case("srv-size-too-small", "server", srv, post("?size=10", body=jpeg(64, 48)), 400, "size"),
    Case("srv-size-too-large", "server", srv, post("?size=999999", body=jpeg(64, 48)), 400, "size"),
    Case("srv-unknown-style", "server", srv, post("?style=nope", body=jpeg(64, 48)), 400, "nope"),
    Case("srv-unknown-format", "server", srv, post("?format=gif", body=jpeg(64, 48)), 400, "format"),
    Case("srv-quality-zero", "server", srv, post("?quality=0", body=jpeg(64, 48)), 400, "quality"),
    Case("srv-faces-unknown", "server", srv, post("?faces=sometimes", body=jpeg(64, 48)), 400, "faces"),
    Case("srv-precision-unknown", "server", srv, post("?precision=fp8", body=jpeg(64, 48)), 400, "precision"),
    Case("srv-int8-without-model-is-permanent", "server", srv, post("?precision=int8&size=64", body=jpeg(64, 48)),
         422, "quantize", defect=11, check=error_code("model_unavailable")),
    Case("srv-truncated-jpeg", "server", srv, post(body=_truncated()), 422, "truncated"),
    Case("srv-lying-jpeg-header", "server", srv, post(body=_lying_header()), 422, "truncated", defect=14),
    Case("srv-bomb", "server", srv, post(body=_png_bomb()), 413, "megapixels"),
    Case("srv-upload-too-large", "server", srv, post(body=b"\xff\xd8" + b"\x00" * 300_000, max_upload_bytes=100_000),
         413, ""),
    Case("srv-get-on-stylize", "server", srv, request("GET", "/v1/stylize"), 405, ""),
    Case("srv-head-healthz", "server", srv, request("HEAD", "/healthz"), 200, defect=18,
         check=lambda c, o: _no_body(o)),
    Case("srv-unknown-path", "server", srv, request("GET", "/v2/nothing"), 404, ""),
    Case("srv-thin-image", "server", srv, post("?size=64", body=_png(1, 900)), 200, defect=1),
    Case("srv-truncated-cache-entry-not-served", "server", _corrupt_cache_entry, _served_again, 200, defect=13,
         check=lambda c, o: _same_as_first(c, o), changes=("cache",)),
    Case("srv-default-style-unknown", "server", srv,
         lambda c: cli(["--models", c["models"], "serve", "--default-style", "nope", "--port", "0"]), 2, "nope",
         defect=18),
    Case("srv-live-stalled-connections", "server", srv, _stalled_headers_and_uploads, 200, defect=3),
    Case("srv-live-hang-up-mid-upload", "server", srv, _hang_up_mid_upload, 499, defect=7),
    Case("srv-live-stop-with-work-queued", "server", srv, _stop_with_work_queued, 0, defect=12),
]


def _short(outcome: Outcome) -> None:
    assert len(outcome.text) < 1000, f"the error echoes {len(outcome.text)} characters"


def _no_body(outcome: Outcome) -> None:
    assert outcome.value.content == b""


def _same_as_first(ctx, outcome: Outcome) -> None:
    assert outcome.value.content == ctx["first"], "a damaged cache entry was served (or a different result)"


@pytest.mark.parametrize("case", SERVER_CASES, ids=str)
def test_server_case(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMELITE_MODELS", str(tmp_path / "no-default-models"))
    # the cache folder may gain and lose entries; the models directory and inputs may not
    run_case(case, tmp_path)
