"""Measure what ``precision="auto"`` may choose: each faster precision against fp32, per style.

For every style and every faster precision this machine runs (ONNX Runtime
INT8; OpenVINO INT8 and, on a CPU with native bf16, bf16), against the fp32
run of the same style on the same backend:

- fidelity: PSNR and SSIM (``animelite.quality``) of the output against the
  fp32 output, on held-out photos (the shipped calibration photos are left
  out) at ``--size``; median and worst;
- speed: the generator alone on one photo's working image, one thread, the
  two precisions run alternately ``--runs`` times; the ratio of the medians.

The INT8 models are the ones ``--precision int8`` makes on first use (the
shipped calibration photos; hayao-lite's ships). The output is a Markdown
table and, with ``--json``, the numbers for the catalog's ``measured`` field
(:class:`animelite.styles.Measured`).

    PYTHONPATH=src python scripts/measure_auto_precision.py --models /tmp/m --mirror ../shared/models \\
        --photos ../shared/photos/scenes hayao-lite hayao shinkai cute
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from animelite import engine
from animelite.imageio import decode_image
from animelite.imageops import resize_rgb, working_size
from animelite.options import IMAGE_SUFFIXES
from animelite.pipeline import Stylizer
from animelite.quality import psnr, ssim
from animelite.quantize import SHIPPED_CALIBRATION
from animelite.store import ModelStore


def held_out(folder: Path, count: int) -> list[Path]:
    shipped = {p.stem for p in SHIPPED_CALIBRATION.glob("*.jpg")}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem not in shipped)
    idx = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx))]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def candidates() -> list[tuple[str, str]]:
    out = [("onnxruntime", "int8")]
    if engine.openvino_available():
        out.append(("openvino", "int8"))
        if engine.cpu_has_bf16():
            out.append(("openvino", "bf16"))
    return out


def speed(a: Stylizer, b: Stylizer, x: np.ndarray, runs: int) -> tuple[float, float]:
    """Median seconds of a.generator and b.generator on x, run alternately (one warm-up each)."""
    a.generator.run(x)
    b.generator.run(x)
    ta, tb = [], []
    for _ in range(runs):
        for gen, times in ((a.generator, ta), (b.generator, tb)):
            t = time.perf_counter()
            gen.run(x)
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("styles", nargs="+")
    ap.add_argument("--models", required=True, help="models directory to use (styles pulled into it)")
    ap.add_argument("--mirror", help="pull the styles from this folder of published files")
    ap.add_argument("--photos", required=True, type=Path)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args()

    store = ModelStore(args.models)
    photos = held_out(args.photos, args.count)
    cpu = cpu_name()
    quiet = {"faces": "off", "notice": lambda _m: None, "store": store, "size": args.size}
    rows, data = [], {}
    for name in args.styles:
        style = store.style(name)
        if args.mirror and not style.embedded:
            store.pull(name, mirror=args.mirror, progress=False)
        for backend, precision in candidates():
            ref = Stylizer(name, backend=backend, precision="fp32", **quiet)
            other = Stylizer(name, backend=backend, precision=precision, **quiet)
            ps, ss = [], []
            for p in photos:
                a = ref.stylize(p).image / 255.0
                b = other.stylize(p).image / 255.0
                ps.append(psnr(a, b))
                ss.append(ssim(a, b))
            img = decode_image(photos[0])
            x = resize_rgb(img.rgb, working_size(img.width, img.height, args.size, style.size_multiple))
            x = x.astype(np.float32) / 255
            ref1 = Stylizer(name, backend=backend, precision="fp32", threads=1, **quiet)
            other1 = Stylizer(name, backend=backend, precision=precision, threads=1, **quiet)
            t_ref, t_other = speed(ref1, other1, x, args.runs)
            row = {"style": name, "backend": backend, "precision": precision,
                   "psnr_median": statistics.median(ps), "psnr_worst": min(ps),
                   "ssim_median": statistics.median(ss), "ssim_worst": min(ss),
                   "fp32_ms": t_ref * 1000, "ms": t_other * 1000, "speedup": t_ref / t_other,
                   "work": f"{x.shape[1]}x{x.shape[0]}", "photos": len(photos), "cpu": cpu}
            rows.append(row)
            data.setdefault(name, []).append(row)
            print(f"{name:11s} {backend:11s} {precision:5s} PSNR {row['psnr_median']:.1f} dB "
                  f"(worst {row['psnr_worst']:.1f}) SSIM {row['ssim_median']:.3f} (worst {row['ssim_worst']:.3f}) "
                  f"fp32 {row['fp32_ms']:.0f} ms -> {row['ms']:.0f} ms ({row['speedup']:.2f}x)", flush=True)
    print(f"\n{len(photos)} held-out photos from {args.photos} at {args.size}; speed: generator at "
          f"{rows[0]['work'] if rows else '?'}-ish, 1 thread, median of {args.runs} alternating runs; CPU: {cpu}\n")
    print("| style | backend | precision | PSNR to fp32 (median / worst) | SSIM (median / worst) "
          "| fp32 ms | ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['backend']} | {r['precision']} | {r['psnr_median']:.1f} / {r['psnr_worst']:.1f} dB "
              f"| {r['ssim_median']:.3f} / {r['ssim_worst']:.3f} | {r['fp32_ms']:.0f} | {r['ms']:.0f} "
              f"| {r['speedup']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
