#!/usr/bin/env python3
"""Measure tiled stylization of huge photos: peak memory, wall time, seams, fidelity.

Each measurement runs the real pipeline (``Stylizer.stylize_file``: decode,
tiles, encode, write) in a fresh subprocess, whose peak resident set size
(``ru_maxrss``) is the figure reported, so one run's memory cannot hide in
another's.

    # 12 MP and 24 MP from a real photo, upscaled (the default sizes)
    .venv/bin/python scripts/measure_tiling.py --photo ../shared/photos/scenes/v3_6.jpg
    # choose the stats-pass size: tiles vs one full-frame run on a 1536 image
    .venv/bin/python scripts/measure_tiling.py --photo ../shared/photos/scenes/v3_54.jpg --compare 1536 \\
        --stats-sizes 512 768 1024

Outputs go to ``--out`` (default /tmp/animelite-tiling/): the full-resolution
result of each size and a 1:1 crop centred on a crossing of tile borders (with
a 2x zoom of its middle), for looking at the seams.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MIRROR = REPO.parent / "shared" / "models"


def _store(models: Path | None, mirror: Path):
    from animelite.store import ModelStore

    root = models or Path(tempfile.gettempdir()) / "animelite-tiling" / "models"
    store = ModelStore(root)
    store.pull("hayao", mirror=mirror, progress=False)
    for graph in ("stats", "tile"):  # convert once here, not inside a measured run
        store.runtime_path("hayao", graph=graph)
    return root


# ------------------------------------------------------------------ measured child


def child(args) -> None:
    from animelite import tiling
    from animelite.pipeline import Stylizer

    if args.stats_size:
        tiling.STATS_SIZE = args.stats_size
    t0 = time.perf_counter()
    s = Stylizer("hayao", size=args.size, models_dir=args.models, threads=args.threads, faces="off",
                 tile=args.tile if args.tile is not None else None)
    setup = time.perf_counter() - t0
    import resource

    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = s.stylize_file(args.src, args.dst, overwrite=True)
    wall, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
    print(json.dumps({"peak_rss_mb": tiling.peak_rss_mb(), "wall_s": wall, "cpu_s": cpu, "setup_s": setup,
                      "timings": result.timings, "working_size": result.working_size}))


def run_child(src: Path, dst: Path, size: int, models: Path, threads: int | None, tile, stats_size) -> dict:
    cmd = [sys.executable, __file__, "--child", "--src", str(src), "--dst", str(dst), "--size", str(size),
           "--models", str(models)]
    if threads:
        cmd += ["--threads", str(threads)]
    if tile is not None:
        cmd += ["--tile", str(tile)]
    if stats_size:
        cmd += ["--stats-size", str(stats_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ metrics


def tone_spread(img: np.ndarray, ref: np.ndarray, plan) -> float:
    """Standard deviation across tiles of each tile's mean difference from *ref* (levels): tile-to-tile tone drift."""
    diff = img.astype(np.float32) - ref.astype(np.float32)
    return float(np.std([diff[y0:y1, x0:x1].mean() for y0, y1, x0, x1, _ in plan.tiles()]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def save_crop(img: np.ndarray, plan, out: Path, stem: str, side: int = 512) -> Path:
    """A side x side 1:1 crop centred on the middle-most crossing of two seams, plus a 2x zoom of its centre."""
    rows = [(plan.rows[i][1] + plan.rows[i + 1][0]) // 2 for i in range(len(plan.rows) - 1)] or [plan.height // 2]
    cols = [(plan.cols[i][1] + plan.cols[i + 1][0]) // 2 for i in range(len(plan.cols) - 1)] or [plan.width // 2]
    cy = rows[len(rows) // 2]
    cx = cols[len(cols) // 2]
    y0 = min(max(0, cy - side // 2), plan.height - side)
    x0 = min(max(0, cx - side // 2), plan.width - side)
    crop = img[y0:y0 + side, x0:x0 + side]
    path = out / f"{stem}_crop_x{x0}_y{y0}.png"
    Image.fromarray(crop).save(path)
    q = side // 4
    Image.fromarray(crop[side // 2 - q:side // 2 + q, side // 2 - q:side // 2 + q]).resize(
        (side, side), Image.Resampling.NEAREST).save(out / f"{stem}_crop_zoom2x.png")
    print(f"  crop: {path} (seam crossing at x={cx}, y={cy}, i.e. ({cx - x0}, {cy - y0}) in the crop)")
    return path


# --------------------------------------------------------------------------- modes


def measure_sizes(args, models: Path) -> None:
    from animelite import tiling

    photo = Image.open(args.photo).convert("RGB")
    for spec in args.sizes:
        w, h = (int(v) for v in spec.lower().split("x"))
        src = args.out / f"input_{w}x{h}.jpg"
        if not src.exists():
            photo.resize((w, h), Image.Resampling.LANCZOS).save(src, quality=95)
        dst = args.out / f"hayao_{w}x{h}.png"
        r = run_child(src, dst, max(w, h), models, args.threads, args.tile, args.stats_size)
        tile = tiling.tile_size_for(args.tile, (w, h)) or max(w, h)
        plan = tiling.plan_tiles(w, h, tile, multiple=4)
        t = r["timings"]
        print(f"{w}x{h} ({w * h / 1e6:.1f} MP): {plan.count} tiles of <= {tile}; peak RSS {r['peak_rss_mb']:.0f} MiB; "
              f"wall {r['wall_s']:.1f} s (decode {t.get('decode', 0):.1f}, preprocess {t.get('preprocess', 0):.1f}, "
              f"inference {t.get('inference', 0):.1f}, postprocess {t.get('postprocess', 0):.1f}, "
              f"encode {t.get('encode', 0):.1f}); CPU {r['cpu_s']:.1f} s; session setup {r['setup_s']:.1f} s",
              flush=True)
        out = np.asarray(Image.open(dst).convert("RGB"))
        seams = tiling.seam_profile(out, plan)
        same_in_photo = tiling.seam_profile(np.asarray(Image.open(src).convert("RGB")), plan)
        print(f"  seams: mean |adjacent diff| across {seams['borders']} borders {seams['across_borders']:.3f} vs "
              f"inside tiles {seams['inside_tiles']:.3f} (ratio {seams['ratio']:.3f}; the input photo's own ratio "
              f"at the same places: {same_in_photo['ratio']:.3f})")
        save_crop(out, plan, args.out, f"hayao_{w}x{h}")


def compare(args, models: Path) -> None:
    """Full-frame vs tiled at a size small enough for one run, for each stats-pass size."""
    from animelite import tiling
    from animelite.pipeline import Stylizer, resize_rgb, working_size

    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    work = working_size(photo.shape[1], photo.shape[0], args.compare, 4)
    img = resize_rgb(photo, work)
    s = Stylizer("hayao", size=args.compare, models_dir=models, threads=args.threads, faces="off", tile="off")
    t0 = time.perf_counter()
    full = s.stylize(img).image
    print(f"{Path(args.photo).name} at {work[0]}x{work[1]}: full frame {time.perf_counter() - t0:.1f} s", flush=True)
    tile = args.tile or tiling.DEFAULT_TILE
    plan = tiling.plan_tiles(work[0], work[1], tile, multiple=4)
    print(f"  the photo's own seam ratio at the tile borders: {tiling.seam_profile(img, plan)['ratio']:.3f}")
    # plain tiles through the ordinary generator (each normalised with its own statistics), same blending
    gen = s.generator
    plain = tiling.run_tiles(plan, lambda y0, y1, x0, x1: gen.run(img[y0:y1, x0:x1].astype(np.float32) / 255))
    d = np.abs(plain.astype(np.int16) - full.astype(np.int16))
    print(f"  plain tiles, own statistics: PSNR {psnr(plain, full):.2f} dB, max |diff| {d.max()}, mean {d.mean():.2f}; "
          f"seam ratio {tiling.seam_profile(plain, plan)['ratio']:.3f}; tile-to-tile tone spread "
          f"{tone_spread(plain, full, plan):.2f} levels")
    Image.fromarray(plain).save(args.out / f"compare_{work[0]}_plain_tiles.png")
    Image.fromarray(full).save(args.out / f"compare_{work[0]}_full_frame.png")
    for stats_size in args.stats_sizes:
        tiling.STATS_SIZE = stats_size
        s.tile = tile
        t0 = time.perf_counter()
        tiled = s.stylize(img).image
        Image.fromarray(tiled).save(args.out / f"compare_{work[0]}_stats{stats_size}.png")
        d = np.abs(tiled.astype(np.int16) - full.astype(np.int16))
        shift = tiled.reshape(-1, 3).mean(0) - full.reshape(-1, 3).mean(0)
        seams = tiling.seam_profile(tiled, plan)
        print(f"  stats pass at {stats_size:>5}: {plan.count} tiles of <= {tile}: PSNR {psnr(tiled, full):.2f} dB, "
              f"max |diff| {d.max()}, mean {d.mean():.2f}, mean RGB shift {np.round(shift, 2).tolist()}; "
              f"seam ratio {seams['ratio']:.3f}; tile-to-tile tone spread {tone_spread(tiled, full, plan):.2f} levels; "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", default=str(REPO.parent / "shared" / "photos" / "scenes" / "v3_6.jpg"))
    p.add_argument("--sizes", nargs="+", default=["4240x2832", "6000x4000"], help="WxH to upscale the photo to")
    p.add_argument("--compare", type=int, metavar="SIZE", help="compare tiles with one full-frame run at SIZE")
    p.add_argument("--stats-sizes", type=int, nargs="+", default=[512, 768, 1024])
    p.add_argument("--stats-size", type=int, default=None, help="stats-pass long side (default tiling.STATS_SIZE)")
    p.add_argument("--tile", type=int, default=None, help="tile side (default: the pipeline's auto choice)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", type=Path, default=None, help="models dir (default: a temp dir, from --mirror)")
    p.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "animelite-tiling")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--dst", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    args.out.mkdir(parents=True, exist_ok=True)
    models = _store(args.models, args.mirror)
    if args.compare:
        compare(args, models)
    else:
        measure_sizes(args, models)


if __name__ == "__main__":
    main()
