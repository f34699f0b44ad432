"""Measure ``--size auto`` against fixed sizes: time, fidelity to a 1024-px rendering, face landmarks.

    python scripts/measure_auto_size.py --photos ../shared/photos [--style hayao-lite] [--json out.json]

For every photo (recursive), on one thread, the default style runs at 256,
384, 512, 768, 1024 and ``auto`` (interleaved per photo, so a busy machine
slows every column alike). Fidelity: each output and the 1024 rendering are
brought to one common size (long side 512, Lanczos) and compared (PSNR, SSIM);
"detailed" photos are those whose detail measure is at or above the folder's
median. Face landmarks: YuNet (OpenCV) finds faces in the input at 512 and in
each output at 512; the mean landmark distance of matched faces over their
inter-ocular distance (NME) says how well the features survived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from animelite.imageio import decode_image
from animelite.imageops import resize_rgb, working_size
from animelite.options import IMAGE_SUFFIXES
from animelite.pipeline import Stylizer
from animelite.quality import psnr, ssim
from animelite.sizing import detail

ALL_SIZES = (256, 384, 448, 512, 576, 640, 704, 768, 1024, "auto")
SIZES = ALL_SIZES
COMMON = 512


def common(rgb: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """*rgb* at the common comparison size (that of *like* when given, so every output lines up)."""
    if like is not None:
        return resize_rgb(rgb, (like.shape[1], like.shape[0]))
    h, w = rgb.shape[:2]
    return resize_rgb(rgb, working_size(w, h, COMMON, 1))


def landmarks(detector, rgb):
    from animelite.faces.detect import find_faces

    return find_faces(detector, rgb)


def nme(ref_faces, out_faces) -> list[float]:
    from animelite.faces.detect import iou

    errs = []
    for f in ref_faces:
        best = max(out_faces, key=lambda g: iou(f.box, g.box), default=None)
        if best is None or iou(f.box, best.box) < 0.3:
            errs.append(float("nan"))  # lost
            continue
        errs.append(float(np.linalg.norm(best.landmarks - f.landmarks, axis=1).mean() / max(f.interocular, 1.0)))
    return errs


def main(argv=None) -> int:
    global SIZES
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--style", default="hayao-lite")
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--faces", default="auto", help="face mode for every column (default auto, the product's)")
    p.add_argument("--sizes", default=",".join(map(str, ALL_SIZES)),
                   help="columns to run, comma-separated (1024, the reference, is always run)")
    args = p.parse_args(argv)
    SIZES = tuple(dict.fromkeys([*(s if s == "auto" else int(s) for s in args.sizes.split(",")), 1024]))
    photos = sorted(f for f in args.photos.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit:
        photos = photos[: args.limit]
    quiet = lambda _m: None  # noqa: E731
    stylizers = {s: Stylizer(args.style, size=s, threads=1, faces=args.faces, precision="fp32",
                             models_dir=args.models, notice=quiet) for s in SIZES}
    detector = None
    try:
        from animelite.faces.stage import get_detector
        from animelite.store import ModelStore

        detector = get_detector(ModelStore(args.models))
    except Exception as exc:  # noqa: BLE001 - landmarks are optional
        print(f"no face detector ({exc}); landmark columns skipped", file=sys.stderr)
    rows = []
    for n, path in enumerate(photos, 1):
        rgb = decode_image(path).rgb
        d = detail(rgb)
        ref_in = common(rgb)
        ref_faces = landmarks(detector, ref_in) if detector else []
        outs, times, chosen = {}, {}, None
        for s in SIZES:
            t0 = time.perf_counter()
            r = stylizers[s].stylize(rgb)
            times[s] = time.perf_counter() - t0
            outs[s] = common(r.image, ref_in)
            if s == "auto":
                chosen = r.size_choice.size
        ref = outs[1024].astype(np.float32) / 255
        row = {"photo": str(path.relative_to(args.photos)), "detail": d, "auto": chosen, "faces": len(ref_faces),
               "ms": {str(s): times[s] * 1000 for s in SIZES}, "psnr": {}, "ssim": {}, "nme": {}}
        for s in SIZES:
            o = outs[s].astype(np.float32) / 255
            row["psnr"][str(s)] = psnr(o, ref)
            row["ssim"][str(s)] = ssim(o, ref)
            if ref_faces:
                row["nme"][str(s)] = nme(ref_faces, landmarks(detector, outs[s]))
        rows.append(row)
        print(f"[{n}/{len(photos)}] {row['photo']}: detail {d:.2f} -> auto {chosen}", file=sys.stderr)
    med = statistics.median(r["detail"] for r in rows)
    print(f"\n{len(rows)} photos, style {args.style}, faces {args.faces}, fp32, 1 thread, "
          f"fidelity at long side {COMMON} vs the 1024 rendering; "
          f"detailed = detail >= {med:.2f} (median)\n")
    print("| size | mean ms/photo | PSNR all | SSIM all | PSNR detailed | SSIM detailed | face NME (mean) "
          "| faces lost |")
    print("|---|---|---|---|---|---|---|---|")
    det = [r for r in rows if r["detail"] >= med]
    for s in SIZES:
        k = str(s)
        nmes = [e for r in rows for e in r["nme"].get(k, [])]
        found = [e for e in nmes if e == e]
        fid = ("reference | reference | reference | reference" if k == "1024" else
               f"{statistics.mean(r['psnr'][k] for r in rows):.2f} | "
               f"{statistics.mean(r['ssim'][k] for r in rows):.3f} | "
               f"{statistics.mean(r['psnr'][k] for r in det):.2f} | {statistics.mean(r['ssim'][k] for r in det):.3f}")
        print(f"| {k} | {statistics.mean(r['ms'][k] for r in rows):.0f} | {fid} | "
              f"{statistics.mean(found) if found else float('nan'):.3f} | {len(nmes) - len(found)}/{len(nmes)} |")
    sizes = [r["auto"] for r in rows]
    print("\nauto chose: " + ", ".join(f"{s}: {sizes.count(s)}" for s in sorted(set(sizes))))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
