"""Video files in and out with PyAV (FFmpeg in-process): probe, decode frames upright, encode, carry audio.

:func:`probe_video` opens a file by its content, refuses what cannot work
(not a video, no video stream, a codec the wheel cannot decode, absurd
declared sizes, over a duration limit) before any frame is decoded, and
returns a :class:`VideoInfo`. :class:`Reader` demuxes the file once: video
frames come out upright (the display matrix applied) at the size asked, with
their own timestamps; every audio packet goes to :class:`Writer` as it is
read. :class:`Writer` writes H.264 ``yuv420p`` MP4 or VP9 WebM into a path
it is given (the driver's temporary file), copies each audio stream packet for
packet when the container takes its codec and re-encodes it (AAC for MP4,
Opus for WebM) otherwise. Muxing is locked: the reader's thread muxes audio,
the encoder's thread video.

Truncated input: a file whose index is missing cannot be opened at all; a
file cut mid-stream is refused as a whole (:class:`VideoError`, nothing
written) even though its first frames decode, because the result would be a
silently shorter clip with its audio out of step with what the user has.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import ImageError
from ..options import DEFAULT_MAX_PIXELS, DEFAULT_PRESET, VIDEO_PRESETS

#: container demuxers FFmpeg uses for single pictures: such a file is a photo, never a video
_IMAGE_DEMUXERS = ("image2", "_pipe", "gif", "apng", "webp", "tiff", "bmp")
#: audio encoder used when the output container does not take an input's audio codec
_AUDIO_FALLBACK = {"mp4": "aac", "webm": "libopus"}
_VIDEO_ENCODER = {"mp4": "libx264", "webm": "libvpx-vp9"}
#: at most this many declared frames (and 1%) may be missing at the end before a file counts as cut short
_MISSING_FRAMES_OK = 2


class VideoError(ImageError):
    """One video input (or output) cannot be used: the message names the file and the reason."""


@dataclass
class VideoInfo:
    """What a probe found, before any frame was decoded (``rotation`` and ``first_frame_s`` after one)."""

    path: str
    container: str  #: FFmpeg's demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", ...)
    codec: str  #: the video codec ("h264", "hevc", "vp9", ...)
    width: int  #: display width: the stored picture with its rotation applied
    height: int
    coded_size: tuple[int, int]  #: (width, height) as stored
    rotation: int  #: degrees counter-clockwise the stored picture is turned for display (0, 90, 180, 270)
    fps: float | None  #: average frame rate, when known
    frames: int | None  #: frames the container declares, when it does
    duration_s: float | None  #: the video stream's (else the container's) duration, when known
    audio: list[str] = field(default_factory=list)  #: codec of each audio stream
    dropped: list[str] = field(default_factory=list)  #: other streams (subtitles, data, more video)


def _label(src) -> str:
    return os.fspath(src)


def _is_image_demuxer(name: str) -> bool:
    return any(key in name for key in _IMAGE_DEMUXERS)


def is_video(src: str | os.PathLike[str]) -> bool:
    """Whether *src* holds a video (by content: a PyAV probe), not a still picture or other data."""
    import av

    try:
        with av.open(os.fspath(src), "r") as container:
            if _is_image_demuxer(container.format.name):
                return False
            return any(not _is_cover(s) for s in container.streams.video)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return False


def _is_cover(stream) -> bool:
    """An MP4/MKV cover picture is a 'video' stream of one still frame."""
    try:
        return bool(stream.disposition & stream.disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _open_error(label: str, exc: BaseException) -> VideoError:
    """A VideoError saying why FFmpeg could not open *label*: missing, empty, a photo, truncated, not a video."""
    path = Path(label)
    for kind, why in ((FileNotFoundError, "no such file"), (IsADirectoryError, "is a folder, not a video file"),
                      (PermissionError, "permission denied")):
        if isinstance(exc, kind):
            return VideoError(f"{label}: {why}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        return VideoError(f"{label}: cannot be read ({err.strerror or err})")
    if not head:
        return VideoError(f"{label}: is empty (0 bytes), not a video")
    if head[4:8] == b"ftyp":
        return VideoError(f"{label}: looks like an MP4/MOV file but it cannot be opened: its index (the moov box) "
                          "is missing or damaged, as when a file is truncated or still being written")
    return VideoError(f"{label}: is not a video (FFmpeg recognises no container format in it)")


def open_input(src):
    """The PyAV input container for *src*, or a VideoError naming the file and why it cannot be opened."""
    import av

    label = _label(src)
    if os.path.isdir(label):
        raise VideoError(f"{label}: is a folder, not a video file")
    try:
        return av.open(label, "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise _open_error(label, exc) from None


def _video_stream(container, label: str):
    if _is_image_demuxer(container.format.name):
        kind = container.format.name.replace("_pipe", "").upper()
        raise VideoError(f"{label}: is a still picture ({kind}), not a video")
    videos = [s for s in container.streams.video if not _is_cover(s)]
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise VideoError(f"{label}: has no video stream (it holds {', '.join(kinds)} only)")
    return videos[0]


def _duration_s(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def probe_video(src: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_duration: float | None = None) -> VideoInfo:
    """Open *src* by content and describe its video stream; a :class:`VideoError` for anything unusable.

    Size (``max_pixels``, as for photos) and duration (``max_duration``
    seconds, when the file declares one) are checked from the headers, before
    decoding; then one frame is decoded, which proves the codec works and
    gives the rotation.
    """
    label = _label(src)
    container = open_input(src)
    with container:
        stream = _video_stream(container, label)
        ctx = stream.codec_context
        if ctx is None:
            raise VideoError(f"{label}: its video codec cannot be decoded by this build of FFmpeg (PyAV's wheel); "
                             "convert it to H.264 first")
        width, height = stream.width, stream.height
        if width <= 0 or height <= 0:
            raise VideoError(f"{label}: its video stream declares no picture size ({width}x{height})")
        if width * height > max_pixels:
            raise VideoError(f"{label}: declares {width}x{height} frames = {width * height / 1e6:.1f} MP, above the "
                             f"{max_pixels / 1e6:.1f} MP limit for one frame; refused before decoding")
        duration = _duration_s(container, stream)
        if max_duration is not None and duration is not None and duration > max_duration:
            raise VideoError(f"{label}: lasts {duration:.1f} s, longer than the --max-duration of "
                             f"{max_duration:g} s; refused before decoding")
        rate = stream.average_rate or stream.guessed_rate
        declared = stream.frames or None
        audio = [s.codec_context.name if s.codec_context else "unknown" for s in container.streams.audio]
        dropped = [f"{s.type} stream #{s.index} ({s.codec_context.name if s.codec_context else 'unknown codec'})"
                   for s in container.streams if s.type not in ("audio",) and s is not stream]
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = _quarter_turns(frame.rotation) * 90
                break
            else:
                raise VideoError(f"{label}: has a video stream with no frames in it")
        except VideoError:
            raise
        except Exception as exc:  # noqa: BLE001 - av.FFmpegError and friends: the first frame does not decode
            raise VideoError(f"{label}: its first video frame cannot be decoded ({ctx.name}: {exc})") from None
        coded = (width, height)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(path=label, container=container.format.name, codec=ctx.name, width=width, height=height,
                         coded_size=coded, rotation=rotation, fps=float(rate) if rate else None, frames=declared,
                         duration_s=duration, audio=audio, dropped=dropped)


def _quarter_turns(rotation) -> int:
    """A display rotation (degrees counter-clockwise, any sign) as quarter turns 0..3 (rounded)."""
    try:
        return int(round(float(rotation or 0) / 90)) % 4
    except (TypeError, ValueError):
        return 0


@dataclass
class Frame:
    """One decoded frame, upright: ``x`` at the working size, ``rgb`` at the input size (when asked for)."""

    index: int
    pts: int
    time_base: Fraction
    duration: int | None
    x: np.ndarray
    rgb: np.ndarray | None


class Reader:
    """Demux *info*'s file once: :meth:`frames` yields upright :class:`Frame`\\ s in order; audio packets go to
    ``on_audio`` (called from the same thread) as they are read; subtitle and data streams are skipped.

    ``size`` is the upright (width, height) of ``Frame.x``; ``full`` also gives
    the frame at its input size (for the face stage). ``timings`` sums
    seconds in "decode" (demux + decode) and "preprocess" (colour conversion,
    resize, rotation).
    """

    def __init__(self, info: VideoInfo, size: tuple[int, int], *, full: bool = False,
                 on_audio: Callable | None = None, max_duration: float | None = None):
        self.info, self.size, self.full, self.on_audio = info, size, full, on_audio
        self.max_duration = max_duration
        self.timings = {"decode": 0.0, "preprocess": 0.0}
        self.container = open_input(info.path)
        self.stream = _video_stream(self.container, info.path)
        self.stream.thread_type = "AUTO"  # FFmpeg's frame/slice threads: decoding keeps up with the workers
        self.audio_streams = list(self.container.streams.audio)
        self.frames_read = 0

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _convert(self, frame) -> tuple[np.ndarray, np.ndarray | None]:
        turns = _quarter_turns(frame.rotation)
        w, h = self.size
        sw, sh = (h, w) if turns % 2 else (w, h)  # the stored orientation's sides
        x = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="LANCZOS").to_ndarray()
        rgb = frame.to_ndarray(format="rgb24") if self.full else None
        if turns:
            x = np.ascontiguousarray(np.rot90(x, turns))
            rgb = None if rgb is None else np.ascontiguousarray(np.rot90(rgb, turns))
        return x, rgb

    def frames(self) -> Iterator[Frame]:
        import av

        label = self.info.path
        stream, tb = self.stream, self.stream.time_base or Fraction(1, 90000)
        wanted = [stream] + self.audio_streams
        last_pts = None
        rate = self.info.fps or 25.0
        step = max(1, int(round(1 / (rate * tb)))) if tb else 1
        t0 = time.perf_counter()
        try:
            for packet in self.container.demux(wanted):
                if packet.stream is not stream:
                    if self.on_audio is not None and packet.dts is not None:
                        self.timings["decode"] += time.perf_counter() - t0
                        self.on_audio(packet)
                        t0 = time.perf_counter()
                    continue
                for frame in packet.decode():
                    pts = frame.pts
                    if pts is None:  # a container without timestamps (some AVI): the nominal frame rate
                        pts = 0 if last_pts is None else last_pts + step
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # the encoder needs rising timestamps
                    last_pts = pts
                    if (self.max_duration is not None and self.info.duration_s is None
                            and (pts - (stream.start_time or 0)) * tb > self.max_duration):
                        raise VideoError(f"{label}: runs past the --max-duration of {self.max_duration:g} s "
                                         "(its length is not declared, so this was found while decoding)")
                    t1 = time.perf_counter()
                    self.timings["decode"] += t1 - t0
                    x, rgb = self._convert(frame)
                    t0 = time.perf_counter()
                    self.timings["preprocess"] += t0 - t1
                    self.frames_read += 1
                    yield Frame(self.frames_read - 1, pts, tb, frame.duration or None, x, rgb)
                    t0 = time.perf_counter()
        except VideoError:
            raise
        except av.FFmpegError as exc:
            raise VideoError(f"{label}: damaged after {self.frames_read} frame(s): FFmpeg cannot read on ({exc}); "
                             "the file is truncated or corrupt, nothing was written") from None
        self.timings["decode"] += time.perf_counter() - t0
        self._check_complete()

    def _check_complete(self) -> None:
        label, declared, got = self.info.path, self.info.frames, self.frames_read
        if got == 0:
            raise VideoError(f"{label}: has a video stream with no decodable frames")
        if declared and declared - got > max(_MISSING_FRAMES_OK, declared // 100):
            raise VideoError(f"{label}: is cut short: it declares {declared} frames but only {got} could be read "
                             "(a truncated file); nothing was written")


class Writer:
    """An output container at *path* (``fmt`` "mp4" or "webm") with one video stream and the input's audio.

    Add every stream (:meth:`add_video`, :meth:`add_audio`) before the first
    :meth:`write` or :meth:`audio_packet`: the header is written then.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str, *, label: str):
        import av

        self.fmt, self.label = fmt, label
        self.container = av.open(os.fspath(path), "w", format=fmt)
        self.lock = threading.Lock()
        self.video = None
        self._audio: dict[int, tuple] = {}  # input stream index -> (output stream, decoder-resampler or None)
        self.audio_report: list[str] = []
        self.notices: list[str] = []
        self.encode_seconds = 0.0
        self._last_pts = None

    def add_video(self, size: tuple[int, int], time_base: Fraction, rate: float | None, *, crf: int,
                  preset: str = DEFAULT_PRESET) -> None:
        from fractions import Fraction as F

        codec = _VIDEO_ENCODER[self.fmt]
        rate_q = F(rate).limit_denominator(1001) if rate else F(25)
        options = {"crf": str(crf)}
        if self.fmt == "mp4":
            options["preset"] = preset
        else:  # VP9: the preset's speed as cpu-used, constant quality (b:v 0), row multithreading
            level = len(VIDEO_PRESETS) - 1 - VIDEO_PRESETS.index(preset)  # ultrafast 8 .. veryslow 0
            options.update({"b": "0", "cpu-used": str(level), "deadline": "realtime" if level >= 5 else "good",
                            "row-mt": "1"})
        stream = self.container.add_stream(codec, rate=rate_q, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        for attr, value in (("color_primaries", 1), ("color_trc", 1), ("colorspace", 1)):  # BT.709, tagged
            try:
                setattr(stream.codec_context, attr, value)
            except (AttributeError, TypeError, ValueError):
                pass
        self.video = stream

    def add_audio(self, stream, notice: Callable[[str], None] | None = None) -> None:
        """Copy *stream* (an input audio stream) packet for packet, or re-encode it when the container cannot
        hold its codec."""
        name = stream.codec_context.name if stream.codec_context else None
        if name and name in self.container.supported_codecs:
            out = self.container.add_stream_from_template(stream)
            self._audio[stream.index] = (out, None)
            self.audio_report.append("copied")
            return
        encoder = _AUDIO_FALLBACK[self.fmt]
        if stream.codec_context is None:
            self.notices.append(f"audio stream #{stream.index} has a codec this FFmpeg cannot decode; dropped")
            self.audio_report.append("dropped")
            return
        import av

        ctx = stream.codec_context
        rate = ctx.sample_rate if encoder == "aac" else 48000  # Opus runs at 48 kHz
        layout = ctx.layout.name if ctx.layout.nb_channels <= 2 or encoder == "aac" else "5.1"
        out = self.container.add_stream(encoder, rate=rate)
        out.layout = layout
        fmt = out.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        self._audio[stream.index] = (out, resampler)
        self.audio_report.append("re-encoded")
        what = "AAC" if encoder == "aac" else "Opus"
        self.notices.append(f"audio stream #{stream.index} ({name}) cannot go into {self.fmt.upper()} as it is: "
                            f"re-encoded to {what}")

    def audio_packet(self, packet) -> None:
        entry = self._audio.get(packet.stream.index)
        if entry is None:
            return
        out, resampler = entry
        with self.lock:
            if resampler is None:
                packet.stream = out
                self.container.mux(packet)
                return
            for frame in packet.decode():
                for chunk in resampler.resample(frame):
                    self.container.mux(out.encode(chunk))

    def write(self, rgb: np.ndarray, pts: int, duration: int | None) -> None:
        """Encode one frame (uint8 RGB at the video stream's size) with its input timestamp."""
        import av

        t0 = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709")
        frame.pts = pts
        frame.time_base = self.video.codec_context.time_base
        if duration:
            frame.duration = duration
        packets = self.video.encode(frame)
        self.encode_seconds += time.perf_counter() - t0
        with self.lock:
            self.container.mux(packets)

    def finish(self) -> None:
        """Flush the encoders and write the trailer (the file is complete after this)."""
        t0 = time.perf_counter()
        with self.lock:
            if self.video is not None:
                self.container.mux(self.video.encode(None))
            for out, resampler in self._audio.values():
                if resampler is not None:
                    for chunk in resampler.resample(None):
                        self.container.mux(out.encode(chunk))
                    self.container.mux(out.encode(None))
            self.container.close()
        self.encode_seconds += time.perf_counter() - t0

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass


__all__ = ["VideoError", "VideoInfo", "Frame", "Reader", "Writer", "is_video", "probe_video", "open_input"]
