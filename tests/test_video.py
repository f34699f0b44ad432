"""The video driver and its PyAV I/O: what round-trips, what is refused, and that nothing is left behind."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest
import video_files as vf
from helpers import make_store
from PIL import Image

import animelite
from animelite.imageops import resize_rgb
from animelite.options import OptionError
from animelite.pipeline import Stylizer
from animelite.video import (FrameStream, VideoCancelled, VideoError, is_video, probe_video, stylize_video)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("videostore"))


@pytest.fixture(scope="module")
def tiny(store):
    return Stylizer("tiny", store=store, size=160, sessions=2, threads=1, faces="off")


def _run(src, dst, stylizer, **kw):
    kw.setdefault("temporal", "off")
    return stylize_video(src, dst, stylizer=stylizer, **kw)


def test_mp4_round_trip_keeps_audio_packets_timestamps_and_duration(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "clip.mp4", 20)
    seen = []
    summary = _run(src, tmp_path / "out.mp4", tiny, progress=seen.append)
    out = tmp_path / "out.mp4"
    info = probe_video(out)
    assert info.codec == "h264" and (info.width, info.height) == summary.output_size == (160, 120)
    assert summary.frames == 20 and summary.audio == ["copied"]
    assert vf.audio_hashes(out) == vf.audio_hashes(src)  # bit-identical packets
    assert vf.frame_times(out) == pytest.approx(vf.frame_times(src), abs=1e-3)
    assert abs(vf.video_duration(out) - vf.video_duration(src)) <= 1 / 25 + 1e-6
    assert [p.frames_done for p in seen] == list(range(1, 21)) and seen[-1].frames_total == 20
    assert set(summary.timings) == {"decode", "preprocess", "inference", "faces", "temporal", "encode"}
    assert summary.timings["inference"] > 0 and summary.peak_rss_mb > 0
    with __import__("av").open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert vf.leftovers(tmp_path) == []


def test_gate_is_passed_by_every_frame_before_its_model_run(tmp_path, tiny):
    """``gate`` (a server's photos-first hook) runs once per frame on the workers, before inference, and
    holding it holds the frames: none is stylized while it blocks."""
    src = vf.write_clip(tmp_path / "clip.mp4", 12, audio=None)
    opened, calls, done = threading.Event(), [], []
    lock = threading.Lock()

    def gate():
        opened.wait(10)
        with lock:
            calls.append(threading.current_thread().name)

    def progress(p):
        done.append(p.frames_done)

    worker = threading.Thread(target=lambda: _run(src, tmp_path / "out.mp4", tiny, gate=gate, progress=progress))
    worker.start()
    threading.Event().wait(0.5)
    assert done == [] and calls == []  # held at the gate: no frame got through
    opened.set()
    worker.join(60)
    assert len(calls) == 12 and all("worker" in name for name in calls) and done[-1] == 12


def test_stylized_frames_are_the_models_output(tmp_path, tiny):
    """Each encoded frame is the per-frame stylization of its input frame (within codec loss)."""
    src = vf.write_clip(tmp_path / "clip.mp4", 6, audio=None)
    _run(src, tmp_path / "out.mp4", tiny, crf=0, preset="ultrafast", frames_dir=tmp_path / "frames")
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(1, 7)]
    for png, got, rgb in zip(pngs, vf.decoded(tmp_path / "out.mp4"), vf.decoded(src)):
        want = tiny.generator.run(np.asarray(Image.fromarray(rgb).resize((160, 120), Image.LANCZOS),
                                             np.float32) / 255)
        want = (want * 255 + 0.5).astype(np.uint8)
        frame = np.asarray(Image.open(png))
        assert np.abs(frame.astype(int) - want).mean() < 3  # swscale vs Pillow resize only
        assert np.abs(got.astype(int) - frame).mean() < 3  # yuv420p round trip at crf 0


def test_webm_output_reencodes_aac_to_opus_with_a_notice(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "clip.mp4", 12)
    notes = []
    summary = _run(src, tmp_path / "out.webm", tiny, notice=notes.append)
    info = probe_video(tmp_path / "out.webm")
    assert info.codec == "vp9" and info.audio == ["opus"] and summary.audio == ["re-encoded"]
    assert any("re-encoded to Opus" in n for n in notes)
    assert vf.frame_times(tmp_path / "out.webm") == pytest.approx(vf.frame_times(src), abs=1.5e-3)


@pytest.mark.parametrize("name,audio", [("clip.webm", "libopus"), ("clip.mkv", "aac"), ("clip.avi", None),
                                        ("clip.mov", "aac")])
def test_other_containers_in_audio_copied_into_mp4(tmp_path, tiny, name, audio):
    src = vf.write_clip(tmp_path / name, 10, audio=audio)
    summary = _run(src, tmp_path / "out.mp4", tiny)
    assert summary.frames == 10
    assert summary.audio == (["copied"] if audio else [])
    if audio:
        assert vf.audio_hashes(tmp_path / "out.mp4") == vf.audio_hashes(src)


def test_bigbuckbunny_51_aac_copied_bit_identical(tmp_path, store, shared_dir):
    src = shared_dir / "videos" / "bigbuckbunny.mp4"
    s = Stylizer("tiny", store=store, size=96, sessions=2, threads=1, faces="off")
    summary = _run(src, tmp_path / "bbb.mp4", s)
    assert summary.audio == ["copied"] and summary.frames == 132
    assert vf.audio_hashes(tmp_path / "bbb.mp4") == vf.audio_hashes(src)
    import av

    with av.open(str(tmp_path / "bbb.mp4")) as c:
        assert c.streams.audio[0].codec_context.layout.nb_channels == 6


def test_variable_frame_rate_timestamps_kept(tmp_path, tiny):
    pts = [0, 40, 80, 200, 240, 250, 400, 600, 640, 680]  # ms: gaps and a burst
    src = vf.write_clip(tmp_path / "vfr.mp4", len(pts), pts=pts, time_base=Fraction(1, 1000))
    _run(src, tmp_path / "out.mp4", tiny)
    assert vf.frame_times(tmp_path / "out.mp4") == pytest.approx([p / 1000 for p in pts], abs=1e-3)
    assert vf.audio_hashes(tmp_path / "out.mp4") == vf.audio_hashes(src)


def test_rotated_phone_clip_comes_out_upright(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "phone.mov", 4, size=(320, 240), rotation=90, audio=None)
    info = probe_video(src)
    assert info.rotation == 90 and (info.width, info.height) == (240, 320)
    summary = _run(src, tmp_path / "out.mp4", tiny, keep_size=True)
    assert summary.output_size == (240, 320)
    out = probe_video(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation) == (240, 320, 0)
    got = vf.decoded(tmp_path / "out.mp4")[0].astype(float)
    stored = vf.frames(1, (320, 240))[0]  # the frame as stored, before the display rotation

    def corr(a):
        a = np.asarray(a, float).mean(axis=2).ravel()
        b = got.mean(axis=2).ravel()
        return np.corrcoef(a, b)[0, 1]

    # the display matrix turns the picture 90 degrees counter-clockwise (np.rot90 k=1), not clockwise
    assert corr(np.rot90(stored, 1)) > 0.8 > corr(np.rot90(stored, -1))


def test_keep_size_brings_frames_back_to_the_input_size(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "clip.mkv", 4, size=(330, 250), audio=None)
    summary = _run(src, tmp_path / "out.mp4", tiny, keep_size=True)
    assert summary.output_size == (330, 250) and summary.working_size == (160, 120)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.width, info.height) == (330, 250)
    assert summary.working_size[0] % 2 == 0 and summary.working_size[1] % 2 == 0


BAD = {
    "jpeg_named_mp4": (vf.jpeg_named_mp4, "still picture (JPEG), not a video"),
    "random_bytes": (vf.random_bytes, "is not a video"),
    "moov_missing": (vf.moov_missing, "index (the moov box) is missing"),
    "cut_mid_stream": (vf.cut_mid_stream, "nothing was written"),
    "audio_only": (vf.audio_only, "has no video stream"),
    "zero_frames": (vf.zero_frames, "no frames"),
    "unknown_codec": (vf.unknown_codec, "cannot be decoded"),
    "huge_declared": (vf.huge_declared, "16000x16000"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, tiny, case):
    make, message = BAD[case]
    ext = {"zero_frames": ".avi", "unknown_codec": ".mkv", "huge_declared": ".avi"}.get(case, ".mp4")
    src = make(tmp_path / f"bad{ext}")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VideoError) as info:
        _run(src, tmp_path / "out.mp4", tiny, frames_dir=tmp_path / "frames")
    assert str(src) in str(info.value) and message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no frames, no temporary file
    assert not is_video(src) or case in ("cut_mid_stream", "zero_frames", "unknown_codec", "huge_declared")


def test_cut_mid_stream_is_refused_whole(tmp_path, tiny):
    """The decision: frames before the cut decode, but a shorter clip is not written (nothing is)."""
    src = vf.cut_mid_stream(tmp_path / "cut.mp4")
    with pytest.raises(VideoError, match=r"declares 30 frames but only \d+ could be read|damaged after"):
        _run(src, tmp_path / "out.mp4", tiny)
    assert not (tmp_path / "out.mp4").exists()


def test_max_duration_refused_before_decoding(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "long.mp4", 25)  # 1 s
    with pytest.raises(VideoError, match=r"lasts 1\.0 s, longer than the --max-duration of 0\.5 s"):
        _run(src, tmp_path / "out.mp4", tiny, max_duration=0.5)
    assert _run(src, tmp_path / "out.mp4", tiny, max_duration=2).frames == 25


def test_max_duration_stops_a_stream_of_unknown_length(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "raw.h264", 25, fmt="h264", audio=None)
    info = probe_video(src)
    if info.duration_s is not None:
        pytest.skip("FFmpeg estimated a duration for the raw stream")
    with pytest.raises(VideoError, match="runs past the --max-duration"):
        _run(src, tmp_path / "out.mp4", tiny, max_duration=0.3)
    assert not (tmp_path / "out.mp4").exists() and vf.leftovers(tmp_path) == []


def test_cancel_leaves_nothing_and_says_how_far(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "clip.mp4", 30)
    cancel = threading.Event()

    def progress(p):
        if p.frames_done == 5:
            cancel.set()

    with pytest.raises(VideoCancelled) as info:
        _run(src, tmp_path / "out.mp4", tiny, progress=progress, cancel=cancel, frames_dir=tmp_path / "frames")
    assert 5 <= info.value.frames_done < 30 and "nothing was written" in str(info.value)
    assert not info.value.interrupted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_an_error_part_way_leaves_nothing(tmp_path, store, monkeypatch):
    s = Stylizer("tiny", store=store, size=160, sessions=2, threads=1, faces="off")
    src = vf.write_clip(tmp_path / "clip.mp4", 20)
    calls = []
    real = s.generator.run

    def flaky(x):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("inference failed")
        return real(x)

    monkeypatch.setattr(s.generator, "run", flaky)
    with pytest.raises(RuntimeError, match="inference failed"):
        _run(src, tmp_path / "out.mp4", s, frames_dir=tmp_path / "frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_existing_output_is_not_replaced(tmp_path, tiny):
    src = vf.write_clip(tmp_path / "clip.mp4", 4)
    (tmp_path / "out.mp4").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        _run(src, tmp_path / "out.mp4", tiny)
    assert (tmp_path / "out.mp4").read_bytes() == b"precious"
    with pytest.raises(OptionError, match="the input itself"):
        _run(src, src, tiny, overwrite=True)


@pytest.mark.parametrize("kw,message", [({"crf": 60}, "crf must be"), ({"preset": "warp"}, "unknown preset"),
                                        ({"temporal": "smooth"}, "unknown temporal"),
                                        ({"max_duration": -1}, "max_duration must be"),
                                        ({"workers": 0}, "workers must be")])
def test_bad_options_are_option_errors(tmp_path, tiny, kw, message):
    src = vf.write_clip(tmp_path / "clip.mp4", 2, audio=None)
    with pytest.raises(OptionError, match=message):
        _run(src, tmp_path / "out.mp4", tiny, **kw)
    with pytest.raises(OptionError, match=r"\.mp4 \(H\.264\) or \.webm"):
        _run(src, tmp_path / "out.gif", tiny)


def test_is_video_by_content(tmp_path):
    clip = vf.write_clip(tmp_path / "clip.bin", 2, fmt="mp4", audio=None)
    assert is_video(clip)
    assert not is_video(vf.jpeg_named_mp4(tmp_path / "photo.mp4"))
    assert not is_video(vf.audio_only(tmp_path / "sound.mp4"))
    assert not is_video(tmp_path / "missing.mp4")


def test_frame_stream_matches_the_clip_path_and_resets_on_a_new_size(tiny):
    stream = FrameStream(tiny, temporal="off")
    a, b = vf.frames(2, (320, 240))
    out = stream.stylize(a)
    assert out.dtype == np.uint8 and out.shape == (120, 160, 3)
    x = resize_rgb(a, (160, 120))  # the photo path's resize
    want = (tiny.generator.run(x.astype(np.float32) / 255) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out, want)
    assert stream.stylize(b).shape == (120, 160, 3)
    assert stream.stylize(np.zeros((100, 200, 3), np.uint8)).shape == (80, 160, 3)
    with pytest.raises(VideoError, match="uint8"):
        stream.stylize(np.zeros((10, 10), np.float32))


def test_face_tracks_end_at_a_scene_cut(tmp_path, store, monkeypatch):
    """A cut starts the faces afresh (a track from the last shot never fades out over the new picture),
    in the clip path and in FrameStream alike; frames within a shot keep their tracks."""
    from animelite.faces.track import FaceTracker

    resets, seen = [], [0]  # resets: how many frames the trackers had seen when each reset came
    real_reset, real_update = FaceTracker.reset, FaceTracker.update

    def update(self, rgb):
        seen[0] += 1
        return real_update(self, rgb)

    monkeypatch.setattr(FaceTracker, "reset", lambda self: (resets.append(seen[0]), real_reset(self))[1])
    monkeypatch.setattr(FaceTracker, "update", update)
    s = Stylizer("tiny", store=store, size=160, sessions=1, threads=1)  # faces "auto"
    shot = vf.frames(4, (320, 240))
    from clips import synthetic_photo

    other = [synthetic_photo(320, 240, seed=9) // 3] * 2  # another, darker scene: a cut
    stream = FrameStream(s, temporal="default")
    for f in shot:
        stream.stylize(f)
    before = len(resets)
    stream.stylize(shot[-1])
    assert len(resets) == before  # same shot: the tracks carry on
    stream.stylize(other[0])
    assert len(resets) == before + 1
    import av

    src = tmp_path / "cut.mp4"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
        for i, rgb in enumerate(shot + other):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    resets.clear()
    seen[0] = 0
    _run(src, tmp_path / "out.mp4", s, temporal="default")
    assert set(resets) == {0, 4}  # before the first frame (a fresh start) and at the cut, nothing in between


def test_faces_on_run_per_frame(tmp_path, store):
    s = Stylizer("tiny", store=store, size=160, sessions=2, threads=1)  # faces "auto": YuNet on each frame
    src = vf.write_clip(tmp_path / "clip.mp4", 6, audio=None)
    summary = _run(src, tmp_path / "out.mp4", s)
    assert summary.frames == 6 and summary.timings["faces"] > 0


def test_facade_builds_one_session_per_worker(tmp_path, store):
    src = vf.write_clip(tmp_path / "clip.mp4", 6)
    summary = animelite.stylize_video(src, tmp_path / "out.webm", style="tiny", store=store, size=128,
                                      faces="off", temporal="off", workers=2)
    assert summary.frames == 6 and summary.output_size == (128, 96)
    assert probe_video(tmp_path / "out.webm").codec == "vp9"


@pytest.mark.parametrize("mode", ["default", "strong"])
def test_temporal_modes_run_through_the_driver(tmp_path, mode):
    s = Stylizer("hayao-lite", size=128, sessions=2, threads=1, faces="off", precision="fp32")
    src = vf.write_clip(tmp_path / "clip.mp4", 8)
    summary = _run(src, tmp_path / "out.mp4", s, temporal=mode)
    assert summary.temporal == mode and summary.frames == 8 and summary.timings["temporal"] > 0
    assert vf.audio_hashes(tmp_path / "out.mp4") == vf.audio_hashes(src)
