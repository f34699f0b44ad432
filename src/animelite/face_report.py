"""Measure the face pipeline against the plain whole-photo pass, and draw a before/after grid.

    python -m animelite.face_report --photos DIR --models DIR --out DIR [--style hayao] [--size 512]

For every photo in DIR (a folder of portraits), at the working size:

* **Structure stability.** A face detector (the judge) runs on the input
  (resized to the working size), on the plain stylization and on the face
  pipeline's output. For each face found in the input: is it still found in
  the output (share of faces kept), and how far did its 5 landmarks move
  (mean displacement / inter-ocular distance, NME)? The NME is averaged over
  the faces found in *both* outputs, so the two passes are compared on the same
  faces. Judges: YuNet (also the pipeline's detector) and, independently,
  MTCNN when installed.
* **Seams.** Along the paste masks' border (m = 0.5), the colour difference
  (RGB distance, 0-255) across the whole feathered band (from m ~ 0.95 to m ~
  0.05) against the differences over the same distance just inside and just
  outside it. A ratio near 1 means the border is no more visible than any
  other step of that length; the same points are measured on the plain pass
  (what the picture itself does there) and on the face pipeline without colour
  correction.
* **Cost.** Median milliseconds: face detection per photo and per face, face
  stylization (crop + model) per face, the plain inference per photo.

It writes ``report.md``, ``report.json`` and ``grid.png`` (input | plain |
face pipeline for a few portraits including the group photo, plus zoomed faces)
to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .imageio import decode_image
from .pipeline import Stylizer, resize_rgb
from .store import ModelStore
from .faces.detect import (EYE_L, EYE_R, Face, FaceDetector, FacesUnavailable, MtcnnDetector, YuNetDetector,
                           find_faces, iou)

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
GRID_PICKS = ("obama_and_biden", "data_a_4", "biden", "faces_1", "data_a_0")


# ------------------------------------------------------------------------ stability


def _match(face: Face, candidates: list[Face]) -> Face | None:
    """The candidate for *face*: box IoU >= 0.3 and eye centre within one inter-ocular distance."""
    centre = face.landmarks[[EYE_L, EYE_R]].mean(axis=0)
    best, best_d = None, None
    for c in candidates:
        d = float(np.linalg.norm(c.landmarks[[EYE_L, EYE_R]].mean(axis=0) - centre))
        if iou(face.box, c.box) >= 0.3 and d <= face.interocular and (best_d is None or d < best_d):
            best, best_d = c, d
    return best


def nme(a: Face, b: Face) -> float:
    """Mean landmark displacement from *a* to *b*, over *a*'s inter-ocular distance."""
    return float(np.linalg.norm(b.landmarks - a.landmarks, axis=1).mean() / max(a.interocular, 1e-6))


def judge_faces(det: FaceDetector, rgb: np.ndarray) -> list[Face]:
    """Faces at the working size as it is (no downscaling), small faces included. MTCNN rounds its
    landmarks to whole pixels (up to 0.03 inter-ocular distances on a small face), so it judges a
    2x bicubic enlargement and its landmarks are halved."""
    if det.name == "mtcnn":
        from .faces.detect import require_cv2

        cv2 = require_cv2()
        up = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
        return [f.scaled(0.5) for f in find_faces(det, up, detect_side=max(up.shape[:2]), min_face=16)]
    return find_faces(det, rgb, detect_side=max(rgb.shape[:2]), min_face=8)


# --------------------------------------------------------------------------- seams


