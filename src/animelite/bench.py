"""``animelite bench``: per-stage timings of the real pipeline at several sizes and thread counts.

Each row runs the same :class:`~animelite.pipeline.Stylizer` the CLI uses on N
photos (from a folder, or synthetic ones when none is given), after one
untimed warm-up, and reports the median milliseconds of every stage.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .options import IMAGE_SUFFIXES
from .pipeline import STAGES, Stylizer
from .store import ModelStore

DEFAULT_SIZES = (256, 384, 512, 768, 1024)
DEFAULT_THREADS = (1, 2)


@dataclass
class BenchRow:
    style: str
    size: int
    threads: int
    photos: int
    stages_ms: dict[str, float]  # median per stage
    total_ms: float  # median of per-photo totals (not the sum of medians)
    working_sizes: list[str]
    faces: str = "off"  # the face mode; "faces" is in stages_ms only when it is on
    face_detect_ms: float | None = None  # median face detection per photo (part of the faces stage)
    faces_found: int = 0  # faces found over all timed photos


def find_photos(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no photos (jpg, png, webp, bmp, tiff) in {folder}")
    if count and len(files) > count:
        # spread the pick over the folder rather than taking the first N names
        idx = np.linspace(0, len(files) - 1, count).round().astype(int)
        files = [files[i] for i in sorted(set(idx))]
    return files


def synthetic_photos(count: int, size: tuple[int, int] = (1600, 1200)) -> list[bytes]:
    """JPEG-encoded smooth-plus-texture images, for when no photo folder is given."""
    rng = np.random.default_rng(0)
    out = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(count):
        base = np.stack([(xx / w) * 255, (yy / h) * 255, ((xx + yy + 97 * k) % 256)], axis=-1)
        noise = rng.normal(0, 12, (h, w, 3))
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def run_bench(*, style: str = "hayao", sizes=DEFAULT_SIZES, threads=DEFAULT_THREADS, photos_dir: Path | None = None,
              count: int = 6, fmt: str = "jpg", store: ModelStore | None = None, progress=None,
              faces: str = "off", face_style: str | None = None, **speed) -> list[BenchRow]:
    """``speed``: backend, precision, mode, hd_size, face_size, passed to :class:`Stylizer`."""
    sources: list = find_photos(photos_dir, count) if photos_dir else synthetic_photos(count or 4)
    rows = []
    for t in threads:
        for size in sizes:
            stylizer = Stylizer(style, size=size, threads=t, store=store, notice=lambda _msg: None,
                                faces=faces, face_style=face_style, **speed)
            stages = [s for s in STAGES if s != "faces" or stylizer.face_stage is not None]
            stylizer.encode(stylizer.stylize(sources[0]), fmt)  # warm-up, untimed
            per_stage: dict[str, list[float]] = {s: [] for s in stages}
            totals, work, detect, found = [], [], [], 0
            for src in sources:
                result = stylizer.encode(stylizer.stylize(src), fmt)
                for s in stages:
                    per_stage[s].append(result.timings.get(s, 0.0) * 1000)
                totals.append(result.total_seconds * 1000)
                work.append("%dx%d" % result.working_size)
                if result.faces is not None:
                    detect.append(result.faces.detect_seconds * 1000)
                    found += result.faces.found
            rows.append(BenchRow(style=stylizer.style.name, size=size, threads=t, photos=len(sources),
                                 stages_ms={s: statistics.median(v) for s, v in per_stage.items()},
                                 total_ms=statistics.median(totals), working_sizes=sorted(set(work)),
                                 faces=stylizer.face_stage.mode if stylizer.face_stage else "off",
                                 face_detect_ms=statistics.median(detect) if detect else None, faces_found=found))
            if progress:
                progress(rows[-1])
    return rows


def machine_info() -> dict:
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def format_table(rows: list[BenchRow], source: str) -> str:
    info = machine_info()
    stages = [s for s in STAGES if any(s in r.stages_ms for r in rows)]
    with_faces = any(r.faces != "off" for r in rows)
    head = ["size", "threads", *stages, *(["face detect", "faces found"] if with_faces else []), "total"]
    lines = [
        f"animelite bench: {rows[0].style if rows else '?'} on {source}; median ms per photo "
        f"({rows[0].photos if rows else 0} photos, 1 warm-up excluded)",
        f"machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}",
        "",
        " | ".join(f"{h:>11}" for h in head),
        " | ".join("-" * 11 for _ in head),
    ]
    for r in rows:
        cells = [str(r.size), str(r.threads)] + [f"{r.stages_ms[s]:.1f}" if s in r.stages_ms else "-" for s in stages]
        if with_faces:
            cells += ["-" if r.face_detect_ms is None else f"{r.face_detect_ms:.1f}", str(r.faces_found)]
        lines.append(" | ".join(f"{c:>11}" for c in cells + [f"{r.total_ms:.1f}"]))
    lines.append("")
    lines.append("size = working long side; total = median over photos of the per-photo sum of stages")
    if with_faces:
        lines.append("faces = detection + face stylization + paste-back; face detect = its detection part "
                     "(median per photo); faces found = over all timed photos")
    return "\n".join(lines)


def to_json(rows: list[BenchRow], source: str) -> str:
    return json.dumps({"source": source, "machine": machine_info(), "rows": [asdict(r) for r in rows]}, indent=2)


def print_progress(row: BenchRow) -> None:
    print(f"  size {row.size} threads {row.threads}: {row.total_ms:.0f} ms", file=sys.stderr, flush=True)


# -- --compare: backends x precisions x modes against a PyTorch reference -------------------
@dataclass
class CompareRow:
    variant: str  # "backend precision mode", or "pytorch fp32 full (reference)"
    ms: float  # median per photo: preprocess + inference + postprocess of the pipeline
    speedup: float | None  # median over photos of (PyTorch time / this time), measured side by side
    psnr_median: float | None  # against onnxruntime fp32 full on the same photo
    psnr_worst: float | None
    ssim_median: float | None
    note: str = ""


def compare_variants(store: ModelStore, style: str) -> list[tuple[str, str, str]]:
    """(backend, precision, mode) combinations that can run here, most basic first."""
    from .engine import cpu_has_bf16, openvino_available
    from .errors import ModelError

    backends = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    try:
        store.quantized_path(style)
        has_int8 = True
    except ModelError:
        has_int8 = False
    out = []
    for mode in ("full", "hd"):
        for backend in backends:
            for precision in ("fp32", "bf16", "int8"):
                if precision == "bf16" and (backend != "openvino" or not cpu_has_bf16()):
                    continue
                if precision == "int8" and not has_int8:
                    continue
                out.append((backend, precision, mode))
    return out


def _square_photos(sources: list, size: int) -> list[np.ndarray]:
    from .imageio import decode_image

    out = []
    for src in sources:
        rgb = decode_image(src).rgb
        h, w = rgb.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(rgb[top:top + side, left:left + side])
        out.append(np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS)))
    return out


def _torch_reference(store: ModelStore, style_name: str, threads: int):
    """The PyTorch generator with the style's weights, or (None, reason)."""
    try:
        import torch

        from .convert.animeganv2 import weights_from_state_dict
        from .convert.tflite_reader import read_animeganv2_tflite
        from .convert.torch_pickle import load_torch_state_dict
        from .torch_reference import from_weights
    except ImportError:
        return None, "torch not installed (pip install torch): no PyTorch reference row"
    style = store.style(style_name)
    if style.family != "animeganv2":
        return None, f"no PyTorch reference for the {style.family} family"
    src = store.source_path(style)
    if style.source_format == "tflite":
        weights = read_animeganv2_tflite(src)
    else:
        weights = weights_from_state_dict(load_torch_state_dict(src), str(src))
    torch.set_num_threads(threads)
    net = from_weights(weights, style.variant or "tf")

    def run(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray((rgb.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[None]))
        with torch.no_grad():
            y = net(x)[0].numpy().transpose(1, 2, 0)
        return ((y + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)

    return run, ""


def run_compare(*, style: str = "hayao", size: int = 512, threads: int = 1, photos_dir: Path | None = None,
                count: int = 6, store: ModelStore | None = None, with_torch: bool = True,
                also: tuple[str, ...] = (), progress=None) -> tuple[list[CompareRow], list[str]]:
    """Time every runnable variant and the PyTorch reference on the same square photos, interleaved.

    ``also`` adds the variants of other styles (e.g. the distilled ``hayao-lite``) to the same
    table: same photos, same interleaving, speed-up against ``style``'s PyTorch reference and
    fidelity against ``style``'s ONNX Runtime fp32 output, i.e. how closely a student follows
    its teacher.
    """
    from .quality import psnr, ssim

    store = store or ModelStore()
    sources: list = find_photos(photos_dir, count) if photos_dir else synthetic_photos(count or 4)
    photos = _square_photos(sources, size)
    notes: list[str] = []
    runners: dict[str, object] = {}
    for name in (style, *also):
        prefix = "" if name == style else f"{name}: "
        for backend, precision, mode in compare_variants(store, name):
            s = Stylizer(name, size=size, threads=threads, store=store, backend=backend, precision=precision,
                         mode=mode, faces="off", notice=lambda _m: None)

            def run(rgb, s=s):
                r = s.stylize(rgb)
                return r.image, sum(r.timings.get(k, 0.0) for k in ("preprocess", "inference", "postprocess"))

            runners[f"{prefix}{backend} {precision} {mode}"] = run
    baseline = "onnxruntime fp32 full"
    torch_key = "pytorch fp32 full (reference)"
    if with_torch:
        torch_run, why = _torch_reference(store, style, threads)
        if torch_run is None:
            notes.append(why)
        else:
            import time as _time

            def timed_torch(rgb):
                t0 = _time.perf_counter()
                out = torch_run(rgb)
                return out, _time.perf_counter() - t0

            runners[torch_key] = timed_torch
    for run in runners.values():  # warm-up: sessions, OpenVINO shape compilation
        run(photos[0])
    times: dict[str, list[float]] = {k: [] for k in runners}
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in runners}
    for i, rgb in enumerate(photos):
        for key, run in runners.items():  # interleaved: every variant sees the same machine state
            out, seconds = run(rgb)
            times[key].append(seconds)
            outputs[key].append(out.astype(np.float32) / 255)
        if progress:
            progress(f"  photo {i + 1}/{len(photos)}")
    rows = []
    for key in runners:
        ratios = [t / m for t, m in zip(times.get(torch_key, []), times[key])] if torch_key in times else []
        fid = [(psnr(a, b), ssim(a, b)) for a, b in zip(outputs[key], outputs[baseline])] if key != baseline else []
        rows.append(CompareRow(
            variant=key, ms=statistics.median(times[key]) * 1000,
            speedup=statistics.median(ratios) if ratios else None,
            psnr_median=statistics.median(p for p, _ in fid) if fid else None,
            psnr_worst=min(p for p, _ in fid) if fid else None,
            ssim_median=statistics.median(s for _, s in fid) if fid else None,
        ))
    return rows, notes


def format_compare(rows: list[CompareRow], notes: list[str], *, style: str, size: int, threads: int,
                   photos: int, source: str) -> str:
    info = machine_info()
    lines = [
        f"animelite bench --compare: {style} at {size}x{size}, {threads} thread(s), {photos} photos from {source}",
        f"machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}",
        "ms = median per photo (preprocess + inference + postprocess); speed-up = median per-photo ratio to PyTorch",
        "measured in the same run; fidelity vs onnxruntime fp32 full on the same photo",
        "",
        f"{'variant':<44} | {'ms':>8} | {'speed-up':>8} | {'PSNR med':>8} | {'PSNR min':>8} | {'SSIM med':>8}",
        "-" * 45 + "|" + "|".join("-" * 10 for _ in range(5)),
    ]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in rows:
        lines.append(f"{r.variant:<44} | {r.ms:>8.0f} | {f(r.speedup, '>7.2f') + 'x' if r.speedup else '-':>8} | "
                     f"{f(r.psnr_median, '>8.2f'):>8} | {f(r.psnr_worst, '>8.2f'):>8} | {f(r.ssim_median, '>8.4f'):>8}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def print_progress_text(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def to_json_compare(rows: list[CompareRow], notes: list[str], size: int, threads: int) -> str:
    return json.dumps({"size": size, "threads": threads, "machine": machine_info(),
                       "rows": [asdict(r) for r in rows], "notes": notes}, indent=2)


# -- --concurrency: images/s with N images in flight ---------------------------------------
@dataclass
class ConcurrencyRow:
    in_flight: int  # images processed at once (one session each)
    threads: int  # intra-op threads per session
    images: int
    seconds: float  # median wall time over repeats
    images_per_s: float
    vs_one: float | None = None  # images/s relative to 1 in flight with the same threads per session


def run_concurrency(*, style: str = "hayao", size: int = 512, in_flight=(1, 2, 4), threads=(1, 2),
                    photos_dir: Path | None = None, count: int = 8, repeats: int = 3, fmt: str = "jpg",
                    store: ModelStore | None = None, progress=None, **speed) -> list[ConcurrencyRow]:
    """Whole-pipeline throughput (decode to encode) with N images in flight, N sessions of T threads."""
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    sources: list = find_photos(photos_dir, count) if photos_dir else synthetic_photos(count or 4)
    rows = []
    for t in threads:
        for n in in_flight:
            stylizer = Stylizer(style, size=size, threads=t, sessions=n, store=store, faces="off",
                                notice=lambda _m: None, **speed)

            def one(src, s=stylizer):
                return s.encode(s.stylize(src), fmt)

            with ThreadPoolExecutor(max_workers=n) as pool:
                list(pool.map(one, sources[:n]))  # warm every session
                walls = []
                for _ in range(repeats):
                    t0 = _time.perf_counter()
                    list(pool.map(one, sources))
                    walls.append(_time.perf_counter() - t0)
            wall = statistics.median(walls)
            rows.append(ConcurrencyRow(in_flight=n, threads=t, images=len(sources), seconds=wall,
                                       images_per_s=len(sources) / wall))
            if progress:
                progress(f"  {n} in flight x {t} thread(s): {len(sources) / wall:.2f} images/s")
    for r in rows:
        base = next((b for b in rows if b.threads == r.threads and b.in_flight == 1), None)
        r.vs_one = r.images_per_s / base.images_per_s if base else None
    return rows


def format_concurrency(rows: list[ConcurrencyRow], *, style: str, size: int, source: str) -> str:
    info = machine_info()
    lines = [f"animelite bench --concurrency: {style}, working long side {size}, whole pipeline, "
             f"{rows[0].images if rows else 0} photos from {source}, median of repeats",
             f"machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}", "",
             f"{'in flight':>9} | {'threads/session':>15} | {'images/s':>8} | {'vs 1 in flight':>14}",
             "-" * 10 + "|" + "-" * 17 + "|" + "-" * 10 + "|" + "-" * 15]
    for r in rows:
        lines.append(f"{r.in_flight:>9} | {r.threads:>15} | {r.images_per_s:>8.2f} | "
                     f"{(format(r.vs_one, '.2f') + 'x') if r.vs_one else '-':>14}")
    return "\n".join(lines)
