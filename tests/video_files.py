"""Video files made at test time with PyAV: good clips (any container, VFR, rotated, with audio) and bad ones.

Frames come from :mod:`clips` (a camera-like pan across a synthetic photo)
and the audio from :func:`clips.tone`, so nothing here needs ``../shared``.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from clips import pan_frames, synthetic_photo, tone
from PIL import Image

_PHOTO = None


def frames(n: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[np.ndarray]:
    global _PHOTO
    if _PHOTO is None:
        _PHOTO = synthetic_photo()
    return list(pan_frames(_PHOTO, n, size, seed=seed))


def write_clip(path: Path, n: int = 12, size: tuple[int, int] = (320, 240), *, fps: int = 25,
               codec: str | None = None, fmt: str | None = None, audio: str | None = "aac", channels: int = 2,
               pts: list[int] | None = None, time_base: Fraction | None = None, rotation: int = 0,
               options: dict | None = None, extra: str | None = None) -> Path:
    """A clip of *n* pan frames; ``audio`` names the audio encoder (None: no audio); ``pts`` (in ``time_base``)
    makes it variable-frame-rate; ``rotation`` sets the display matrix; ``extra="subtitle"`` adds a text track."""
    ext = path.suffix.lower()
    codec = codec or {".webm": "libvpx-vp9", ".avi": "mjpeg"}.get(ext, "libx264")
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        tb = time_base or Fraction(1, fps)
        v.codec_context.time_base = tb
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream(audio, rate=48000)
            a.layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        if extra == "subtitle":
            c.add_stream("mov_text" if ext in (".mp4", ".mov") else "ass")
        for i, rgb in enumerate(frames(n, size)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = pts[i] if pts else i
            f.time_base = tb
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            seconds = ((pts[-1] + 1) * tb if pts else Fraction(n, fps))
            samples = tone(float(seconds), channels=channels)
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout=a.layout.name)  # the encoder converts
            af.sample_rate, af.pts = 48000, 0
            c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def audio_hashes(path: Path) -> list[list[str]]:
    """SHA-256 of every audio packet's bytes, per audio stream."""
    with av.open(str(path)) as c:
        out = {s.index: [] for s in c.streams.audio}
        for pkt in c.demux(*c.streams.audio):
            if pkt.size:
                out[pkt.stream.index].append(hashlib.sha256(bytes(pkt)).hexdigest())
    return list(out.values())


def frame_times(path: Path) -> list[float]:
    """Each decoded video frame's presentation time in seconds."""
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def decoded(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """The clip's frames as RGB arrays (the first *limit* of them when given)."""
    out: list[np.ndarray] = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if limit is not None and len(out) >= limit:
                break
            out.append(f.to_ndarray(format="rgb24"))
    return out


def video_duration(path: Path) -> float:
    """Last frame's time + its duration, as a player sees the clip's end."""
    with av.open(str(path)) as c:
        last = None
        for f in c.decode(video=0):
            last = f
        return float((last.pts + (last.duration or 0)) * last.time_base)


# -- bad inputs -------------------------------------------------------------------------------------------
def jpeg_named_mp4(path: Path) -> Path:
    Image.fromarray(frames(1)[0]).save(path, format="JPEG")
    return path


def random_bytes(path: Path, n: int = 20000) -> Path:
    path.write_bytes(np.random.default_rng(1).bytes(n))
    return path


def moov_missing(path: Path) -> Path:
    """An MP4 cut in half with its index (moov) at the end: what a copy interrupted part-way leaves."""
    src = write_clip(path.with_name("whole_" + path.name), 12)
    data = src.read_bytes()
    src.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def cut_mid_stream(path: Path) -> Path:
    """A faststart MP4 (index first) cut in half: the index promises frames the file no longer has."""
    src = write_clip(path.with_name("whole_" + path.name), 30, options={"movflags": "faststart"})
    data = src.read_bytes()
    src.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        af = av.AudioFrame.from_ndarray(tone(0.5), format="fltp", layout="stereo")
        af.sample_rate, af.pts = 48000, 0
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    return path


def zero_frames(path: Path) -> Path:
    """An AVI whose video stream has no frames at all."""
    c = av.open(str(path), "w", format="avi")
    v = c.add_stream("mjpeg", rate=25)
    v.width, v.height, v.pix_fmt = 320, 240, "yuvj420p"
    c.start_encoding()
    c.close()
    return path


def unknown_codec(path: Path) -> Path:
    """An MKV whose video codec id names no decoder FFmpeg has (what an exotic camera codec looks like)."""
    src = write_clip(path.with_name("whole_" + path.name), 6, audio=None)
    data = src.read_bytes()
    src.unlink()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XYZQ/ISO/ABCD"))
    return path


def huge_declared(path: Path, side: int = 16000) -> Path:
    """An AVI that declares side x side frames (one tiny bogus packet): must be refused from the header."""
    c = av.open(str(path), "w", format="avi")
    v = c.add_stream("rawvideo", rate=25)
    v.width, v.height, v.pix_fmt = side, side, "rgb24"
    c.start_encoding()
    p = av.Packet(b"\0" * 100)
    p.stream, p.pts, p.dts = v, 0, 0
    c.mux(p)
    c.close()
    return path


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write could leave (``.name.XXXXXXXX.tmp``)."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


__all__ = ["frames", "write_clip", "audio_hashes", "frame_times", "decoded", "video_duration", "jpeg_named_mp4",
           "random_bytes", "moov_missing", "cut_mid_stream", "audio_only", "zero_frames", "unknown_codec",
           "huge_declared", "leftovers"]
