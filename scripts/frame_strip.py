"""Draw a before/after frame strip of a clip: input, --temporal off, default and strong, one row each.

Columns are frames of the clip (every --step frames from --start); the rows below the pictures show what
flickers: each mode's |out_t - warp(out_{t-1})| (the warp following the input's optical flow, the measure of
scripts/measure_flicker.py), amplified --gain times, so a steadier mode shows a darker row. The picture is
made from the user's own clip, so write it outside the repository (e.g. /work/notes/strip.png); it is never
committed.

    python scripts/frame_strip.py --out /work/notes/strip.png [--clip ../shared/videos/bikes.mp4]
           [--style hayao-lite] [--size 512] [--start 20] [--step 6] [--columns 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from video_files import decoded  # noqa: E402

from animelite.atomic import atomic_write  # noqa: E402
from animelite.imageops import resize_rgb, to_uint8, working_size  # noqa: E402
from animelite.pipeline import Stylizer  # noqa: E402
from animelite.video.temporal import Temporal, flow_grid  # noqa: E402

MODES = ("off", "default", "strong")
LABEL_W = 96


def stylize(stylizer: Stylizer, mode: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    temporal = Temporal(stylizer, mode, notice=lambda text: print("notice:", text))
    out = []
    for x in frames:
        ctx = temporal.prepare(x)
        out.append(to_uint8(temporal.finish(x, temporal.run(x, ctx), ctx)))
    return out


def flicker_map(prev_out, out, prev_in, cur_in, gain: float) -> np.ndarray:
    """|out - warp(prev_out)| amplified, grey, black where the flow leaves the frame."""
    import cv2

    h, w = out.shape[:2]
    mx, my = flow_grid(prev_in, cur_in, (h, w))
    warped = cv2.remap(prev_out.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = np.abs(out.astype(np.float32) - warped).mean(-1) * gain
    diff[(mx < 0) | (mx > w - 1) | (my < 0) | (my > h - 1)] = 0
    return np.repeat(diff.clip(0, 255).astype(np.uint8)[..., None], 3, -1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write (outside the repository)")
    ap.add_argument("--clip", type=Path, default=REPO.parent / "shared" / "videos" / "bikes.mp4")
    ap.add_argument("--style", default="hayao-lite")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--start", type=int, default=20)
    ap.add_argument("--step", type=int, default=6)
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--gain", type=float, default=8.0, help="amplification of the flicker rows (default 8)")
    args = ap.parse_args(argv)
    if REPO in args.out.resolve().parents:
        raise SystemExit(f"{args.out}: inside the repository; the strip is made from a clip, write it elsewhere")
    picks = [args.start + k * args.step for k in range(args.columns)]
    clip = decoded(args.clip, picks[-1] + 1)
    if len(clip) < picks[-1] + 1:
        raise SystemExit(f"{args.clip}: only {len(clip)} frames, {picks[-1] + 1} needed")
    stylizer = Stylizer(args.style, size=args.size, faces="off", precision="fp32", notice=lambda t: None)
    h, w = clip[0].shape[:2]
    work = working_size(w, h, args.size, stylizer.style.size_multiple)
    frames = [resize_rgb(f, work) for f in clip]
    outs = {mode: stylize(stylizer, mode, frames) for mode in MODES}
    rows = [("input", [frames[i] for i in picks])]
    rows += [(mode, [outs[mode][i] for i in picks]) for mode in MODES]
    rows += [(f"{mode}\nflicker x{args.gain:g}",
              [flicker_map(outs[mode][i - 1], outs[mode][i], frames[i - 1], frames[i], args.gain) for i in picks])
             for mode in MODES]
    fw, fh = work
    sheet = Image.new("RGB", (LABEL_W + len(picks) * (fw + 4), 18 + len(rows) * (fh + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, i in enumerate(picks):
        draw.text((LABEL_W + c * (fw + 4) + 4, 3), f"frame {i}", fill="black")
    for r, (label, images) in enumerate(rows):
        y = 18 + r * (fh + 4)
        draw.multiline_text((6, y + fh // 2 - 10), label, fill="black")
        for c, img in enumerate(images):
            sheet.paste(Image.fromarray(img), (LABEL_W + c * (fw + 4), y))

    def save(f):
        sheet.save(f, format="PNG", optimize=True)

    atomic_write(args.out, save)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}): frames {picks} of {args.clip.name}, {args.style} at "
          f"{fw}x{fh}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
