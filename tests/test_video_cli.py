"""``animelite stylize`` with videos (in-process): by content, mixed folders, bad clips, options, bench --video."""

from __future__ import annotations

import pytest
import video_files as vf
from helpers import make_store, photo_like
from PIL import Image

from animelite.cli import main
from animelite.video import probe_video


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("videoclistore"))


def run(store, *args):
    return main(["--models", str(store.root), *args])


FAST = ("--style", "tiny", "--size", "128", "--faces", "off", "--temporal", "off")


def test_one_clip_to_one_file(tmp_path, store, capsys):
    src = vf.write_clip(tmp_path / "clip.mp4", 10)
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "anime.mp4"), *FAST, "-v") == 0
    err = capsys.readouterr().err
    info = probe_video(tmp_path / "anime.mp4")
    assert (info.width, info.height, info.codec) == (128, 96, "h264") and info.audio == ["aac"]
    assert "1 stylized" in err and "10 frames at 128x96" in err and "audio copied" in err


def test_video_recognised_by_content_not_name(tmp_path, store):
    src = vf.write_clip(tmp_path / "clip.dat", 6, fmt="mp4", audio=None)
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "out.webm"), *FAST, "-q") == 0
    assert probe_video(tmp_path / "out.webm").codec == "vp9"


def test_mixed_folder_keeps_names_and_a_bad_clip_does_not_stop_the_rest(tmp_path, store, capsys):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    Image.fromarray(photo_like(120, 80, 1)).save(inp / "a.jpg")
    vf.write_clip(inp / "walk.mov", 8)
    vf.write_clip(inp / "sub" / "ride.webm", 8, audio="libopus")
    vf.cut_mid_stream(inp / "broken.mp4")
    vf.jpeg_named_mp4(inp / "fake.mp4")
    before = vf.leftovers(tmp_path)
    code = run(store, "stylize", str(inp), "-o", str(tmp_path / "out"), *FAST, "--video-format", "webm")
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.mp4" in err and "declares 30 frames" in err
    assert "fake.mp4" in err and "is a JPEG image, not a video" in err
    assert "3 stylized" in err and "2 failed" in err
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        ["a.jpg", "sub/ride.webm", "walk.webm"]
    assert probe_video(out / "walk.webm").audio == ["opus"]
    assert vf.leftovers(tmp_path) == before == []


def test_photo_to_video_name_and_video_to_photo_name_are_refused(tmp_path, store, capsys):
    Image.fromarray(photo_like(64, 64, 1)).save(tmp_path / "a.png")
    assert run(store, "stylize", str(tmp_path / "a.png"), "-o", str(tmp_path / "x.mp4"), *FAST) == 1
    assert "is a photo, not a video" in capsys.readouterr().err
    clip = vf.write_clip(tmp_path / "c.mp4", 3, audio=None)
    assert run(store, "stylize", str(clip), "-o", str(tmp_path / "x.png"), *FAST) == 1
    assert "is a video" in capsys.readouterr().err
    assert run(store, "stylize", str(clip), "-o", str(tmp_path / "x.mov"), *FAST) == 2
    assert ".mp4 or .webm for videos" in capsys.readouterr().err
    assert not any(p.name.startswith("x.") for p in tmp_path.iterdir())


@pytest.mark.parametrize("case", ["random_bytes", "moov_missing", "audio_only", "zero_frames", "unknown_codec",
                                  "huge_declared"])
def test_bad_clip_exit_1_names_it_and_leaves_nothing(tmp_path, store, capsys, case):
    ext = {"zero_frames": ".avi", "unknown_codec": ".mkv", "huge_declared": ".avi"}.get(case, ".mp4")
    src = getattr(vf, case)(tmp_path / f"bad{ext}")
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "out.mp4"), *FAST) == 1
    err = capsys.readouterr().err
    assert str(src) in err and "1 failed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_max_duration_and_frames_dir(tmp_path, store, capsys):
    src = vf.write_clip(tmp_path / "clip.mp4", 25)
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "o.mp4"), *FAST, "--max-duration", "0.5") == 1
    assert "longer than the --max-duration" in capsys.readouterr().err
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "o.mp4"), *FAST, "--max-duration", "5",
               "--frames-dir", str(tmp_path / "frames"), "--crf", "30", "--preset", "ultrafast", "-q") == 0
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 25
    assert capsys.readouterr().err == ""  # -q: no bar, no summary


def test_bad_video_options_are_usage_errors(tmp_path, store, capsys):
    src = vf.write_clip(tmp_path / "clip.mp4", 3, audio=None)
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "o.mp4"), *FAST, "--crf", "60") == 2
    assert "--crf" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_existing_video_output_is_skipped(tmp_path, store, capsys):
    src = vf.write_clip(tmp_path / "clip.mp4", 3, audio=None)
    (tmp_path / "o.mp4").write_bytes(b"keep")
    assert run(store, "stylize", str(src), "-o", str(tmp_path / "o.mp4"), *FAST) == 0
    assert "1 skipped" in capsys.readouterr().err and (tmp_path / "o.mp4").read_bytes() == b"keep"


def test_bench_video(tmp_path, store, capsys):
    src = vf.write_clip(tmp_path / "clip.mp4", 8)
    assert run(store, "bench", "--video", str(src), "--style", "tiny", "--sizes", "128", "--threads", "1", "2",
               "--faces", "off", "--temporal", "off") == 0
    out = capsys.readouterr().out
    assert out.count("frames/s") == 2 and "inference" in out and "2 worker(s)" in out
