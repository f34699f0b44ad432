#!/usr/bin/env python3
"""Draw the sample picture the web page uses for style previews.

The picture is ours to ship: a procedural landscape (sky, sun, clouds,
mountains, a lake, trees and a small house) drawn with Pillow from a fixed
seed, so the same script always gives the same PNG. No photograph is used.

    .venv/bin/python scripts/make_sample.py            # writes src/animelite/server/static/sample.png
    .venv/bin/python scripts/make_sample.py -o x.png --width 800
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "src" / "animelite" / "server" / "static" / "sample.png"


def _lerp(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def draw(width: int = 512, height: int = 384, seed: int = 7) -> Image.Image:
    rng = random.Random(seed)
    s = width / 512.0
    horizon = int(height * 0.58)

    # sky: vertical gradient, lighter near the horizon
    img = Image.new("RGB", (width, height))
    px = ImageDraw.Draw(img)
    for y in range(horizon + 1):
        px.line([(0, y), (width, y)], fill=_lerp((74, 134, 214), (200, 226, 246), y / horizon))

    # sun with a soft glow
    glow = Image.new("L", (width, height), 0)
    gd = ImageDraw.Draw(glow)
    sx, sy, r = int(width * 0.76), int(height * 0.2), int(26 * s)
    gd.ellipse([sx - 3 * r, sy - 3 * r, sx + 3 * r, sy + 3 * r], fill=110)
    glow = glow.filter(ImageFilter.GaussianBlur(22 * s))
    img = Image.composite(Image.new("RGB", img.size, (255, 244, 214)), img, glow)
    px = ImageDraw.Draw(img)
    px.ellipse([sx - r, sy - r, sx + r, sy + r], fill=(255, 236, 170))

    # clouds: clusters of overlapping ellipses, blurred a little
    clouds = Image.new("L", (width, height), 0)
    cd = ImageDraw.Draw(clouds)
    for cx, cy, n in ((0.18, 0.16, 7), (0.47, 0.1, 6), (0.6, 0.3, 5)):
        for _ in range(n):
            w, h = rng.uniform(30, 60) * s, rng.uniform(14, 26) * s
            x = cx * width + rng.uniform(-45, 45) * s
            y = cy * height + rng.uniform(-8, 8) * s
            cd.ellipse([x - w, y - h, x + w, y + h], fill=230)
    clouds = clouds.filter(ImageFilter.GaussianBlur(3 * s))
    img = Image.composite(Image.new("RGB", img.size, (250, 250, 252)), img, clouds)
    px = ImageDraw.Draw(img)

    # two mountain ranges: far (blue-grey, snow caps) and near (green)
    def ridge(base: float, amp: float, freq: float, phase: float) -> list[tuple[float, float]]:
        pts = [(0.0, float(height))]
        for i in range(0, width + 8, 4):
            t = i / width
            y = base - amp * (0.6 * math.sin(freq * t * 6.28 + phase)
                              + 0.3 * math.sin(freq * 2.3 * t * 6.28 + 1.7 * phase)
                              + 0.1 * math.sin(freq * 5.1 * t * 6.28))
            pts.append((float(i), y))
        pts.append((float(width), float(height)))
        return pts

    far = ridge(horizon - 40 * s, 48 * s, 1.3, 0.4)
    px.polygon(far, fill=(112, 128, 168))
    snow = Image.new("L", (width, height), 0)
    ImageDraw.Draw(snow).polygon(far, fill=255)
    snowline = Image.new("L", (width, height), 0)
    ImageDraw.Draw(snowline).rectangle([0, 0, width, horizon - 62 * s], fill=255)
    img.paste((236, 240, 248), mask=Image.fromarray(np.minimum(np.asarray(snow), np.asarray(snowline))))
    px = ImageDraw.Draw(img)
    px.polygon(ridge(horizon - 6 * s, 26 * s, 2.1, 2.2), fill=(82, 140, 86))

    # lake and meadow
    px.rectangle([0, horizon, width, height], fill=(96, 160, 78))
    lake = [(0, horizon + 18 * s), (width * 0.55, horizon + 10 * s), (width * 0.62, horizon + 40 * s),
            (width * 0.3, horizon + 70 * s), (0, horizon + 64 * s)]
    px.polygon(lake, fill=(70, 130, 190))
    for i in range(9):  # ripples
        y = horizon + (22 + i * 5) * s
        x0 = rng.uniform(0.02, 0.3) * width
        px.line([(x0, y), (x0 + rng.uniform(30, 80) * s, y)], fill=(150, 196, 232), width=max(1, int(s)))

    # a path through the meadow
    px.polygon([(width * 0.7, horizon + 6 * s), (width * 0.74, horizon + 6 * s), (width * 0.6, height),
                (width * 0.44, height)], fill=(214, 190, 140))

    # house: walls, roof, door, window
    hx, hy, hw, hh = width * 0.72, horizon - 8 * s, 64 * s, 44 * s
    px.rectangle([hx, hy, hx + hw, hy + hh], fill=(238, 226, 206), outline=(120, 90, 70))
    px.polygon([(hx - 8 * s, hy), (hx + hw / 2, hy - 34 * s), (hx + hw + 8 * s, hy)], fill=(182, 62, 52))
    px.rectangle([hx + 8 * s, hy + 16 * s, hx + 24 * s, hy + hh], fill=(110, 74, 52))
    px.rectangle([hx + 36 * s, hy + 12 * s, hx + 54 * s, hy + 28 * s], fill=(150, 200, 236), outline=(90, 70, 60))

    # trees: trunks and round crowns in a few greens
    for _ in range(14):
        tx = rng.uniform(0.02, 0.98) * width
        if 0.66 * width < tx < 0.86 * width:
            continue
        ty = horizon + rng.uniform(40, 120) * s if tx > 0.62 * width else horizon + rng.uniform(74, 130) * s
        tr = rng.uniform(14, 26) * s
        px.rectangle([tx - 3 * s, ty, tx + 3 * s, ty + tr * 1.4], fill=(96, 66, 44))
        green = rng.choice([(46, 104, 52), (58, 122, 60), (72, 138, 58), (38, 92, 60)])
        for dx, dy, k in ((0, -tr * 0.3, 1.0), (-tr * 0.5, 0, 0.7), (tr * 0.5, 0, 0.7)):
            px.ellipse([tx + dx - tr * k, ty + dy - tr * k, tx + dx + tr * k, ty + dy + tr * k], fill=green)

    # flowers in the meadow
    for _ in range(60):
        fx, fy = rng.uniform(0, width), rng.uniform(horizon + 70 * s, height)
        px.ellipse([fx - 2 * s, fy - 2 * s, fx + 2 * s, fy + 2 * s],
                   fill=rng.choice([(250, 240, 120), (255, 255, 255), (240, 150, 180)]))

    # a little grain, as a camera would add, so the models have texture to work with
    arr = np.asarray(img).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 3.0, arr.shape[:2])[:, :, None]
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.SMOOTH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    img = draw(args.width, args.width * 3 // 4, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.output, optimize=True)
    print(f"wrote {args.output} ({img.width}x{img.height}, {args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
