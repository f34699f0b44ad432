"""Measure flicker: the warping error of --temporal off/default/strong and of the input (issue 11).

For each clip and style it prints the mean warp error (mean |out_t - warp(out_{t-1})|, the warp following
the input's optical flow, :func:`animelite.video.temporal.warp_error`) in 8-bit levels, its ratio to
"off", the PSNR of each frame to the per-frame ("off") result (median and minimum), the milliseconds per
frame of the temporal work (statistics pass, cut test, flow blend) next to the plain model's, and the warp
error again along Farneback's flow (a cross-check: "default" and "strong" blend along DIS flow). Frame pairs
across a scene cut are left out. Clips: ../shared/videos/bikes.mp4 (real street footage, decoded here with
PyAV) and a pan/zoom across a ../shared/photos photo made by tests/clips.py (a synthetic photo when
../shared is absent). Styles: hayao-lite and hayao when ../shared/models has it; --precision fp32,int8.

``--sweep`` tunes "default" instead: first the statistics' moving average (--sweep-ema) in both of
hayao-lite's spaces (the 128 statistics or the 960 FiLM values), without and with the default flow blend;
then the flow blend (--sweep-presets x --sweep-sizes x --sweep-blends) on the outputs of the chosen
statistics. The model runs once per statistics setting; the flow blends re-run on its outputs.

    python scripts/measure_flicker.py [--shared ../shared] [--frames 60] [--size 512] [--precision fp32,int8]
    python scripts/measure_flicker.py --sweep --styles hayao-lite [--frames 40]
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

from animelite import quality  # noqa: E402
from animelite.imageops import resize_rgb, to_uint8, working_size  # noqa: E402
from animelite.pipeline import Stylizer  # noqa: E402
from video_files import decoded  # noqa: E402

from animelite.video.temporal import (EMA_HISTORY, FLOW, LITE_SPACE, V2_STATS_SIZE, CutDetector,  # noqa: E402
                                      FlowBlender, Temporal, flow_grid, warp_error)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 frames (animelite.quality works on [0, 1])."""
    return quality.psnr(a / 255.0, b / 255.0)


def pan_clip(shared: Path | None, frames: int) -> list[np.ndarray]:
    from clips import load_photo, pan_frames

    photo = None
    if shared is not None and (shared / "photos" / "scenes").is_dir():
        photo = sorted((shared / "photos" / "scenes").glob("*.jpg"))[0]
    return list(pan_frames(load_photo(photo), frames, (640, 360)))


