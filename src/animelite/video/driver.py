"""The video driver: a clip in, a stylized clip out, as a pipeline of threads with bounded queues.

decode thread (:class:`~animelite.video.io.Reader`: demux, decode, convert
to the working size, audio packets straight to the writer)
-> caller's thread, in frame order (``Temporal.prepare``, face detection)
-> a pool of ``workers`` threads, several frames in flight (``Temporal.run``
on one session each, the face paste)
-> encode thread, in frame order (``Temporal.finish``, back to the input
size with ``keep_size``, PNGs for ``frames_dir``, the encoder).
Each queue holds a few frames, so memory does not grow with the clip's length.
The output is written to a temporary file and renamed at the end
(:mod:`animelite.atomic`); a failure, ``cancel`` or Ctrl-C leaves nothing.

:class:`FrameStream` is the same per-frame core for one frame at a time (the
server's live route): temporal and face state kept between calls.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write
from ..errors import AnimeliteError
from ..imageio import OutputExistsError, encode_image
from ..imageops import resize_rgb, to_uint8, working_size
from ..options import (CRF_BOUNDS, DEFAULT_CRF, DEFAULT_PRESET, DEFAULT_SIZE, DEFAULT_TEMPORAL, DEFAULT_WEBM_CRF,
                       MAX_SESSIONS, MAX_SIZE, MIN_SIZE, SIZE_AUTO, TEMPORAL_MODES, VIDEO_FORMAT_EXTENSIONS,
                       VIDEO_PRESETS, OptionError, one_of, whole_number)
from ..tiling import peak_rss_mb
from .io import Frame, Reader, VideoError, Writer, probe_video
from .temporal import Temporal

STAGES = ("decode", "preprocess", "inference", "faces", "temporal", "encode")
FRAME_NAME = "frame_{:06d}.png"  #: ``frames_dir`` file names, numbered from 1 in display order
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


@dataclass
class VideoProgress:
    frames_done: int
    frames_total: int | None  #: declared (or duration x rate); None when the file says neither
    elapsed_s: float
    eta_s: float | None
    fps: float  #: frames stylized per second so far


@dataclass
class VideoSummary:
    src: str
    dst: str
    frames: int
    duration_s: float  #: of the output: last timestamp + last frame's duration
    fps: float | None  #: the clip's average frame rate
    input_size: tuple[int, int]  #: upright (width, height)
    working_size: tuple[int, int]
    output_size: tuple[int, int]
    timings: dict[str, float]  #: stage -> seconds, summed over frames and threads (stages overlap in time)
    audio: list[str]  #: per input audio stream: "copied", "re-encoded" or "dropped"
    notices: list[str]
    temporal: str  #: the temporal mode that ran
    peak_rss_mb: float
    wall_s: float = 0.0
    frames_dir: str | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def ms_per_frame(self) -> dict[str, float]:
        return {k: v * 1000 / max(1, self.frames) for k, v in self.timings.items()}


class VideoCancelled(AnimeliteError):
    """Stopped by ``cancel`` or Ctrl-C before the end: nothing was written. ``interrupted``: it was Ctrl-C."""

    def __init__(self, message: str, frames_done: int, frames_total: int | None = None,
                 interrupted: bool = False):
        super().__init__(message)
        self.frames_done, self.frames_total, self.interrupted = frames_done, frames_total, interrupted


def video_format_for(dst: str | os.PathLike[str]) -> str:
    """"mp4" or "webm" from the output's suffix; an OptionError for any other name."""
    suffix = Path(dst).suffix.lower()
    for fmt, ext in VIDEO_FORMAT_EXTENSIONS.items():
        if suffix == ext:
            return fmt
    raise OptionError(f"video output {os.fspath(dst)}: name it .mp4 (H.264) or .webm (VP9), "
                      f"not {suffix or 'without a suffix'}")


