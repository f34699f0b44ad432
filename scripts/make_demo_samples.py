"""Make the sample photos in ``samples/`` (what ``make demo`` stylizes) from the licensed originals.

Every file is made from ``../shared/photos/scenes`` (see its MANIFEST.tsv),
deterministically, so ``tests/test_demo.py`` can check that this script gives
back the committed files byte for byte:

- JPEG originals are copied unchanged;
- PNG originals are re-encoded as JPEG (quality 88), keeping their size (all
  are under 1024 px on the long side already; anything larger is downscaled);
- ``collage_faces.jpg`` is a collage, not a photo: head-and-shoulders crops of
  the public-domain / CC0 portraits (astronaut, grace_hopper, camera) placed
  small, faces 40 to 76 px wide, on a plain gradient, so the demo has a
  picture with several small faces (no photo we may ship has one).

    python scripts/make_demo_samples.py [--src ../shared/photos/scenes] [--out samples]

``samples/ATTRIBUTION.md`` lists each file's source, licence and changes;
update it when this script changes.
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
QUALITY = 88
LONG_SIDE = 1024

#: sample name -> original file in ../shared/photos/scenes (all public domain, CC0 or CC-BY 2.0)
COPIES = {
    "astronaut.jpg": "astronaut.png",  # public domain (NASA), one large face
    "chelsea.jpg": "chelsea.png",  # CC0, a cat
    "coffee.jpg": "coffee.png",  # CC0, a still life
    "rocket.jpg": "rocket.jpg",  # public domain (SpaceX), an outdoor scene
    "china.jpg": "china.jpg",  # CC-BY 2.0 danielbuechele, the landscape
}

COLLAGE = "collage_faces.jpg"
COLLAGE_SIZE = (1024, 640)
#: the face box (x, y, w, h) of each portrait, from the YuNet detector on the original file
FACE_BOXES = {
    "astronaut.png": (178, 64, 91, 111),
    "grace_hopper.jpg": (177, 123, 178, 212),
    "camera.png": (197, 113, 60, 82),
}
#: (portrait, face width in the collage, centre of the tile in the collage)
TILES = [
    ("astronaut.png", 76, (150, 175)),
    ("grace_hopper.jpg", 68, (420, 165)),
    ("camera.png", 58, (690, 160)),
    ("grace_hopper.jpg", 44, (905, 150)),
    ("camera.png", 40, (135, 470)),
    ("astronaut.png", 52, (370, 465)),
    ("grace_hopper.jpg", 56, (625, 470)),
    ("astronaut.png", 46, (880, 460)),
]
BORDER = 5


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY, optimize=True)  # no EXIF, no ICC: nothing but pixels
    return buf.getvalue()


def _fit(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    if max(img.size) > LONG_SIDE:
        scale = LONG_SIDE / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    return img


def copy_sample(src: Path) -> bytes:
    """One sample from its original: a JPEG within the size limit as is, anything else re-encoded."""
    if src.suffix.lower() in (".jpg", ".jpeg"):
        with Image.open(src) as img:
            if max(img.size) <= LONG_SIDE:
                return src.read_bytes()
    with Image.open(src) as img:
        return _jpeg(_fit(img))


def _background(size: tuple[int, int]) -> Image.Image:
    """A plain vertical gradient, pale blue-grey to warm grey."""
    w, h = size
    t = np.linspace(0.0, 1.0, h, dtype=np.float64)[:, None]
    top, bottom = np.array([196.0, 206.0, 214.0]), np.array([222.0, 214.0, 200.0])
    rows = np.round(top * (1 - t) + bottom * t).astype(np.uint8)  # (h, 3)
    return Image.fromarray(np.repeat(rows[:, None, :], w, axis=1), "RGB")


def _tile(portrait: Image.Image, box: tuple[int, int, int, int], face_width: int) -> Image.Image:
    """A head-and-shoulders crop (2.4 x 3 face widths) around *box*, scaled so the face is *face_width* px."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    cw, ch = 2.4 * w, 3.0 * w
    left, top = cx - cw / 2, cy - 0.4 * ch
    left = min(max(0.0, left), portrait.width - cw)
    top = min(max(0.0, top), portrait.height - ch)
    crop = portrait.crop((round(left), round(top), round(left + cw), round(top + ch)))
    scale = face_width / w
    return crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.Resampling.LANCZOS)


def collage(src_dir: Path) -> bytes:
    canvas = _background(COLLAGE_SIZE)
    portraits = {}
    for name in FACE_BOXES:
        with Image.open(src_dir / name) as img:
            portraits[name] = img.convert("RGB")
    shadow = Image.new("L", COLLAGE_SIZE, 0)
    placed = []
    for name, face_width, (cx, cy) in TILES:
        tile = _tile(portraits[name], FACE_BOXES[name], face_width)
        framed = Image.new("RGB", (tile.width + 2 * BORDER, tile.height + 2 * BORDER), (250, 250, 246))
        framed.paste(tile, (BORDER, BORDER))
        x0, y0 = cx - framed.width // 2, cy - framed.height // 2
        ImageDraw.Draw(shadow).rectangle((x0 + 4, y0 + 6, x0 + framed.width + 3, y0 + framed.height + 5), fill=90)
        placed.append((framed, (x0, y0)))
    shade = Image.new("RGB", COLLAGE_SIZE, (60, 60, 70))
    canvas = Image.composite(shade, canvas, shadow.filter(ImageFilter.GaussianBlur(6)))
    for framed, pos in placed:
        canvas.paste(framed, pos)
    return _jpeg(canvas)


def build(src_dir: Path) -> dict[str, bytes]:
    """Every sample file's name and bytes, made from the originals in *src_dir*."""
    files = {name: copy_sample(src_dir / original) for name, original in COPIES.items()}
    files[COLLAGE] = collage(src_dir)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "photos" / "scenes")
    ap.add_argument("--out", type=Path, default=REPO / "samples")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in build(args.src).items():
        tmp = args.out / f".{name}.tmp"
        tmp.write_bytes(data)
        shutil.move(tmp, args.out / name)
        print(f"{args.out / name}: {len(data) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