class Clip:
    """Working-size frames of one clip, its in-shot pairs and the measure's flow maps (computed once)."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames
        cuts = CutDetector()  # a pair across a scene cut is no flicker, and its "flow" is meaningless
        self.pairs = [i for i, f in enumerate(frames) if not cuts(f)]
        h, w = frames[0].shape[:2]
        self._grids = {m: {i: flow_grid(frames[i - 1], frames[i], (h, w), m) for i in self.pairs}
                       for m in ("dis", "farneback")}

    def flicker(self, outs: list[np.ndarray], flow: str = "dis") -> float:
        f = self.frames
        return float(np.mean([warp_error(outs[i - 1], outs[i], f[i - 1], f[i], grid=self._grids[flow][i])
                              for i in self.pairs]))


def run_mode(stylizer: Stylizer, mode: str, frames: list[np.ndarray], **kw):
    """(outputs uint8, temporal ms/frame, model ms/frame, per-frame contexts, outputs before the flow blend)."""
    temporal = Temporal(stylizer, mode, notice=lambda text: print("  notice:", text), **kw)
    outs, raw, ctxs, model = [], [], [], 0.0
    for x in frames:
        ctx = temporal.prepare(x)
        t0 = time.perf_counter()
        y = temporal.run(x, ctx)
        model += time.perf_counter() - t0
        raw.append(y)
        ctxs.append(ctx)
        outs.append(to_uint8(temporal.finish(x, y, ctx)))
    n = len(frames)
    return outs, temporal.timings["temporal"] / n * 1000, model / n * 1000, ctxs, raw


def blend_only(frames, raw, ctxs, preset: str, size: int, blend: float):
    """The flow blend (preset, flow size, weight) re-run on the model outputs *raw*: (outputs, ms/frame)."""
    fb = FlowBlender(blend, size, preset)
    outs, spent = [], 0.0
    for x, y, ctx in zip(frames, raw, ctxs):
        t0 = time.perf_counter()
        out = fb(x, y, ctx.cut)
        spent += time.perf_counter() - t0
        outs.append(to_uint8(out))
    return outs, spent / len(frames) * 1000


def working_frames(stylizer: Stylizer, clip: list[np.ndarray], size: int) -> list[np.ndarray]:
    h, w = clip[0].shape[:2]
    work = working_size(w, h, size, stylizer.style.size_multiple)
    return [resize_rgb(f, work) for f in clip]


def header(stylizer, name, clip: Clip) -> None:
    h, w = clip.frames[0].shape[:2]
    print(f"\n{stylizer.style.name} ({stylizer.precision}) on {name}: {len(clip.frames)} frames at {w}x{h}, "
          f"{len(clip.frames) - 1 - len(clip.pairs)} scene cut(s) left out of the warp error")


def measure(stylizer: Stylizer, name: str, clip: Clip, args) -> None:
    header(stylizer, name, clip)
    print(f"  {'':8} {'warp err':>9} {'x off':>6} {'PSNR med':>9} {'PSNR min':>9} {'ms/frame':>9}"
          f" {'Farneback':>10} {'x off':>6}")
    off, _, model_ms, _, _ = run_mode(stylizer, "off", clip.frames)
    base, base_fb = clip.flicker(off), clip.flicker(off, "farneback")
    print(f"  {'input':8} {clip.flicker(clip.frames):9.2f} {'':>6} {'':>9} {'':>9} {'':>9}"
          f" {clip.flicker(clip.frames, 'farneback'):10.2f}")
    print(f"  {'off':8} {base:9.2f} {1.0:6.2f} {'':>9} {'':>9} {model_ms:9.1f} {base_fb:10.2f} {1.0:6.2f}"
          "   <- ms: the model per frame")
    for mode in ("default", "strong"):
        outs, ms, _, _, _ = run_mode(stylizer, mode, clip.frames, ema=args.ema, stats_size=args.stats_size,
                                     space=args.space)
        err, fb = clip.flicker(outs), clip.flicker(outs, "farneback")
        p = [psnr(a, b) for a, b in zip(outs, off)]
        print(f"  {mode:8} {err:9.2f} {err / base:6.2f} {np.median(p):9.1f} {min(p):9.1f} {ms:9.1f}"
              f" {fb:10.2f} {fb / base_fb:6.2f}")


def sweep(stylizer: Stylizer, name: str, clip: Clip, args) -> None:
    header(stylizer, name, clip)
    off, _, model_ms, _, _ = run_mode(stylizer, "off", clip.frames)
    base, base_fb = clip.flicker(off), clip.flicker(off, "farneback")
    print(f"  off: warp error {base:.2f} (Farneback {base_fb:.2f}), model {model_ms:.0f} ms/frame")
    row = "  {:28} {:>6.2f} {:>6.2f} {:>8.1f} {:>8.1f} {:>7.1f}"
    print(f"  {'setting':28} {'x off':>6} {'x FB':>6} {'PSNR med':>8} {'PSNR min':>8} {'ms':>7}")

    def report(label, outs, ms):
        p = [psnr(a, b) for a, b in zip(outs, off)]
        print(row.format(label, clip.flicker(outs) / base, clip.flicker(outs, "farneback") / base_fb,
                         float(np.median(p)), min(p), ms))

    preset, size, blend = FLOW["default"]
    spaces = ("stats", "film") if stylizer.style.family == "v2-lite" else (args.space,)
    cache = {}
    for space in spaces:
        for ema in args.sweep_ema:
            outs, ms, _, ctxs, raw = run_mode(stylizer, "default", clip.frames, ema=ema, space=space, blend=0.0,
                                              stats_size=args.stats_size)
            cache[(space, ema)] = (ctxs, raw)
            report(f"{space} ema {ema} no flow", outs, ms)
            outs, fms = blend_only(clip.frames, raw, ctxs, preset, size, blend)
            report(f"{space} ema {ema} + {preset} {size} {blend}", outs, ms + fms)
    ctxs, raw = cache.get((args.space, args.ema)) or next(iter(cache.values()))
    stats_ms = run_mode(stylizer, "default", clip.frames[:8], ema=args.ema, space=args.space, blend=0.0)[1]
    for p_ in args.sweep_presets:
        for s_ in args.sweep_sizes:
            for b_ in args.sweep_blends:
                outs, fms = blend_only(clip.frames, raw, ctxs, p_, s_, b_)
                report(f"{args.space} {args.ema} + {p_} {s_} {b_}", outs, stats_ms + fms)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared folder (../shared)")
    ap.add_argument("--frames", type=int, default=60, help="frames of each clip (default 60)")
    ap.add_argument("--size", type=int, default=512, help="working long side (default 512)")
    ap.add_argument("--styles", default="hayao-lite,hayao")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,int8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ema", type=float, default=EMA_HISTORY)
    ap.add_argument("--space", default=LITE_SPACE, choices=("stats", "film"))
    ap.add_argument("--stats-size", type=int, default=V2_STATS_SIZE)
    ap.add_argument("--clips", default="bikes,pan")
    ap.add_argument("--sweep", action="store_true", help="tune 'default' (EMA, space, flow blend) instead")
    ap.add_argument("--sweep-ema", type=floats, default=[0.5, 0.7, 0.85])
    ap.add_argument("--sweep-presets", type=lambda t: t.split(","), default=["ultrafast", "fast"])
    ap.add_argument("--sweep-sizes", type=lambda t: [int(v) for v in t.split(",")], default=[256, 320, 384])
    ap.add_argument("--sweep-blends", type=floats, default=[0.4, 0.5, 0.6])
    args = ap.parse_args(argv)
    shared = args.shared if (args.shared / "models").is_dir() else None
    clips = {}
    if "bikes" in args.clips and shared is not None and (shared / "videos" / "bikes.mp4").is_file():
        clips["bikes.mp4"] = decoded(shared / "videos" / "bikes.mp4", args.frames)
    if "pan" in args.clips:
        clips["pan" + ("" if shared else " (synthetic photo)")] = pan_clip(shared, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        for style in args.styles.split(","):
            for precision in args.precision.split(","):
                kw = dict(size=args.size, faces="off", precision=precision, threads=args.threads,
                          notice=lambda t: None)
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
                    work = Clip(working_frames(stylizer, clip, args.size))
                    (sweep if args.sweep else measure)(stylizer, name, work, args)
                    print(f"  ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