def check_video_options(fmt: str, *, temporal, crf, preset, max_duration, workers) -> tuple:
    """(temporal, crf, preset, max_duration, workers) checked and resolved; OptionError naming the bad one."""
    temporal = one_of("temporal", temporal, TEMPORAL_MODES)
    lo, hi = CRF_BOUNDS[fmt]
    crf = (DEFAULT_CRF if fmt == "mp4" else DEFAULT_WEBM_CRF) if crf is None else whole_number("crf", crf, lo, hi)
    preset = one_of("preset", DEFAULT_PRESET if preset is None else preset, VIDEO_PRESETS)
    if max_duration is not None:
        if isinstance(max_duration, bool) or not isinstance(max_duration, (int, float)) or not max_duration > 0 \
                or max_duration != max_duration or max_duration == float("inf"):
            raise OptionError(f"max_duration must be a positive number of seconds, got {max_duration!r}")
    if workers is not None:
        whole_number("workers", workers, 1, MAX_SESSIONS)
    return temporal, crf, preset, max_duration, workers


def _even_multiple(multiple: int) -> int:
    return multiple if multiple % 2 == 0 else multiple * 2


def clip_working_size(stylizer, width: int, height: int, size: int | str | None = None,
                      notice: Callable[[str], None] | None = None) -> tuple[int, int]:
    """The working size of a clip's frames: long side as for photos, aspect kept, even sides."""
    size = stylizer.size if size is None else size
    if size == SIZE_AUTO:
        if notice is not None:
            notice(f"size 'auto' picks a size per photo; a clip runs at one size: {DEFAULT_SIZE}")
        size = DEFAULT_SIZE
    return working_size(width, height, size, _even_multiple(int(stylizer.style.size_multiple)))


class FaceStep:
    """Faces in a clip's frames: found in frame order (:meth:`find`), pasted by the workers (:meth:`paste`).

    Mode "auto" runs a :class:`~animelite.faces.track.FaceTracker` (detection
    on a stride of frames, tracking and smoothing in between, faces fading in
    and out); "portrait" pastes the centred square on every frame.
    """

    def __init__(self, stage):
        from ..faces.track import FaceTracker

        self.stage = stage
        self.tracker = FaceTracker(stage) if stage.mode == "auto" else None

    def find(self, rgb: np.ndarray):
        """(faces, opacities, seconds) for this frame, or None in mode "portrait"; sequential, in frame order."""
        return self.tracker.update(rgb) if self.tracker is not None else None

    def paste(self, rgb: np.ndarray, y: np.ndarray, found) -> np.ndarray:
        if found is None:
            out, _summary = self.stage.apply(rgb, y)
        else:
            faces, opacities, seconds = found
            out, _summary = self.stage.apply(rgb, y, (faces, seconds), opacities=opacities)
        return out

    def reset(self) -> None:
        if self.tracker is not None:
            self.tracker.reset()


class _Timings:
    def __init__(self):
        self.lock = threading.Lock()
        self.sums = dict.fromkeys(STAGES, 0.0)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.sums[stage] += seconds


class _FramesDir:
    """``frames_dir``: one PNG per output frame, each written atomically; all removed again if the clip fails."""

    def __init__(self, folder: str | os.PathLike[str] | None, overwrite: bool, label: str):
        self.folder = None if folder is None else Path(folder)
        self.overwrite, self.written = overwrite, 0
        if self.folder is None:
            return
        if self.folder.exists() and not self.folder.is_dir():
            raise VideoError(f"{label}: --frames-dir {self.folder} exists and is not a folder")
        first = self.folder / FRAME_NAME.format(1)
        if first.exists() and not overwrite:
            raise OutputExistsError(f"{first} already exists (use overwrite to replace the frames there)")

    def write(self, rgb: np.ndarray) -> None:
        if self.folder is None:
            return
        atomic_write(self.folder / FRAME_NAME.format(self.written + 1), encode_image(rgb, "png"),
                     overwrite=self.overwrite, durable=False)
        self.written += 1

    def discard(self) -> None:
        for i in range(1, self.written + 1):
            try:
                os.unlink(self.folder / FRAME_NAME.format(i))
            except OSError:
                pass
        if self.folder is not None:
            try:
                self.folder.rmdir()  # only when this run made it and left it empty
            except OSError:
                pass


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            continue
    return None


