"""A real server on loopback (the listener ``animelite serve`` uses): protocol-level behaviour.

Each test is bounded in time and in connections; nothing leaves 127.0.0.x.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from server_helpers import (
    Gate,
    LiveServer,
    config,
    http_get,
    http_post,
    jpeg,
    raw_request,
    synthetic_models,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


def serve(models: Path, *args: str) -> subprocess.Popen:
    """``animelite serve`` as a child process (stderr piped, text)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("ANIMELITE_PORT", None)
    cmd = [sys.executable, "-m", "animelite", "--models", str(models), "serve", "--default-style", "tiny",
           "--workers", "1", "--threads", "1", "--log-level", "warning", *args]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def serving_port(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"serve exited ({proc.wait(5)}) before serving")
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
        if m:
            return int(m.group(1))
    raise AssertionError("no 'serving' line")


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30.0) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, time.monotonic() - t0


# ------------------------------------------------------------------ issue 15 #18: serve and HEAD
def test_head_healthz_answers_200_without_a_body(models):
    with LiveServer(config(models, warmup=False)) as srv:
        answer = raw_request(srv.port, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:200]
        assert body == b""
        status, _, _ = http_get(srv.url + "/readyz", method="HEAD")
        assert status == 200


def test_serve_port_0_prints_the_bound_port_once_listening(models):
    proc = serve(models, "--port", "0", "--no-warmup")
    try:
        port = serving_port(proc)
        assert port != 0
        status, _, body = http_get(f"http://127.0.0.1:{port}/healthz")  # listening as soon as announced
        assert status == 200 and b'"ok"' in body
    finally:
        code, took = stop(proc, signal.SIGTERM)
    err = proc.stderr.read()
    assert code == 0 and "animelite: stopped" in err, err  # a drained stop is a clean exit
    assert took < 5, f"an idle server took {took:.1f} s to stop"


def test_serve_on_a_port_in_use_fails_before_announcing(models):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = serve(models, "--port", str(taken.getsockname()[1]), "--no-warmup")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot listen on 127.0.0.1" in err and "serving" not in err