def seam_points(mask: np.ndarray, step: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Border points of *mask* (0.45 < m < 0.55), their outward normals and the band half-width there."""
    gy, gx = np.gradient(mask.astype(np.float64))
    g = np.hypot(gx, gy)
    ys, xs = np.nonzero((mask > 0.45) & (mask < 0.55) & (g > 1e-4))
    keep = (ys % step == 0) & (xs % step == 0)
    ys, xs = ys[keep], xs[keep]
    n = -np.stack([gx[ys, xs], gy[ys, xs]], axis=1) / g[ys, xs, None]  # towards lower m: outward
    # smoothstep from 0.05 to 0.95 spans ~0.69 of its width; its slope at 0.5 is 1.5 / width
    half = np.clip(0.5 * 0.69 * 1.5 / g[ys, xs], 1.0, 40.0)
    return np.stack([xs, ys], axis=1).astype(np.float64), n, half


def _sample(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    return img[y, x].astype(np.float64)


def seam_stats(img: np.ndarray, pts: np.ndarray, n: np.ndarray, half: np.ndarray) -> dict[str, float]:
    """Mean RGB distance across the band (p - h n to p + h n), just inside it and just outside it."""
    h = half[:, None]
    h_ = img.shape[0]
    ok = np.all((pts + 3 * h * n >= 0) & (pts + 3 * h * n < [img.shape[1], h_]) & (pts - 3 * h * n >= 0)
                & (pts - 3 * h * n < [img.shape[1], h_]), axis=1)
    pts, n, h = pts[ok], n[ok], h[ok]
    if len(pts) == 0:
        return {"across": float("nan"), "inside": float("nan"), "outside": float("nan"), "points": 0}
    c_in1, c_out1 = _sample(img, pts - h * n), _sample(img, pts + h * n)
    c_in3, c_out3 = _sample(img, pts - 3 * h * n), _sample(img, pts + 3 * h * n)
    dist = lambda a, b: float(np.linalg.norm(a - b, axis=1).mean())  # noqa: E731
    return {"across": dist(c_in1, c_out1), "inside": dist(c_in3, c_in1), "outside": dist(c_out1, c_out3),
            "points": int(len(pts))}


def border_mismatch(img: np.ndarray, plain: np.ndarray, pts: np.ndarray, n: np.ndarray, half: np.ndarray
                    ) -> tuple[float, int]:
    """Low-frequency colour mismatch of the face with its surroundings at the border: the RGB
    distance between the mean colour of *img* and of the plain pass just inside the band
    (p - h n), averaged over 8-point neighbourhoods of the border. 0 = no colour jump."""
    h = half[:, None]
    inner = pts - h * n
    ok = np.all((inner >= 0) & (inner < [img.shape[1], img.shape[0]]), axis=1)
    if not ok.any():
        return 0.0, 0
    d = _sample(img, inner[ok]) - _sample(plain, inner[ok])  # (N, 3) signed
    # average the signed difference along the border in runs of 8 points: a colour jump survives,
    # texture (random sign) cancels
    runs = len(d) // 8
    if runs == 0:
        return float(np.linalg.norm(d.mean(axis=0))), int(len(d))
    m = d[: runs * 8].reshape(runs, 8, 3).mean(axis=1)
    return float(np.linalg.norm(m, axis=1).mean()), int(len(d))


def _ratio(s: dict) -> float:
    return s["across"] / max(1e-6, 0.5 * (s["inside"] + s["outside"]))


# ---------------------------------------------------------------------------- run


def _photos(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"no photos in {folder}")
    return files


def _med(v: list[float]) -> float | None:
    return round(statistics.median(v) * 1000, 1) if v else None


def run(photos: Path, models: Path, out: Path, style: str = "hayao", size: int = 512, face_style: str | None = None,
        grid_picks=GRID_PICKS, log=print, detail: float | None = None) -> dict:
    store = ModelStore(models)
    quiet = lambda _m: None  # noqa: E731
    plain = Stylizer(style, size=size, store=store, faces="off", notice=quiet)
    faced = Stylizer(style, size=size, store=store, faces="auto", face_style=face_style, notice=quiet)
    faced.face_stage.keep_masks = True
    nocc = Stylizer(style, size=size, store=store, faces="auto", face_style=face_style, notice=quiet)
    nocc.face_stage.colour_correct = False
    nocc.face_stage.keep_masks = True
    if detail:
        faced.face_stage.detail = nocc.face_stage.detail = detail

    judges: dict[str, FaceDetector] = {"yunet": YuNetDetector(store.runtime_path("yunet"))}
    try:
        judges["mtcnn"] = MtcnnDetector()
    except FacesUnavailable as exc:
        log(f"(MTCNN judge unavailable: {exc})")

    per_photo, grid_rows = [], []
    def counters():
        return {"in": 0, "plain_kept": 0, "faces_kept": 0, "both": 0, "plain_nme": [], "faces_nme": []}

    # "all": every face the judge finds in the input; "restyled": those the face pipeline gave their own pass
    stab = {j: {"all": counters(), "restyled": counters()} for j in judges}
    seams = {"plain": [], "faces": [], "faces_no_cc": []}
    mismatch = {"faces": [], "faces_no_cc": []}
    cost = {"detect_photo": [], "detect_face": [], "stylize_face": [], "inference": [], "faces_stage": []}
    for path in _photos(photos):
        t0 = time.perf_counter()
        a = plain.stylize(path)
        b = faced.stylize(path)
        c = nocc.stylize(path)
        rgb = decode_image(path).rgb
        inp = resize_rgb(rgb, a.working_size)
        row = {"photo": path.name, "working_size": list(a.working_size), "faces_found": b.faces.found,
               "faces_stylized": b.faces.stylized, "crop_sizes": b.faces.crop_sizes,
               "inference_ms": round(a.timings["inference"] * 1000, 1),
               "faces_stage_ms": round(b.timings.get("faces", 0) * 1000, 1)}
        cost["inference"].append(a.timings["inference"])
        cost["faces_stage"].append(b.timings.get("faces", 0.0))
        cost["detect_photo"].append(b.faces.detect_seconds)
        if b.faces.found:
            cost["detect_face"].append(b.faces.detect_seconds / b.faces.found)
        cost["stylize_face"].extend(b.faces.stylize_seconds)
        k = a.working_size[0] / rgb.shape[1]
        restyled_boxes = [tuple(v * k for v in box) for box in b.faces.boxes]
        for jname, judge in judges.items():
            fin, fa, fb = judge_faces(judge, inp), judge_faces(judge, a.image), judge_faces(judge, b.image)
            for f in fin:
                ma, mb = _match(f, fa), _match(f, fb)
                groups = ["all"] + (["restyled"] if any(iou(f.box, rb) > 0.3 for rb in restyled_boxes) else [])
                for g in groups:
                    s = stab[jname][g]
                    s["in"] += 1
                    s["plain_kept"] += ma is not None
                    s["faces_kept"] += mb is not None
                    if ma is not None and mb is not None:
                        s["both"] += 1
                        s["plain_nme"].append(nme(f, ma))
                        s["faces_nme"].append(nme(f, mb))
            row[f"{jname}_faces_in"] = len(fin)
        if b.faces.mask is not None and b.faces.stylized:
            pts, n, half = seam_points(b.faces.mask)
            seams["plain"].append(seam_stats(a.image, pts, n, half))
            seams["faces"].append(seam_stats(b.image, pts, n, half))
            mismatch["faces"].append(border_mismatch(b.image, a.image, pts, n, half))
            pts2, n2, half2 = seam_points(c.faces.mask)
            seams["faces_no_cc"].append(seam_stats(c.image, pts2, n2, half2))
            mismatch["faces_no_cc"].append(border_mismatch(c.image, a.image, pts2, n2, half2))
        per_photo.append(row)
        log(f"  {path.name}: {b.faces.found} faces, {b.faces.stylized} stylized, "
            f"{time.perf_counter() - t0:.1f} s")
        if path.stem in grid_picks:
            grid_rows.append((grid_picks.index(path.stem), path.stem, inp, a.image, b.image,
                              [tuple(v * a.working_size[0] / rgb.shape[1] for v in box) for box in b.faces.boxes]))

    def pooled(items: list[dict]) -> dict:
        items = [s for s in items if s["points"]]
        if not items:
            return {}
        w = np.array([s["points"] for s in items], np.float64)
        agg = {k: float(np.average([s[k] for s in items], weights=w)) for k in ("across", "inside", "outside")}
        agg["ratio"] = _ratio(agg)
        agg["points"] = int(w.sum())
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in agg.items()}

    stability = {}
    for key, s in ((f"{j} {g}", stab[j][g]) for j in stab for g in ("all", "restyled")):
        stability[key] = {
            "faces_in_input": s["in"],
            "kept_plain": round(s["plain_kept"] / max(1, s["in"]), 3),
            "kept_faces": round(s["faces_kept"] / max(1, s["in"]), 3),
            "faces_in_both": s["both"],
            "nme_plain_mean": round(float(np.mean(s["plain_nme"])), 4) if s["plain_nme"] else None,
            "nme_faces_mean": round(float(np.mean(s["faces_nme"])), 4) if s["faces_nme"] else None,
            "nme_plain_median": round(float(np.median(s["plain_nme"])), 4) if s["plain_nme"] else None,
            "nme_faces_median": round(float(np.median(s["faces_nme"])), 4) if s["faces_nme"] else None,
        }
    report = {
        "style": plain.style.name, "face_style": face_style or plain.style.name, "size": size,
        "photos": len(per_photo), "detector": faced.face_stage.detector.name, "detail": faced.face_stage.detail,
        "stability": stability,
        "seams": {k: pooled(v) for k, v in seams.items()},
        "border_mismatch": {k: round(float(np.average([m for m, _ in v], weights=[w for _, w in v])), 2)
                            if v and sum(w for _, w in v) else None for k, v in mismatch.items()},
        "cost_ms": {
            "detect_per_photo_median": _med(cost["detect_photo"]),
            "detect_per_face_median": _med(cost["detect_face"]),
            "stylize_per_face_median": _med(cost["stylize_face"]),
            "plain_inference_per_photo_median": _med(cost["inference"]),
            "faces_stage_per_photo_median": _med(cost["faces_stage"]),
        },
        "per_photo": per_photo,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(to_markdown(report, photos) + "\n")
    if grid_rows:
        grid_rows.sort(key=lambda r: r[0])
        make_grid([r[1:] for r in grid_rows]).save(out / "grid.png")
    return report


def to_markdown(r: dict, photos: Path) -> str:
    lines = [
        f"Face pipeline vs plain pass: style `{r['style']}` (faces: `{r['face_style']}`), working size {r['size']}, "
        f"{r['photos']} photos from `{photos}`; detector {r['detector']}; face detail {r['detail']}x.",
        "Structure stability: share of the input's faces the judge still finds, and landmark displacement / "
        "inter-ocular distance (NME, over the faces found in both outputs); lower NME is better.",
        "",
        "| judge | faces in input | kept, plain | kept, faces on | NME plain (mean / median) "
        "| NME faces on (mean / median) | faces in both |",
        "|---|---|---|---|---|---|---|",
    ]
    for j, s in r["stability"].items():
        lines.append(f"| {j} | {s['faces_in_input']} | {s['kept_plain']:.0%} | {s['kept_faces']:.0%} | "
                     f"{s['nme_plain_mean']} / {s['nme_plain_median']} | {s['nme_faces_mean']} / "
                     f"{s['nme_faces_median']} | {s['faces_in_both']} |")
    lines += ["", "| seams (RGB distance, 0-255) | across the border | just inside | just outside | ratio |",
              "|---|---|---|---|---|"]
    names = {"faces": "face pipeline", "faces_no_cc": "face pipeline, no colour correction",
             "plain": "plain pass, same points"}
    for k in ("faces", "faces_no_cc", "plain"):
        s = r["seams"].get(k)
        if s:
            lines.append(f"| {names[k]} | {s['across']:.1f} | {s['inside']:.1f} | {s['outside']:.1f} | "
                         f"{s['ratio']:.2f} |")
    bm = r.get("border_mismatch", {})
    lines += ["", f"Colour jump at the border (face vs plain pass just inside the feathered band, RGB distance "
                  f"of local means): {bm.get('faces')} with colour correction, {bm.get('faces_no_cc')} without."]
    c = r["cost_ms"]
    lines += ["", "| cost (median ms) | |", "|---|---|",
              f"| face detection per photo | {c['detect_per_photo_median']} |",
              f"| face detection per face | {c['detect_per_face_median']} |",
              f"| face stylization per face (crop + model) | {c['stylize_per_face_median']} |",
              f"| whole faces stage per photo | {c['faces_stage_per_photo_median']} |",
              f"| plain inference per photo | {c['plain_inference_per_photo_median']} |"]
    return "\n".join(lines)


def make_grid(rows, height: int = 340) -> Image.Image:
    """Rows of input | plain | face pipeline, then zoomed faces (same three) for each row's largest faces."""
    tiles = []
    for name, inp, plain, faced, boxes in rows:
        h, w = inp.shape[:2]
        s = height / h
        size = (max(1, round(w * s)), height)
        ims = [Image.fromarray(x).resize(size, Image.Resampling.LANCZOS) for x in (inp, plain, faced)]
        strip = Image.new("RGB", (size[0] * 3 + 8, height), "white")
        for k, im in enumerate(ims):
            strip.paste(im, (k * (size[0] + 4), 0))
        ImageDraw.Draw(strip).text((4, 4), name, fill="yellow")
        tiles.append(strip)
        # zoom on up to 2 faces (the largest; boxes at the working size)
        for box in boxes[-2:]:
            x, y, fw, fh = box
            cx, cy, r = x + fw / 2, y + fh / 2, max(fw, fh) * 0.9
            crop_box = (int(max(0, cx - r)), int(max(0, cy - r)), int(min(w, cx + r)), int(min(h, cy + r)))
            if crop_box[2] - crop_box[0] < 4 or crop_box[3] - crop_box[1] < 4:
                continue
            zs = [Image.fromarray(x).crop(crop_box).resize((height, height), Image.Resampling.LANCZOS)
                  for x in (inp, plain, faced)]
            z = Image.new("RGB", (height * 3 + 8, height), "white")
            for k, im in enumerate(zs):
                z.paste(im, (k * (height + 4), 0))
            ImageDraw.Draw(z).text((4, 4), f"{name} (zoom)", fill="yellow")
            tiles.append(z)
    width = max(t.width for t in tiles)
    grid = Image.new("RGB", (width, sum(t.height + 6 for t in tiles)), "white")
    y = 0
    for t in tiles:
        grid.paste(t, (0, y))
        y += t.height + 6
    return grid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m animelite.face_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", required=True, type=Path, help="folder of portraits")
    p.add_argument("--models", required=True, type=Path, help="models directory holding the style and yunet")
    p.add_argument("--out", required=True, type=Path, help="where report.md, report.json and grid.png go")
    p.add_argument("--style", default="hayao")
    p.add_argument("--face-style", default=None)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--detail", type=float, default=None, help="face crop resolution vs output (default: the stage's)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    report = run(args.photos, args.models, args.out, args.style, args.size, args.face_style,
                 log=lambda m: print(m, file=sys.stderr, flush=True), detail=args.detail)
    print(to_markdown(report, args.photos))
    print(f"\n({time.perf_counter() - t0:.0f} s; written to {args.out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