_END = object()


def stylize_video(src, dst, *, stylizer, temporal: str = DEFAULT_TEMPORAL, crf: int | None = None,
                  preset: str | None = None, keep_size: bool = False, max_duration: float | None = None,
                  frames_dir=None, overwrite: bool = False, workers: int | None = None,
                  progress: Callable[[VideoProgress], None] | None = None,
                  cancel: threading.Event | None = None,
                  notice: Callable[[str], None] | None = None,
                  gate: Callable[[], None] | None = None) -> VideoSummary:
    """Stylize the clip *src* into *dst* (.mp4: H.264; .webm: VP9) with *stylizer*; returns a :class:`VideoSummary`.

    Audio streams are copied packet for packet (re-encoded only when the
    container cannot hold them), each frame keeps its timestamp, a rotated
    phone clip comes out upright. ``workers`` frames are in flight at once
    (default: the stylizer's sessions; build it with ``sessions=N, threads=1``).
    Raises :class:`VideoError` for an unusable input, :class:`VideoCancelled`
    when ``cancel`` is set or on Ctrl-C; nothing is left at *dst* then.
    ``gate``, when given, is called by a worker before each frame's model run
    and may block: a server uses it to let photo requests go first, so the
    frames in flight never hold the cores while photos wait.
    """
    started = time.perf_counter()
    label = os.fspath(src)
    fmt = video_format_for(dst)
    temporal, crf, preset, max_duration, workers = check_video_options(
        fmt, temporal=temporal, crf=crf, preset=preset, max_duration=max_duration, workers=workers)
    workers = workers or int(getattr(stylizer.generator, "size", 1))
    dst = Path(dst)
    if _same_file(Path(label), dst):
        raise OptionError(f"{dst} is the input itself: writing the result there would destroy the original; "
                          "choose another output path")
    if dst.exists() and not overwrite:
        raise OutputExistsError(f"{dst} already exists (use overwrite to replace it)")
    notices: list[str] = []

    def say(text: str) -> None:
        notices.append(text)
        if notice is not None:
            notice(f"{label}: {text}")

    info = probe_video(label, max_pixels=stylizer.max_pixels, max_duration=max_duration)
    for what in info.dropped:
        say(f"{what} dropped (only the video and audio streams are kept)")
    work = clip_working_size(stylizer, info.width, info.height, notice=say)
    out_size = (max(2, info.width // 2 * 2), max(2, info.height // 2 * 2)) if keep_size else work
    if keep_size and out_size != (info.width, info.height):
        say(f"output is {out_size[0]}x{out_size[1]}: H.264/VP9 in yuv420p need even sides")
    engine = Temporal(stylizer, temporal, notice=say)
    faces = FaceStep(stylizer.face_stage) if stylizer.face_stage is not None else None
    frames = _FramesDir(frames_dir, overwrite, label)
    total = info.frames or (int(round(info.duration_s * info.fps)) if info.duration_s and info.fps else None)
    timings = _Timings()
    done = [0]
    last = {"pts": None, "dur": None, "tb": None}
    try:
        with atomic_path(dst, overwrite=overwrite) as tmp:
            writer = Writer(tmp, fmt, label=label)
            try:
                reader = Reader(info, work, full=faces is not None, max_duration=max_duration,
                                on_audio=writer.audio_packet)
                with reader:
                    writer.add_video(out_size, reader.stream.time_base, info.fps, crf=crf, preset=preset)
                    for stream in reader.audio_streams:
                        writer.add_audio(stream)
                    for text in writer.notices:
                        say(text)
                    _run_pipeline(reader, writer, engine, faces, frames, timings, workers, keep_size, out_size,
                                  done, last, total, started, progress, cancel, gate)
                    if cancel is not None and cancel.is_set():
                        raise VideoCancelled(_cancel_text(label, done[0], total), done[0], total)
                timings.add("decode", reader.timings["decode"])
                timings.add("preprocess", reader.timings["preprocess"])
                writer.finish()
                timings.add("encode", writer.encode_seconds)
            except BaseException:
                writer.abort()
                raise
    except KeyboardInterrupt:
        frames.discard()
        raise VideoCancelled(_cancel_text(label, done[0], total, "interrupted"), done[0], total,
                             interrupted=True) from None
    except BaseException as exc:
        frames.discard()
        if isinstance(exc, OSError) and not isinstance(exc, AnimeliteError):
            raise VideoError(f"{dst}: cannot be written ({exc.strerror or exc}); nothing was written") from exc
        raise
    duration = float((last["pts"] + (last["dur"] or 0)) * last["tb"]) if last["pts"] is not None else 0.0
    return VideoSummary(src=label, dst=os.fspath(dst), frames=done[0], duration_s=duration, fps=info.fps,
                        input_size=(info.width, info.height), working_size=work, output_size=out_size,
                        timings=dict(timings.sums), audio=list(writer.audio_report), notices=notices,
                        temporal=engine.mode, peak_rss_mb=peak_rss_mb(), wall_s=time.perf_counter() - started,
                        frames_dir=None if frames.folder is None else os.fspath(frames.folder))


def _cancel_text(label: str, done: int, total: int | None, how: str = "cancelled") -> str:
    of = f" of {total}" if total else ""
    return f"{label}: {how} after {done}{of} frame(s); nothing was written"


def _run_pipeline(reader: Reader, writer: Writer, engine: Temporal, faces: FaceStep | None, frames: _FramesDir,
                  timings: _Timings, workers: int, keep_size: bool, out_size, done: list, last: dict,
                  total: int | None, started: float, progress, cancel, gate=None) -> None:
    """Decode thread -> prepare here -> worker pool -> encode thread; the first error anywhere stops them all
    and is raised here."""
    stop = threading.Event()
    errors: list[BaseException] = []
    decoded: queue.Queue = queue.Queue(maxsize=workers + 2)
    ready: queue.Queue = queue.Queue(maxsize=workers + 1)

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def decode() -> None:
        try:
            for frame in reader.frames():
                if not _put(decoded, frame, stop):
                    return
            _put(decoded, _END, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            fail(exc)

    def work(frame: Frame, ctx, found) -> np.ndarray:
        if gate is not None:
            gate()  # may wait (a server's photos go first); not counted in any stage
        t0 = time.perf_counter()
        y = engine.run(frame.x, ctx)
        t1 = time.perf_counter()
        timings.add("inference", t1 - t0)
        if faces is not None:
            y = faces.paste(frame.rgb, y, found)
            timings.add("faces", time.perf_counter() - t1)
        return y

    def encode() -> None:
        try:
            while True:
                item = _get(ready, stop)
                if item is None or item is _END:
                    return
                frame, ctx, future = item
                y = future.result()
                t0 = time.perf_counter()
                y = engine.finish(frame.x, y, ctx)
                t1 = time.perf_counter()
                timings.add("temporal", t1 - t0)
                out = to_uint8(y)
                if keep_size:
                    out = resize_rgb(out, out_size)
                frames.write(out)
                timings.add("encode", time.perf_counter() - t1)
                writer.write(out, frame.pts, frame.duration)
                last.update(pts=frame.pts, dur=frame.duration, tb=frame.time_base)
                done[0] += 1
                if progress is not None:
                    elapsed = time.perf_counter() - started
                    fps = done[0] / elapsed if elapsed > 0 else 0.0
                    eta = (max(0, total - done[0]) / fps) if total and fps > 0 else None
                    progress(VideoProgress(done[0], total, elapsed, eta, fps))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            fail(exc)

    threads = [threading.Thread(target=decode, name="animelite-video-decode", daemon=True),
               threading.Thread(target=encode, name="animelite-video-encode", daemon=True)]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="animelite-video-worker")
    for t in threads:
        t.start()
    try:
        while True:
            if cancel is not None and cancel.is_set():
                stop.set()
                break
            frame = _get(decoded, stop)
            if frame is None:
                break
            if frame is _END:
                _put(ready, _END, stop)
                break
            t0 = time.perf_counter()
            ctx = engine.prepare(frame.x)
            t1 = time.perf_counter()
            timings.add("temporal", t1 - t0)
            found = None
            if faces is not None:
                if ctx.cut:  # a new shot: no face track carries over (nor fades out over the new picture)
                    faces.reset()
                found = faces.find(frame.rgb)
                timings.add("faces", time.perf_counter() - t1)
            if not _put(ready, (frame, ctx, pool.submit(work, frame, ctx, found)), stop):
                break
        while threads[1].is_alive():  # the encoder drains what is in flight (or stops on an error)
            threads[1].join(_POLL)
            if cancel is not None and cancel.is_set():
                stop.set()
    finally:
        _shutdown(threads, pool, stop)
    if errors:
        raise errors[0]


def _shutdown(threads: list[threading.Thread], pool: ThreadPoolExecutor, stop: threading.Event) -> None:
    stop.set()
    for t in threads:
        t.join()
    pool.shutdown(wait=True, cancel_futures=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.exists() and a.samefile(b))
    except OSError:
        return False


class FrameStream:
    """One frame in, one stylized frame out, with the clip's temporal and face state kept between calls.

    For a live feed (the server's WebSocket route): ``stylize(rgb)`` takes an
    (H, W, 3) uint8 frame of any size and returns the stylized frame (uint8)
    at the working size (``size``, default the stylizer's). A frame of another
    size than the last one starts afresh (:meth:`reset`). Not thread-safe:
    one per connection.
    """

    def __init__(self, stylizer, *, temporal: str = DEFAULT_TEMPORAL, size: int | None = None,
                 notice: Callable[[str], None] | None = None):
        if size is not None:
            whole_number("size", size, MIN_SIZE, MAX_SIZE)
        self.stylizer, self.size = stylizer, size
        self.temporal = Temporal(stylizer, temporal, notice=notice)
        self.faces = FaceStep(stylizer.face_stage) if stylizer.face_stage is not None else None
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self._shape: tuple[int, int] | None = None

    def reset(self) -> None:
        self.temporal.reset()
        if self.faces is not None:
            self.faces.reset()
        self._shape = None

    def stylize(self, rgb: np.ndarray) -> np.ndarray:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise VideoError(f"a frame must be an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        if w * h > self.stylizer.max_pixels:
            raise VideoError(f"a {w}x{h} frame is above the {self.stylizer.max_pixels / 1e6:.1f} MP limit")
        if self._shape != (w, h):
            self.reset()
            self._shape = (w, h)
            self._work = clip_working_size(self.stylizer, w, h, self.size)
        t = self.timings
        t0 = time.perf_counter()
        x = resize_rgb(rgb, self._work)
        t1 = time.perf_counter()
        ctx = self.temporal.prepare(x)
        t2 = time.perf_counter()
        if self.faces is not None and ctx.cut:  # a new shot: no face track carries over
            self.faces.reset()
        found = self.faces.find(rgb) if self.faces is not None else None
        t3 = time.perf_counter()
        y = self.temporal.run(x, ctx)
        t4 = time.perf_counter()
        if self.faces is not None:
            y = self.faces.paste(rgb, y, found)
        t5 = time.perf_counter()
        y = self.temporal.finish(x, y, ctx)
        out = to_uint8(y)
        t6 = time.perf_counter()
        t["preprocess"] += t1 - t0
        t["temporal"] += (t2 - t1) + (t6 - t5)
        t["faces"] += (t3 - t2) + (t5 - t4)
        t["inference"] += t4 - t3
        self.frames += 1
        return out


__all__ = ["STAGES", "FRAME_NAME", "VideoProgress", "VideoSummary", "VideoCancelled", "FrameStream", "FaceStep",
           "stylize_video", "video_format_for", "check_video_options", "clip_working_size"]
