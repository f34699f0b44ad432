"""Measure hayao-lite against its teacher: fidelity on the held-out photos, a side-by-side grid,
FLOPs, size, and one-thread speed against the PyTorch reference of the full teacher.

    .venv/bin/python training/evaluate.py --teacher-models ../shared/models --photos ../shared/photos \
        [--student src/animelite/models/hayao_lite.onnx] [--int8 OUT.onnx] [--size 512] \
        [--grid /tmp/animelite-lite/grid.jpg] [--speed-runs 5]

Fidelity: each held-out photo (training/heldout.txt) is resized to long side
--size (sides multiples of 4, as the pipeline does) and run through the teacher
(Hayao fp32 ONNX) and the student; PSNR and SSIM (animelite.quality) of the
student's output against the teacher's. With --int8 the student is also
quantized (animelite.quantize.quantize_model, calibrated on training photos,
never held-out ones) and measured the same way.

Speed: --speed-runs square crops (held-out photos, centre-cropped and resized to
--size x --size), one thread each, interleaved: PyTorch teacher
(animelite.torch_reference, the `bench --compare` reference), ONNX Runtime
teacher and ONNX Runtime student; medians, speed-up = median per-photo ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
from flops import conv_macs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STUDENT = REPO / "src" / "animelite" / "models" / "hayao_lite.onnx"


def generator(path: Path, threads: int = 1):
    from animelite.engine import Generator, ModelSpec

    return Generator(ModelSpec(path=Path(path), layout="NCHW", value_range=(-1.0, 1.0), size_multiple=4), threads)


def prepare(path: Path, size: int) -> np.ndarray:
    from animelite.imageio import decode_image
    from animelite.pipeline import resize_rgb, working_size

    rgb = decode_image(path).rgb
    h, w = rgb.shape[:2]
    return resize_rgb(rgb, working_size(w, h, size, 4))


def to_u8(x: np.ndarray) -> np.ndarray:
    return (x * 255 + 0.5).clip(0, 255).astype(np.uint8)


def fidelity(teacher, students: dict, photos: list[Path], size: int):
    from animelite.quality import psnr, ssim

    rows, images = [], []
    for p in photos:
        rgb = prepare(p, size)
        x = rgb.astype(np.float32) / 255
        t = to_u8(teacher.run(x))
        outs = {k: to_u8(g.run(x)) for k, g in students.items()}
        row = {"photo": p.relative_to(p.parent.parent).as_posix()}
        for k, o in outs.items():
            row[k] = (psnr(o / 255.0, t / 255.0), ssim(o / 255.0, t / 255.0))
        rows.append(row)
        images.append((rgb, t, outs))
    return rows, images


def save_grid(images, path: Path, cell: int = 384) -> None:
    """One row per photo: input | teacher | student(s), each scaled to `cell` pixels high."""
    tiles = []
    for rgb, t, outs in images:
        h, w = rgb.shape[:2]
        cw = round(w * cell / h)
        row = [Image.fromarray(a).resize((cw, cell), Image.Resampling.LANCZOS) for a in [rgb, t, *outs.values()]]
        tiles.append(row)
    labels = ["input", "teacher (hayao)", *images[0][2].keys()]
    width = max(sum(im.width for im in row) for row in tiles)
    grid = Image.new("RGB", (width, 20 + cell * len(tiles)), "white")
    draw = ImageDraw.Draw(grid)
    x = 0
    for i, label in enumerate(labels):
        draw.text((x + 4, 4), label, fill="black")
        x += tiles[0][i].width
    for r, row in enumerate(tiles):
        x = 0
        for im in row:
            grid.paste(im, (x, 20 + r * cell))
            x += im.width
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=92)


def speed(store, teacher_path: Path, student_paths: dict, photos: list[Path], size: int, runs: int):
    from animelite.bench import _square_photos, _torch_reference

    squares = _square_photos(photos[:runs], size)
    torch_run, why = _torch_reference(store, "hayao", 1)
    runners = {}
    if torch_run is not None:
        runners["teacher pytorch fp32"] = lambda rgb: torch_run(rgb)
    else:
        print(f"note: {why}")
    ort_t = generator(teacher_path)
    runners["teacher onnxruntime fp32"] = lambda rgb: ort_t.run(rgb.astype(np.float32) / 255)
    for k, p in student_paths.items():
        g = generator(p)
        runners[f"{k} onnxruntime"] = lambda rgb, g=g: g.run(rgb.astype(np.float32) / 255)
    for run in runners.values():
        run(squares[0])
    times = {k: [] for k in runners}
    for rgb in squares:
        for k, run in runners.items():
            t0 = time.perf_counter()
            run(rgb)
            times[k].append(time.perf_counter() - t0)
    ref = times.get("teacher pytorch fp32")
    out = []
    for k, ts in times.items():
        ratio = statistics.median(r / t for r, t in zip(ref, ts)) if ref else None
        out.append((k, statistics.median(ts) * 1000, ratio))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-models", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--student", type=Path, default=DEFAULT_STUDENT)
    ap.add_argument("--int8", type=Path, help="also quantize the student to this path and measure it")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/animelite-distill"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--grid", type=Path, default=Path("/tmp/animelite-lite/grid.jpg"))
    ap.add_argument("--speed-runs", type=int, default=5, help="0: skip the speed comparison")
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    from animelite.store import ModelStore

    store = ModelStore(args.cache / "models")
    store.pull("hayao", mirror=args.teacher_models)
    teacher_path = store.runtime_path("hayao")
    students = {"student fp32": args.student}
    if args.int8:
        from animelite.quantize import calibration_inputs, quantize_model

        calib = data.training_photos(args.photos)[::3][:16]
        quantize_model(args.student, args.int8, calibration_inputs(calib, "NCHW", 4))
        students["student int8"] = args.int8
    heldout = data.heldout(args.photos)

    t_macs, _ = conv_macs(teacher_path, args.size, args.size)
    print(f"onnxruntime {ort.__version__}; {args.size}x{args.size}: teacher {2 * t_macs / 1e9:.1f} GFLOP")
    for k, p in students.items():
        macs, _ = conv_macs(p, args.size, args.size)
        print(f"{k}: {2 * macs / 1e9:.1f} GFLOP ({100 * macs / t_macs:.1f}% of the teacher), "
              f"{p.stat().st_size / 1e6:.2f} MB ({p.stat().st_size} bytes)")

    teacher = generator(teacher_path)
    rows, images = fidelity(teacher, {k: generator(p) for k, p in students.items()}, heldout, args.size)
    print(f"\nfidelity to the teacher on {len(rows)} held-out photos at long side {args.size} (PSNR dB / SSIM)")
    keys = list(students)
    print(f"{'photo':<28}" + "".join(f"{k:>24}" for k in keys))
    for r in rows:
        print(f"{r['photo']:<28}" + "".join(f"{r[k][0]:>15.2f} / {r[k][1]:.4f}" for k in keys))
    for label, fn in (("median", statistics.median), ("worst", min)):
        print(f"{label:<28}" + "".join(f"{fn(r[k][0] for r in rows):>15.2f} / {fn(r[k][1] for r in rows):.4f}"
                                       for k in keys))
    save_grid(images, args.grid)
    print(f"\ngrid (input | teacher | {' | '.join(keys)}): {args.grid}")

    if args.speed_runs:
        print(f"\nspeed at {args.size}x{args.size}, 1 thread, {args.speed_runs} photos interleaved (median ms)")
        for k, ms, ratio in speed(store, teacher_path, students, heldout, args.size, args.speed_runs):
            extra = f"  {ratio:.1f}x faster than teacher pytorch" if ratio else ""
            print(f"{k:<28}{ms:10.0f} ms{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
