"""The live camera WebSocket /v1/live (issue 12): frames in order, latest frame wins, bad frames, limits.

In process with FastAPI's TestClient; one test goes through the real listener (uvicorn + the connection
guards of ``animelite serve``) with the ``websockets`` client.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from clips import pan_frames, synthetic_photo
from PIL import Image
from server_helpers import LiveServer, client, config, synthetic_models

from animelite.server.routes.live import BAD_LIMIT

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")
WebSocketDisconnect = pytest.importorskip("starlette.websockets").WebSocketDisconnect


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


def encode(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, quality=90)
    return buf.getvalue()


def gray(level: int, size=(64, 48)) -> bytes:
    return encode(np.full((size[1], size[0], 3), level, np.uint8))


class EchoStream:
    """A FrameStream stand-in: returns the frame itself after *delay* seconds (so order can be checked)."""

    def __init__(self, stylizer, *, temporal, size, delay: float = 0.0):
        self.delay, self.size, self.temporal, self.resets = delay, size, temporal, 0

    def stylize(self, rgb):
        time.sleep(self.delay)
        return rgb

    def reset(self):
        self.resets += 1


def echo_factory(delay: float = 0.0):
    made = []

    def factory(stylizer, **kw):
        made.append(EchoStream(stylizer, delay=delay, **kw))
        return made[-1]

    factory.made = made
    return factory


def live_config(models: Path, tmp_path: Path, **kw):
    kw.setdefault("warmup", False)
    return config(models, jobs_dir=tmp_path / "jobs", **kw)


def receive_frame(ws) -> tuple[bytes, list[dict]]:
    """The next binary message, and the text messages that came before it."""
    texts = []
    while True:
        m = ws.receive()
        if m.get("bytes") is not None:
            return m["bytes"], texts
        if m.get("text") is not None:
            texts.append(json.loads(m["text"]))
        else:
            raise AssertionError(f"connection ended: {m}")


def test_thirty_frames_in_thirty_stylized_out_in_order_real_stream(models, tmp_path):
    pytest.importorskip("animelite.video")
    frames = list(pan_frames(synthetic_photo(480, 320), frames=30, size=(160, 120)))
    with client(live_config(models, tmp_path)) as c, c.websocket_connect("/v1/live?style=tiny&size=96") as ws:
        ready = json.loads(ws.receive_text())["ready"]
        assert (ready["style"], ready["size"], ready["temporal"]) == ("tiny", 96, "default")
        outs = []
        for f in frames:
            ws.send_bytes(encode(f, "WEBP" if len(outs) % 2 else "JPEG"))
            data, texts = receive_frame(ws)
            assert not [t for t in texts if "error" in t], texts
            outs.append(Image.open(io.BytesIO(data)))
    assert len(outs) == 30
    assert all(o.format == "JPEG" and max(o.size) == 96 for o in outs)


def test_frames_come_back_in_the_order_sent(models, tmp_path):
    levels = list(range(10, 250, 8))[:30]
    with client(live_config(models, tmp_path, frame_stream_factory=echo_factory())) as c, \
            c.websocket_connect("/v1/live") as ws:
        assert json.loads(ws.receive_text())["ready"]["size"] == 256
        got = []
        for level in levels:
            ws.send_bytes(gray(level))
            data, _ = receive_frame(ws)
            got.append(int(np.asarray(Image.open(io.BytesIO(data))).mean().round()))
    assert len(got) == 30
    assert all(abs(g - want) <= 2 for g, want in zip(got, levels)), got


def test_a_flood_drops_stale_frames_and_reports_them(models, tmp_path):
    factory = echo_factory(delay=0.05)
    sent = 40
    with client(live_config(models, tmp_path, frame_stream_factory=factory)) as c, \
            c.websocket_connect("/v1/live") as ws:
        ws.receive_text()
        for level in range(sent):
            ws.send_bytes(gray(level * 5))  # far faster than 20 frames/s
        received, stats = [], None
        end = time.monotonic() + 20
        while time.monotonic() < end:
            m = ws.receive()
            if m.get("bytes") is not None:
                received.append(int(np.asarray(Image.open(io.BytesIO(m["bytes"]))).mean().round()))
            else:
                stats = json.loads(m["text"])
                assert set(stats) >= {"dropped", "fps", "ms"}, stats
                if stats["dropped"] + len(received) == sent:
                    break
    assert stats is not None and stats["dropped"] > 0
    assert stats["dropped"] + len(received) == sent
    assert received == sorted(received)  # in order, gaps where frames were dropped
    assert received[-1] == (sent - 1) * 5 or abs(received[-1] - (sent - 1) * 5) <= 2  # the latest one wins
    assert stats["ms"] > 0


def test_a_bad_frame_gets_an_error_and_the_connection_stays_open(models, tmp_path):
    factory = echo_factory()
    with client(live_config(models, tmp_path, frame_stream_factory=factory, live_max_frame_bytes=20_000)) as c, \
            c.websocket_connect("/v1/live") as ws:
        ws.receive_text()
        ws.send_bytes(b"not a picture at all")
        assert json.loads(ws.receive_text())["error"]["code"] == "bad_frame"
        ws.send_bytes(gray(0) + b"\0" * 30_000)
        assert json.loads(ws.receive_text())["error"]["code"] == "frame_too_large"
        ws.send_text("hello")
        assert json.loads(ws.receive_text())["error"]["code"] == "bad_message"
        ws.send_text(json.dumps({"reset": True}))
        ws.send_bytes(gray(100))
        data, texts = receive_frame(ws)
        assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert factory.made[0].resets == 1


def test_garbage_flood_is_closed_with_policy_violation(models, tmp_path):
    with client(live_config(models, tmp_path, frame_stream_factory=echo_factory())) as c, \
            c.websocket_connect("/v1/live") as ws:
        ws.receive_text()
        for _ in range(BAD_LIMIT):
            ws.send_bytes(b"garbage!" * 10)
        with pytest.raises(WebSocketDisconnect) as info:
            while True:
                ws.receive_text()
    assert info.value.code == 1008


def test_message_rate_flood_is_closed_with_policy_violation(models, tmp_path):
    cfg = live_config(models, tmp_path, frame_stream_factory=echo_factory(delay=0.2), live_max_rate=5)
    with client(cfg) as c, c.websocket_connect("/v1/live") as ws:
        ws.receive_text()
        frame = gray(50)
        for _ in range(200):
            ws.send_bytes(frame)
        while True:
            m = ws.receive()
            if m["type"] == "websocket.close":
                break
    assert m["code"] == 1008


def test_session_cap_and_bad_parameters(models, tmp_path):
    cfg = live_config(models, tmp_path, frame_stream_factory=echo_factory(), max_live_sessions=1)
    with client(cfg) as c:
        with c.websocket_connect("/v1/live") as first:
            first.receive_text()
            with c.websocket_connect("/v1/live") as second:
                assert json.loads(second.receive_text())["error"]["code"] == "busy"
                with pytest.raises(WebSocketDisconnect) as info:
                    second.receive_text()
                assert info.value.code == 1013
        for query in ("size=1024", "size=auto", "style=nope", "bogus=1", "temporal=wobbly"):
            with c.websocket_connect(f"/v1/live?{query}") as ws:
                assert "error" in json.loads(ws.receive_text()), query
                with pytest.raises(WebSocketDisconnect) as info:
                    ws.receive_text()
                assert info.value.code == 1008


def test_idle_connection_is_closed(models, tmp_path):
    cfg = live_config(models, tmp_path, frame_stream_factory=echo_factory(), live_idle_timeout=0.3)
    with client(cfg) as c, c.websocket_connect("/v1/live") as ws:
        ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1000


def test_live_through_the_real_listener_and_its_connection_counts(models, tmp_path):
    sync_client = pytest.importorskip("websockets.sync.client")
    cfg = live_config(models, tmp_path, frame_stream_factory=echo_factory())
    with LiveServer(cfg) as srv:
        ws_url = srv.url.replace("http://", "ws://") + "/v1/live?size=128"
        with sync_client.connect(ws_url, open_timeout=10) as ws:
            assert "ready" in json.loads(ws.recv(timeout=10))
            for level in (40, 120, 200):
                ws.send(gray(level))
                out = ws.recv(timeout=10)
                assert isinstance(out, bytes) and abs(np.asarray(Image.open(io.BytesIO(out))).mean() - level) < 3
            assert srv.app.state.metrics.connections_open._value.get() == 1
        end = time.monotonic() + 5
        while srv.app.state.metrics.connections_open._value.get() != 0:
            assert time.monotonic() < end, "the WebSocket connection was not released from the counts"
            time.sleep(0.02)
