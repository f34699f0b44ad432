"""The live camera: WebSocket ``/v1/live``, JPEG/WebP frames in, stylized JPEG frames out, latest frame first.

Protocol. Query parameters ``style``, ``size`` (default 256, at most 512),
``faces``, ``face_style``, ``precision``, ``temporal``. The client sends each
camera frame as one binary message (JPEG or WebP; any image the server reads);
the server answers with the stylized frame (JPEG, binary), in the order sent.
Text messages from the server are JSON: ``{"ready": {...}}`` once the style is
loaded, ``{"dropped": n, "fps": x, "ms": y}`` about once a second (frames
dropped so far, frames/s sent, median milliseconds from a frame's arrival to
its answer) and ``{"error": {"code", "message"}}`` for a bad frame or message
(the connection stays open). The client may send the text ``{"reset": true}``
(forget the temporal history, e.g. after switching cameras).

Latency first: frames are stylized one at a time; one that arrives while
another is being stylized waits in a one-frame slot, and a newer one replaces
it (the older is dropped and counted). Each connection has its own
``FrameStream`` (temporal statistics and smoothed faces).

Limits: at most ``max_live_sessions`` connections (over it: an error message,
then close 1013 "try again later"); frames over ``live_max_frame_bytes`` are
refused with an error message; messages beyond ``live_max_rate`` per second
are dropped unread; a client that keeps sending garbage (``BAD_LIMIT`` bad
messages in a row) or floods at several times the rate is closed with 1008
(policy violation); a silent connection is closed after ``live_idle_timeout``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ... import imageio
from ...errors import AnimeliteError, ImageError
from ..errors import ServiceError, plain, service_error
from ..service import StylizeService
from ..uploads import is_supported_image

log = logging.getLogger("animelite.server")

JPEG_QUALITY = 85
REPORT_EVERY = 1.0  # seconds between two stats messages
BAD_LIMIT = 20  # bad messages in a row before the connection is closed (1008)
FLOOD_FACTOR = 4  # messages in one second above this many times the rate limit: closed (1008)
POLICY, TRY_LATER, NORMAL, INTERNAL = 1008, 1013, 1000, 1011
FRAME_LABEL = "frame"


def _default_frame_stream(stylizer, *, temporal: str, size: int):
    from ...video import FrameStream

    return FrameStream(stylizer, temporal=temporal, size=size)


def _error(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


class Closing(Exception):
    """End the session with this close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class LiveSession:
    """One live connection: a receiving loop, a one-frame slot and a stylizing loop."""

    def __init__(self, ws: WebSocket, stream: Any, service: StylizeService):
        self.ws = ws
        self.stream = stream
        self.service = service
        self.config = service.config
        self.metrics = service.metrics
        self._send_lock = asyncio.Lock()
        self._slot: tuple[bytes, float] | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self.sent = 0
        self._bad_in_row = 0
        self._arrivals: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=64)
        self._sent_times: deque[float] = deque(maxlen=64)
        self._last_report = time.perf_counter()
        self._reported_dropped = 0

    # ---------------------------------------------------------------- sending
    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def report(self) -> None:
        now = time.perf_counter()
        window = [t for t in self._sent_times if now - t <= 2 * REPORT_EVERY]
        span = (now - window[0]) if len(window) > 1 else 0.0
        fps = (len(window) - 1) / span if span > 0 else 0.0
        ms = statistics.median(self._latencies) * 1000 if self._latencies else 0.0
        self._last_report, self._reported_dropped = now, self.dropped
        await self.send_text(json.dumps({"dropped": self.dropped, "fps": round(fps, 2), "ms": round(ms, 1),
                                         "frames": self.sent}))

    # ---------------------------------------------------------------- the two loops
    async def run(self) -> None:
        worker = asyncio.ensure_future(self._stylize_loop())
        try:
            await self._receive_loop()
        finally:
            self._closed = True
            self._wake.set()
            worker.cancel()
            try:
                await worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - its error was handled or the peer is gone
                pass

    async def _receive_loop(self) -> None:
        idle = self.config.live_idle_timeout
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except asyncio.TimeoutError:
                raise Closing(NORMAL, f"no frame for {idle:g} s") from None
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            now = time.perf_counter()
            if not self._within_rate(now):
                continue
            data = message.get("bytes")
            if data is not None:
                await self._frame(data, now)
            else:
                await self._text(message.get("text") or "")

    def _within_rate(self, now: float) -> bool:
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals and now - arrivals[0] > 1.0:
            arrivals.popleft()
        rate = self.config.live_max_rate
        if len(arrivals) > FLOOD_FACTOR * rate:
            self.metrics.live_dropped.labels(reason="flood").inc()
            raise Closing(POLICY, f"more than {FLOOD_FACTOR * rate} messages in one second")
        if len(arrivals) > rate:
            self.dropped += 1
            self.metrics.live_dropped.labels(reason="rate").inc()
            return False
        return True

    async def _bad(self, code: str, message: str) -> None:
        self._bad_in_row += 1
        self.metrics.live_dropped.labels(reason="bad").inc()
        if self._bad_in_row >= BAD_LIMIT:
            raise Closing(POLICY, f"{BAD_LIMIT} bad messages in a row")
        await self.send_text(_error(code, message))

    async def _frame(self, data: bytes, now: float) -> None:
        limit = self.config.live_max_frame_bytes
        if len(data) > limit:
            await self._bad("frame_too_large", f"a frame is {len(data)} bytes; this server takes frames up to "
                                               f"{limit} bytes: send a smaller or more compressed one")
            return
        if not is_supported_image(data[:32]):  # sniffed here, so garbage is never queued (nor hidden by drops)
            await self._bad("bad_frame", "the frame is not a JPEG or WebP picture (nor another format the "
                                         "server reads)")
            return
        if self._slot is not None:
            self.dropped += 1  # latest frame wins: the one still waiting is stale
            self.metrics.live_dropped.labels(reason="stale").inc()
        self._slot = (data, now)
        self._wake.set()

    async def _text(self, text: str) -> None:
        try:
            command = json.loads(text)
        except ValueError:
            command = None
        if isinstance(command, dict) and command.get("reset") is True:
            self._bad_in_row = 0
            await asyncio.to_thread(self.stream.reset)
            return
        await self._bad("bad_message", "send frames as binary JPEG or WebP messages; the only text message is "
                                       '{"reset": true}')

    async def _stylize_loop(self) -> None:
        while not self._closed:
            if self._slot is None:
                if self.dropped != self._reported_dropped:
                    await self.report()  # idle after a burst: say what was dropped now
                    continue  # a frame may have come while that was sent
                self._wake.clear()
                await self._wake.wait()
                continue
            data, arrived = self._slot
            self._slot = None
            try:
                out = await self._in_thread(data)
            except (ImageError, ValueError) as exc:
                await self._bad("bad_frame", f"the frame cannot be read: {plain(exc)}")
                continue
            except AnimeliteError as exc:
                err = service_error(exc)
                await self.send_text(_error(err.code, err.message))
                continue
            self._bad_in_row = 0
            await self.send_bytes(out)
            now = time.perf_counter()
            self.sent += 1
            self._sent_times.append(now)
            self._latencies.append(now - arrived)
            self.metrics.video_frames.labels(source="live").inc()
            if now - self._last_report >= REPORT_EVERY:
                await self.report()

    async def _in_thread(self, data: bytes) -> bytes:
        self.service.live_in_flight += 1
        try:
            return await asyncio.to_thread(self._process, data)
        finally:
            self.service.live_in_flight -= 1

    def _process(self, data: bytes) -> bytes:
        decoded = imageio.decode_image(data, name=FRAME_LABEL, max_pixels=self.config.max_pixels)
        out = np.asarray(self.stream.stylize(decoded.rgb))
        if out.dtype != np.uint8:
            out = (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()


def add_routes(app: FastAPI, service: StylizeService) -> None:
    config = service.config
    factory: Callable[..., Any] = config.frame_stream_factory or _default_frame_stream

    @app.websocket("/v1/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        if service.live_sessions >= config.max_live_sessions or service.admission.draining:
            await ws.send_text(_error("busy", f"this server runs at most {config.max_live_sessions} live "
                                              "camera sessions at once; please try again shortly"))
            await ws.close(TRY_LATER, "too many live sessions")
            return
        service.live_sessions += 1
        service.metrics.live_sessions.set(service.live_sessions)
        try:
            await _session(ws)
        finally:
            service.live_sessions -= 1
            service.metrics.live_sessions.set(service.live_sessions)

    async def _session(ws: WebSocket) -> None:
        try:
            params, temporal = service.parse_live_params(dict(ws.query_params))
            stylizer = await asyncio.to_thread(service.stylizer, params)
            stream = await asyncio.to_thread(factory, stylizer, temporal=temporal, size=params.size)
        except AnimeliteError as exc:
            err = exc if isinstance(exc, ServiceError) else service_error(exc)
            await ws.send_text(_error(err.code, err.message))
            await ws.close(POLICY, "bad parameters")
            return
        await ws.send_text(json.dumps({"ready": {"style": params.style, "size": params.size,
                                                 "faces": params.faces, "temporal": temporal}}))
        session = LiveSession(ws, stream, service)
        try:
            await session.run()
        except Closing as c:
            await _close(ws, c.code, c.reason)
            return
        except WebSocketDisconnect:
            return
        except Exception:
            log.exception("live session failed")
            await _close(ws, INTERNAL, "server error")
            return
        await _close(ws, NORMAL, "")

    async def _close(ws: WebSocket, code: int, reason: str) -> None:
        if ws.application_state != WebSocketState.DISCONNECTED and ws.client_state != WebSocketState.DISCONNECTED:
            try:
                await ws.close(code, reason)
            except Exception:  # noqa: BLE001 - the peer went away first
                pass
