"""Training data: photo lists, random crops, and the teacher-output cache.

Photos come from the photos directory (``scenes/`` and ``portraits/``). The
held-out list (``heldout.txt``) is never trained on. Portraits whose provenance
the photos MANIFEST marks "UNCLEAR ... test-only" are not trained on either
(they may be *evaluated* on: that is test use); see ``excluded_for_training``.

The teacher runs once on several randomly rescaled, flipped and mildly
colour-jittered copies of each training photo (whole copies: AnimeGANv2
normalises over the whole image it is given, and the student is judged
against the teacher's output on whole photos). Training crops are cut from
those (input, output) pairs on the fly, so the teacher's cost does not grow
with the number of crops.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

HERE = Path(__file__).resolve().parent
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def read_list(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def heldout(photos: Path) -> list[Path]:
    return [photos / rel for rel in read_list(HERE / "heldout.txt")]


def excluded_for_training(photos: Path) -> set[str]:
    """Relative paths the MANIFEST marks as test-only (unclear provenance)."""
    manifest = photos / "MANIFEST.tsv"
    out: set[str] = set()
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                lic = row.get("license", "")
                if "test-only" in lic or "do not ship" in lic:
                    out.add(row["file"])
    return out


def training_photos(photos: Path) -> list[Path]:
    held = set(read_list(HERE / "heldout.txt"))
    excluded = excluded_for_training(photos)
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in SUFFIXES)
    return [p for p in files if (rel := p.relative_to(photos).as_posix()) not in held and rel not in excluded]


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        from PIL import ImageOps

        return ImageOps.exif_transpose(im).convert("RGB")


def variant(img: Image.Image, rng: np.random.Generator, multiple: int = 4) -> np.ndarray:
    """Rescale so the long side is in [384, 768] (around the 512 photos are stylized at), flip, jitter."""
    w, h = img.size
    s = rng.uniform(384, 768) / max(w, h)
    size = (max(multiple, round(w * s / multiple) * multiple), max(multiple, round(h * s / multiple) * multiple))
    img = img.resize(size, Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enh(img).enhance(rng.uniform(0.9, 1.1))
    return np.asarray(img, dtype=np.uint8)


def teacher_session(teacher_path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(teacher_path), opts, providers=["CPUExecutionProvider"])


def to_input(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]


def build_variants(photos: Path, teacher_path: Path, cache: Path, per_photo: int, seed: int, log,
                   threads: int = 2) -> list[Path]:
    """Run the teacher on ``per_photo`` rescaled/flipped/jittered copies of each training photo.

    Each copy is saved as ``<cache>/v<photo>_<k>.npz`` holding the input (uint8 HxWx3) and the
    teacher's output on the *whole* copy (float16 3xHxW). Training crops are cut from these pairs,
    so a crop's target is exactly the teacher's output for that region of a whole photo, which is
    what the student is measured against. Every copy's random parameters come from one seeded
    generator per (seed, photo, k), so a partial cache resumes with the same result.
    """
    cache.mkdir(parents=True, exist_ok=True)
    files = training_photos(photos)
    sess = None
    out: list[Path] = []
    t0 = time.time()
    for i, path in enumerate(files):
        img = None
        for k in range(per_photo):
            dst = cache / f"v{i:03d}_{k}.npz"
            out.append(dst)
            if dst.is_file():
                continue
            if sess is None:
                sess = teacher_session(teacher_path, threads)
            if img is None:
                img = load_rgb(path)
            rng = np.random.default_rng([seed, i, k])
            x = variant(img, rng)
            y = sess.run(None, {sess.get_inputs()[0].name: to_input(x)})[0][0].astype(np.float16)
            tmp = dst.with_suffix(".tmp.npz")
            np.savez(tmp, x=x, y=y, photo=path.relative_to(photos).as_posix())
            tmp.replace(dst)
        if (i + 1) % 5 == 0:
            log(f"teacher variants: {i + 1}/{len(files)} photos ({time.time() - t0:.0f} s)")
    return out
