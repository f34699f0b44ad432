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

from .pipeline import STAGES, Stylizer
from .store import ModelStore

DEFAULT_SIZES = (256, 384, 512, 768, 1024)
DEFAULT_THREADS = (1, 2)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class BenchRow:
    style: str
    size: int
    threads: int
    photos: int
    stages_ms: dict[str, float]  # median per stage
    total_ms: float  # median of per-photo totals (not the sum of medians)
    working_sizes: list[str]


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
              count: int = 6, fmt: str = "jpg", store: ModelStore | None = None, progress=None) -> list[BenchRow]:
    sources: list = find_photos(photos_dir, count) if photos_dir else synthetic_photos(count or 4)
    rows = []
    for t in threads:
        for size in sizes:
            stylizer = Stylizer(style, size=size, threads=t, store=store, notice=lambda _msg: None)
            stylizer.encode(stylizer.stylize(sources[0]), fmt)  # warm-up, untimed
            per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
            totals, work = [], []
            for src in sources:
                result = stylizer.encode(stylizer.stylize(src), fmt)
                for s in STAGES:
                    per_stage[s].append(result.timings.get(s, 0.0) * 1000)
                totals.append(result.total_seconds * 1000)
                work.append("%dx%d" % result.working_size)
            rows.append(BenchRow(style=stylizer.style.name, size=size, threads=t, photos=len(sources),
                                 stages_ms={s: statistics.median(v) for s, v in per_stage.items()},
                                 total_ms=statistics.median(totals), working_sizes=sorted(set(work))))
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
    head = ["size", "threads", *STAGES, "total"]
    lines = [
        f"animelite bench: {rows[0].style if rows else '?'} on {source}; median ms per photo "
        f"({rows[0].photos if rows else 0} photos, 1 warm-up excluded)",
        f"machine: {info['cpu']}, {info['cores']} cores; onnxruntime {info['onnxruntime']}",
        "",
        " | ".join(f"{h:>11}" for h in head),
        " | ".join("-" * 11 for _ in head),
    ]
    for r in rows:
        cells = [str(r.size), str(r.threads)] + [f"{r.stages_ms[s]:.1f}" for s in STAGES] + [f"{r.total_ms:.1f}"]
        lines.append(" | ".join(f"{c:>11}" for c in cells))
    lines.append("")
    lines.append("size = working long side; total = median over photos of the per-photo sum of stages")
    return "\n".join(lines)


def to_json(rows: list[BenchRow], source: str) -> str:
    return json.dumps({"source": source, "machine": machine_info(), "rows": [asdict(r) for r in rows]}, indent=2)


def print_progress(row: BenchRow) -> None:
    print(f"  size {row.size} threads {row.threads}: {row.total_ms:.0f} ms", file=sys.stderr, flush=True)
