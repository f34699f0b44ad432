"""Video speed: frames/s of the video driver against the per-frame image path, and peak RSS on a long 1080p clip.

For each style (hayao-lite fp32 and int8, hayao from ../shared/models),
working size (360, 480, 720 long side... as --sizes) and workers (1, 2), the
same decoded frames of a generated camera-like clip (tests/clips.py) go
through (a) ``animelite.video.stylize_video`` (decode, prepare, workers,
encode pipelined) and (b) ``Stylizer.stylize`` on each decoded frame array
(faces off, temporal off in both, so the model's work is the same), in the
same run. ``--long`` then measures peak RSS for a generated 1080p clip of
``--long-seconds`` (default 60) in a fresh process. Usage:

    python scripts/measure_video.py                      # the full table (minutes)
    python scripts/measure_video.py --tiny               # a seconds-long check that it runs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import av  # noqa: E402
import numpy as np  # noqa: E402

from video_files import decoded  # noqa: E402

from animelite.pipeline import Stylizer  # noqa: E402
from animelite.store import ModelStore  # noqa: E402
from animelite.video import stylize_video  # noqa: E402


SHARED = ROOT.parent / "shared"  # replaced by --shared


def make_clip(path: Path, frames: int, size: tuple[int, int], fps: int = 25) -> Path:
    from clips import load_photo, pan_frames

    photos = SHARED / "photos" / "scenes"
    photo = load_photo(next(iter(sorted(photos.glob("*.jpg"))), None) if photos.is_dir() else None)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        for i, rgb in enumerate(pan_frames(photo, frames, size)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    return path


def measure(clip: Path, frames: list[np.ndarray], style: str, precision: str, size: int, workers: int,
            store: ModelStore, out: Path, repeats: int = 3) -> dict:
    """Median frames/s of the video path (temporal off and default) and of the image path on the same frames,
    the three interleaved in each of *repeats* rounds after a warm-up, so load changes hit them alike."""
    from concurrent.futures import ThreadPoolExecutor

    stylizer = Stylizer(style, size=size, precision=precision, sessions=workers, threads=1, faces="off",
                        store=store)
    n = len(frames)
    stylize_video(clip, out, stylizer=stylizer, temporal="off", workers=workers, overwrite=True)  # warm-up
    fps = {"off": [], "default": [], "image": []}
    summary = None
    for _ in range(repeats):
        for mode in ("off", "default"):
            summary = stylize_video(clip, out, stylizer=stylizer, temporal=mode, workers=workers, overwrite=True)
            fps[mode].append(summary.frames_per_s)
            if mode == "off":
                ms = summary.ms_per_frame()
        # the image path: the same decoded frames, one Stylizer.stylize each, `workers` in flight
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(stylizer.stylize, frames))
        fps["image"].append(n / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in fps.items()}
    return {"style": style, "precision": stylizer.precision, "size": size, "workers": workers, "frames": n,
            "video_fps": med["off"], "video_default_fps": med["default"], "image_fps": med["image"],
            "ms_per_frame": {k: round(v, 1) for k, v in ms.items()}}


def long_clip_rss(seconds: int, size: int, workers: int) -> dict:
    """Peak RSS of a fresh process stylizing a generated 1080p clip of *seconds*."""
    code = f"""
import sys, json, tempfile
sys.path.insert(0, {str(ROOT / 'src')!r}); sys.path.insert(0, {str(ROOT / 'scripts')!r})
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
from measure_video import make_clip
from animelite.pipeline import Stylizer
from animelite.video import stylize_video
tmp = Path(tempfile.mkdtemp())
clip = make_clip(tmp / "long.mp4", {seconds} * 25, (1920, 1080))
s = Stylizer("hayao-lite", size={size}, sessions={workers}, threads=1, faces="off", precision="fp32")
r = stylize_video(clip, tmp / "out.mp4", stylizer=s, temporal="off", workers={workers})
print(json.dumps({{"frames": r.frames, "peak_rss_mb": round(r.peak_rss_mb), "fps": round(r.frames_per_s, 2),
                  "wall_s": round(r.wall_s, 1)}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a quick check: hayao-lite fp32 at 128, 8 frames")
    ap.add_argument("--sizes", type=int, nargs="+", default=[360, 480, 720])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--long-seconds", type=int, default=60)
    ap.add_argument("--no-long", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="rounds per row; the median is reported")
    ap.add_argument("--slow-frames", type=int, default=8, help="frames for hayao (about 2 s a frame at 720)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                    help="the real weights and photos (default: ../shared beside the checkout)")
    args = ap.parse_args()
    global SHARED
    SHARED = args.shared
    shared = args.shared / "models"
    store = ModelStore(shared if shared.is_dir() else None)
    styles = [("hayao-lite", "fp32"), ("hayao-lite", "int8")]
    if shared.is_dir():
        styles.append(("hayao", "fp32"))
    if args.tiny:
        styles, args.sizes, args.workers, args.frames, args.no_long = [("hayao-lite", "fp32")], [128], [1, 2], 8, True
    rows = []
    with tempfile.TemporaryDirectory(prefix="animelite-measure-video-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.frames, (1280, 720))
        frames = decoded(clip)
        short = make_clip(Path(tmp) / "short.mp4", min(args.slow_frames, args.frames), (1280, 720))
        for style, precision in styles:
            for size in args.sizes:
                for workers in args.workers:
                    few = style == "hayao" and not args.tiny
                    row = measure(short if few else clip, frames[: args.slow_frames] if few else frames, style,
                                  precision, size, workers, store, Path(tmp) / "out.mp4", args.repeats)
                    rows.append(row)
                    print(f"{style:<11}{row['precision']:<6}{size:>5}{workers:>3} worker(s) {row['frames']:>3} "
                          f"frames: video off {row['video_fps']:6.2f} frames/s, default "
                          f"{row['video_default_fps']:6.2f}, image path {row['image_fps']:6.2f} "
                          f"(video off/image {row['video_fps'] / row['image_fps']:.2f}x)  {row['ms_per_frame']}",
                          flush=True)
    if not args.no_long:
        rss = long_clip_rss(args.long_seconds, 512, 2)
        print(f"1080p {args.long_seconds} s clip at 512, 2 workers: {rss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
