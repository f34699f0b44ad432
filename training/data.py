"""Training data: photo lists, random crops, and the teacher-output cache.

Photos come from the photos directory (``scenes/`` and ``portraits/``). The
held-out list (``heldout.txt``) is never trained on. Portraits whose provenance
the photos MANIFEST marks "UNCLEAR ... test-only" are not trained on either
(they may be *evaluated* on: that is test use); see ``excluded_for_training``.

Each training sample is a crop of a randomly rescaled, flipped and mildly
colour-jittered photo, and the teacher's output *on that crop* (AnimeGANv2
normalises over the whole image it is given, so the target must be computed on
exactly what the student sees). Samples are made once and cached as .npy.
"""

from __future__ import annotations

import csv
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


def random_crop(img: Image.Image, crop: int, rng: np.random.Generator) -> np.ndarray:
    """Rescale so the long side is in [384, 800] (the scale photos are stylized at), flip, jitter, crop."""
    w, h = img.size
    long_side = rng.uniform(384, 800)
    s = max(long_side / max(w, h), (crop + 2) / min(w, h))
    img = img.resize((max(crop, round(w * s)), max(crop, round(h * s))), Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enh(img).enhance(rng.uniform(0.9, 1.1))
    w, h = img.size
    x0, y0 = rng.integers(0, w - crop + 1), rng.integers(0, h - crop + 1)
    return np.asarray(img.crop((x0, y0, x0 + crop, y0 + crop)), dtype=np.uint8)


def teacher_session(teacher_path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(teacher_path), opts, providers=["CPUExecutionProvider"])


def to_input(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]


def build_cache(photos: Path, teacher_path: Path, cache: Path, count: int, crop: int, seed: int, log) -> None:
    """Write ``count`` (input uint8, teacher float16) crop pairs to ``cache`` (resumes a partial cache)."""
    cache.mkdir(parents=True, exist_ok=True)
    xs_path, ys_path = cache / f"x_{crop}.npy", cache / f"y_{crop}.npy"
    if xs_path.is_file() and ys_path.is_file():
        xs = np.load(xs_path, mmap_mode="r")
        if len(xs) >= count:
            return
    files = training_photos(photos)
    images = [load_rgb(p) for p in files]
    sess = teacher_session(teacher_path)
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    xs = np.zeros((count, crop, crop, 3), np.uint8)
    ys = np.zeros((count, 3, crop, crop), np.float16)
    part = cache / f"partial_{crop}.npz"
    start = 0
    if part.is_file():
        saved = np.load(part)
        start = int(saved["n"])
        xs[:start], ys[:start] = saved["x"][:start], saved["y"][:start]
        rng.bit_generator.state = eval(str(saved["rng"]))  # noqa: S307 - our own file
    for i in range(start, count):
        if i % 50 == 0 and i > start:
            np.savez(part, x=xs, y=ys, n=i, rng=str(rng.bit_generator.state))
            log(f"teacher cache {i}/{count}")
        img = images[int(rng.integers(len(images)))]
        xs[i] = random_crop(img, crop, rng)
        ys[i] = sess.run(None, {name: to_input(xs[i])})[0][0].astype(np.float16)
    np.save(xs_path, xs)
    np.save(ys_path, ys)
    part.unlink(missing_ok=True)
    log(f"teacher cache {count}/{count} done")
