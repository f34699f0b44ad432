"""Measure flicker: the warping error of --temporal off/default/strong and of the input (issue 11).

For each clip and style it prints the mean warp error (mean |out_t - warp(out_{t-1})|, the warp following
the input's optical flow, :func:`animelite.video.temporal.warp_error`) in 8-bit levels, its ratio to
"off", the PSNR of each frame to the per-frame ("off") result (median and minimum) and the milliseconds per
frame of the temporal work (statistics pass, cut test, flow), and the warp error again along Farneback's flow
(a cross-check: "strong" blends along DIS flow). Frame pairs across a scene cut are left out. Clips: ../shared/videos/bikes.mp4 (real street
footage, decoded here with PyAV) and a pan/zoom across a ../shared/photos photo made by tests/clips.py (a
synthetic photo when ../shared is absent). Styles: hayao-lite (fp32) and hayao when ../shared/models has it.

    python scripts/measure_flicker.py [--shared ../shared] [--frames 60] [--size 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from animelite.imageops import resize_rgb, to_uint8, working_size  # noqa: E402
from animelite.pipeline import Stylizer  # noqa: E402
from animelite.video.temporal import BLEND, EMA_HISTORY, V2_STATS_SIZE, CutDetector, Temporal, warp_error  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def read_clip(path: Path, frames: int) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) >= frames:
                break
    return out


def pan_clip(shared: Path | None, frames: int) -> list[np.ndarray]:
    from clips import load_photo, pan_frames

    photo = None
    if shared is not None and (shared / "photos" / "scenes").is_dir():
        photo = sorted((shared / "photos" / "scenes").glob("*.jpg"))[0]
    return list(pan_frames(load_photo(photo), frames, (640, 360)))


def run_mode(stylizer: Stylizer, mode: str, frames: list[np.ndarray], **kw) -> tuple[list[np.ndarray], float]:
    temporal = Temporal(stylizer, mode, notice=lambda text: print("  notice:", text), **kw)
    outs = []
    for x in frames:
        ctx = temporal.prepare(x)
        outs.append(to_uint8(temporal.finish(x, temporal.run(x, ctx), ctx)))
    return outs, temporal.timings["temporal"] / len(frames) * 1000


def shot_pairs(frames: list[np.ndarray]) -> list[int]:
    """Indices i of the frame pairs (i - 1, i) within one shot: a pair across a scene cut (the input's, by the
    same test the temporal code uses) is no flicker, and its "flow" is meaningless."""
    cuts = CutDetector()
    return [i for i, f in enumerate(frames) if not cuts(f)]


def flicker(outs: list[np.ndarray], ins: list[np.ndarray], pairs: list[int], flow: str = "dis") -> float:
    return float(np.mean([warp_error(outs[i - 1], outs[i], ins[i - 1], ins[i], flow=flow) for i in pairs]))


def measure(stylizer: Stylizer, name: str, clip: list[np.ndarray], size: int, args) -> None:
    h, w = clip[0].shape[:2]
    work = working_size(w, h, size, stylizer.style.size_multiple)
    frames = [resize_rgb(f, work) for f in clip]
    pairs = shot_pairs(frames)
    print(f"\n{stylizer.style.name} ({stylizer.precision}) on {name}: {len(frames)} frames at {work[0]}x{work[1]}, "
          f"{len(frames) - 1 - len(pairs)} scene cut(s) left out of the warp error")
    print(f"  {'':8} {'warp err':>9} {'x off':>6} {'PSNR med':>9} {'PSNR min':>9} {'ms/frame':>9}"
          f" {'Farneback':>10} {'x off':>6}")
    off, _ = run_mode(stylizer, "off", frames)
    base, base_fb = flicker(off, frames, pairs), flicker(off, frames, pairs, "farneback")
    print(f"  {'input':8} {flicker(frames, frames, pairs):9.2f} {'':>6} {'':>9} {'':>9} {'':>9}"
          f" {flicker(frames, frames, pairs, 'farneback'):10.2f}")
    print(f"  {'off':8} {base:9.2f} {1.0:6.2f} {'':>9} {'':>9} {'':>9} {base_fb:10.2f} {1.0:6.2f}")
    kw = dict(ema=args.ema, blend=args.blend, stats_size=args.stats_size)
    for mode in ("default", "strong"):
        outs, ms = run_mode(stylizer, mode, frames, **kw)
        err = flicker(outs, frames, pairs)
        fb = flicker(outs, frames, pairs, "farneback")
        p = [psnr(a, b) for a, b in zip(outs, off)]
        print(f"  {mode:8} {err:9.2f} {err / base:6.2f} {np.median(p):9.1f} {min(p):9.1f} {ms:9.1f}"
              f" {fb:10.2f} {fb / base_fb:6.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared folder (../shared)")
    ap.add_argument("--frames", type=int, default=60, help="frames of each clip (default 60)")
    ap.add_argument("--size", type=int, default=512, help="working long side (default 512)")
    ap.add_argument("--styles", default="hayao-lite,hayao")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ema", type=float, default=EMA_HISTORY)
    ap.add_argument("--blend", type=float, default=BLEND)
    ap.add_argument("--stats-size", type=int, default=V2_STATS_SIZE)
    ap.add_argument("--clips", default="bikes,pan")
    args = ap.parse_args(argv)
    shared = args.shared if (args.shared / "models").is_dir() else None
    clips = {}
    if "bikes" in args.clips and shared is not None and (shared / "videos" / "bikes.mp4").is_file():
        clips["bikes.mp4"] = read_clip(shared / "videos" / "bikes.mp4", args.frames)
    if "pan" in args.clips:
        clips["pan" + ("" if shared else " (synthetic photo)")] = pan_clip(shared, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        for style in args.styles.split(","):
            kw = dict(size=args.size, faces="off", precision="fp32", threads=args.threads, notice=lambda t: None)
            if style != "hayao-lite":
                if shared is None:
                    print(f"\n{style}: skipped (no ../shared/models)")
                    continue
                from animelite.store import ModelStore

                store = ModelStore(Path(tmp) / "models")
                store.pull(style, mirror=shared / "models", progress=False)
                kw["store"] = store
            stylizer = Stylizer(style, **kw)
            for name, clip in clips.items():
                start = time.perf_counter()
                measure(stylizer, name, clip, args.size, args)
                print(f"  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