# ------------------------------------------------------------------ issue 15 #7: a client hangs up mid-upload
class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("multipart", [False, True])
def test_client_hanging_up_mid_upload_is_a_499_not_a_500(models, multipart):
    import socket

    data = jpeg(600, 400, seed=70)
    if multipart:
        boundary = "b0undary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    else:
        body, ctype = data, "image/jpeg"
    head = (f"POST /v1/stylize?size=64 HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    records = Records()
    watched = [logging.getLogger(n) for n in ("animelite.server", "uvicorn.error")]
    levels = [lg.level for lg in watched]
    for lg in watched:
        lg.addHandler(records)
        lg.setLevel(logging.INFO)
    try:
        with LiveServer(config(models, warmup=False)) as srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(head + body[: len(body) // 3])
                time.sleep(0.2)  # the app is reading the body now
            end = time.monotonic() + 10
            while 'status="499"' not in http_get(srv.url + "/metrics")[2].decode():
                assert time.monotonic() < end, "the hang-up was never counted"
                time.sleep(0.05)
            metrics = http_get(srv.url + "/metrics")[2].decode()
    finally:
        for lg, level in zip(watched, levels, strict=True):
            lg.removeHandler(records)
            lg.setLevel(level)
    assert re.search(r'animelite_http_requests_total\{method="POST",route="/v1/stylize",status="499"\} 1', metrics)
    assert 'status="500"' not in metrics
    lines = [r for r in records.records if r.levelno >= logging.INFO and "hung up" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in records.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in records.records]


# ------------------------------------------------------------------ issue 15 #12: stopping with requests queued
def _post_in_thread(url: str, data: bytes, out: dict, name: str) -> threading.Thread:
    def run():
        t0 = time.monotonic()
        status, headers, body = http_post(url, data)
        out[name] = (status, headers, body, time.monotonic())
        out[name + "_took"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("job_seconds,grace", [(1.0, 5.0), (None, 1.5)])
def test_stop_answers_queued_requests_at_once_and_lets_running_ones_finish(models, job_seconds, grace):
    """Ctrl-C with requests queued: they got 500 after a 10 s grace and the exit took 20 s.

    job_seconds None: the running job outlasts the grace, and is answered 503 when the grace ends.
    """
    gate = Gate()
    cfg = config(models, warmup=False, workers=1, queue_size=4, shutdown_grace=grace, stylizer_factory=gate.factory)
    out: dict = {}
    try:
        with LiveServer(cfg) as srv:
            admission = srv.app.state.service.admission
            threads = [_post_in_thread(srv.url + "/v1/stylize?size=64", jpeg(seed=100), out, "running")]
            wait_until(lambda: admission.running == 1)
            threads += [_post_in_thread(srv.url + "/v1/stylize?size=64", jpeg(seed=101 + i), out, f"queued{i}")
                        for i in range(3)]
            wait_until(lambda: admission.queue_depth == 3)
            if job_seconds is not None:
                threading.Timer(job_seconds, gate.release.set).start()
            t_stop = time.monotonic()
            took = srv.stop()
            for t in threads:
                t.join(10)
    finally:
        gate.release.set()
    for i in range(3):
        status, headers, body, at = out[f"queued{i}"]
        assert status == 503 and b"shutting_down" in body, body
        assert at - t_stop < 0.5, f"queued request answered {at - t_stop:.2f} s after the stop began"
    status, _, body, at = out["running"]
    if job_seconds is not None:
        assert status == 200, body
        assert took < job_seconds + 1.0, f"stopping took {took:.2f} s"
    else:
        assert status == 503 and b"could not finish" in body, body
        assert took < grace + 1.0, f"stopping took {took:.2f} s"


# ------------------------------------------------------------------ issue 15 #3: slow clients
STALLED_BODY = (b"POST /v1/stylize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
                b"\xff\xd8")


def stalled(port: int, first_bytes: bytes, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if first_bytes:
        s.sendall(first_bytes)
    return s


def answer_of(s: socket.socket, timeout: float = 10.0) -> tuple[int, dict, float]:
    """The status and JSON body the server sends before closing, and when it closed (monotonic)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    closed_at = time.monotonic()
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, (json.loads(body) if body.startswith(b"{") else {}), closed_at


def slow_config(models: Path, **kw):
    kw.setdefault("header_timeout", 0.6)
    kw.setdefault("body_timeout", 1.0)
    return config(models, warmup=False, **kw)


def metric(url: str, line: str) -> float:
    text = http_get(url + "/metrics")[2].decode()
    m = re.search("^" + re.escape(line) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_stalled_headers_get_a_json_408_and_are_closed(models):
    with LiveServer(slow_config(models)) as srv:
        t0 = time.monotonic()
        socks = [stalled(srv.port, b"POST /v1/sty"), stalled(srv.port, b""),
                 stalled(srv.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n")]
        for s in socks:
            status, body, closed_at = answer_of(s)
            assert status == 408 and body["error"]["code"] == "header_timeout", body
            assert 0.5 < closed_at - t0 < 3.0
        assert metric(srv.url, 'animelite_connections_dropped_total{reason="header_timeout"}') == 3
        assert http_get(srv.url + "/healthz")[0] == 200


def test_70_stalled_uploads_leave_healthz_answering_and_get_a_json_408(models):
    """~70 connections sending headers and 2 body bytes made every answer a plain-text 503 for as long as they
    stayed; now /healthz answers throughout and each stalled upload gets 408 after the body timeout."""
    with LiveServer(slow_config(models, body_timeout=1.5, max_client_connections=10)) as srv:
        t0 = time.monotonic()
        socks = [stalled(srv.port, STALLED_BODY, source=f"127.0.0.{2 + i % 8}") for i in range(70)]
        time.sleep(0.3)
        latencies = []
        while time.monotonic() - t0 < 1.2:  # all 70 are held now
            a = time.monotonic()
            status, _, body = http_get(srv.url + "/healthz", timeout=2)
            latencies.append(time.monotonic() - a)
            assert status == 200 and b'"ok"' in body
        assert max(latencies) < 0.5, latencies
        for s in socks:
            status, body, closed_at = answer_of(s)
            assert status == 408 and body["error"]["code"] == "body_timeout", body
            assert closed_at - t0 < 5.0
        assert metric(srv.url, 'animelite_connections_dropped_total{reason="body_timeout"}') == 70
        assert metric(srv.url, 'animelite_http_requests_total{method="POST",route="/v1/stylize",status="408"}') == 70
        assert http_get(srv.url + "/healthz")[0] == 200


def test_a_client_over_its_connection_cap_gets_503_but_health_checks_pass(models):
    with LiveServer(slow_config(models, body_timeout=3.0, max_client_connections=4)) as srv:
        held = [stalled(srv.port, STALLED_BODY, source="127.0.0.3") for _ in range(4)]
        time.sleep(0.2)
        over = stalled(srv.port, b"POST /v1/stylize?size=64 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
                       source="127.0.0.3")
        status, body, _ = answer_of(over)
        assert status == 503 and body["error"]["code"] == "too_many_connections", body
        assert "more than 4 connections" in body["error"]["message"]
        answer = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                             source="127.0.0.3")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]  # health checks from that address still pass
        status, _, _ = http_post(srv.url + "/v1/stylize?size=64", jpeg(seed=110))  # another address: served
        assert status == 200
        assert metric(srv.url, 'animelite_connections_dropped_total{reason="client_limit"}') == 1
        for s in held:
            s.close()


def test_over_the_server_cap_new_connections_get_503_at_once(models):
    with LiveServer(slow_config(models, header_timeout=5.0, max_connections=6, max_client_connections=0)) as srv:
        idle = [stalled(srv.port, b"GET /", source=f"127.0.0.{2 + i}") for i in range(6)]
        time.sleep(0.2)
        t0 = time.monotonic()
        status, body, closed_at = answer_of(stalled(srv.port, b""))
        assert status == 503 and body["error"]["code"] == "too_many_connections", body
        assert closed_at - t0 < 1.0
        for s in idle:
            s.close()
        time.sleep(0.2)
        assert http_get(srv.url + "/healthz")[0] == 200


def test_a_body_still_dribbling_after_the_answer_is_cut_off(models):
    with LiveServer(slow_config(models, body_timeout=0.8)) as srv:
        s = stalled(srv.port, b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nab")
        t0 = time.monotonic()
        s.settimeout(0.2)
        got, closed = b"", False
        while time.monotonic() - t0 < 5 and not closed:
            try:
                s.sendall(b"x")
                chunk = s.recv(65536)
                closed = chunk == b""
                got += chunk
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        s.close()
        assert got.startswith(b"HTTP/1.1 405") and closed
        assert time.monotonic() - t0 < 3.0


def test_unfinished_uploads_are_answered_503_when_the_server_stops(models):
    with LiveServer(slow_config(models, body_timeout=30.0, shutdown_grace=10.0)) as srv:
        socks = [stalled(srv.port, STALLED_BODY, source=f"127.0.0.{2 + i}") for i in range(3)]
        time.sleep(0.3)
        took = srv.stop()
        for s in socks:
            status, body, _ = answer_of(s)
            assert status == 503 and body["error"]["code"] == "shutting_down", body
    assert took < 2.0, f"stopping took {took:.2f} s"
