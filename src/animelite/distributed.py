"""Whole photo libraries on Ray Data: one warm Stylizer per actor, atomic outputs, a JSON Lines manifest.

Two pieces:

- :class:`StylizeBatch`, a callable class for ``ray.data.Dataset.map_batches``
  that a Ray user can put in their own pipeline. Each actor builds ONE
  :class:`~animelite.pipeline.Stylizer` in ``__init__`` (one intra-op thread:
  Ray gives each actor its CPU slot), so the model is loaded once per actor,
  not per batch. For each row ``{path, dst, fmt}`` (and optionally ``bytes``,
  the file's contents when a reader already has them) it stylizes the photo,
  writes the result atomically to ``dst`` (:func:`animelite.atomic.atomic_write`:
  a temporary name, then a rename, so a killed actor never leaves a half
  file) and returns one manifest row as JSON. A bad file is a ``failed`` row,
  never an exception, so one photo never fails the job.
- :func:`stylize_dataset`, the driver behind ``animelite stylize --ray``:
  starts or joins Ray, skips outputs that exist (resumable; ``overwrite``
  redoes all), runs the rest through an actor pool and writes
  ``DST/animelite-manifest.jsonl``.

Inputs are local paths (or a shared filesystem every node mounts at the same
path); the actors open them themselves. ``s3://`` and other pyarrow
filesystems are not read here and were not tested.

Why JSON Lines and not Parquet: the manifest is written by the driver as rows
stream back (one line each, no schema to agree on when a row has an error and
another has face counts), it is readable with ``grep``/``jq``/``pandas.read_json(lines=True)``
and by Ray itself (``ray.data.read_json``), and it needs nothing beyond the
standard library. At 10^7 rows it is a few GB; convert it with pandas when
columnar queries matter.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import TargetExists, atomic_path, atomic_write
from .errors import AnimeliteError
from .options import FORMAT_EXTENSIONS, OptionError, canonical_format, format_for_suffix

MANIFEST_NAME = "animelite-manifest.jsonl"
#: CPU share of one stylizing actor. Below 1 so that Ray Data's own tasks (reads, splits) always find a slot:
#: with whole CPUs on a 2-CPU machine the job stalls "backpressured" (checked on the 2-core dev machine).
ACTOR_CPUS = 0.75
INSTALL_HINT = "pip install 'animelite[ray]'"


class RayMissing(AnimeliteError):
    """``ray[data]`` is not installed."""


def import_ray():
    """``(ray, ray.data)``, or :class:`RayMissing` saying how to install them."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayMissing(f"Ray is not installed ({exc}); {INSTALL_HINT}") from None
    return ray, ray.data


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    if isinstance(exc, AnimeliteError):
        return _one_line(str(exc))
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StylizeBatch:
    """``map_batches`` callable: one warm Stylizer per actor; rows in, manifest rows (JSON) out.

    >>> ds.map_batches(StylizeBatch, fn_constructor_kwargs={"style": "hayao", "size": 512}, batch_size=1,
    ...                compute=ray.data.ActorPoolStrategy(size=16), num_cpus=0.75)   # doctest: +SKIP

    Constructor: ``style``, ``fmt`` (None: each row's ``fmt``), ``quality``,
    ``overwrite``, ``models_dir`` and any other :class:`Stylizer` option
    (``size``, ``keep_size``, ``faces``, ``face_style``, ``face_size``,
    ``precision``, ``backend``, ``mode``, ``hd_size``, ``tile``).
    """

    def __init__(self, style: str, *, quality: int = 92, overwrite: bool = False, models_dir: str | None = None,
                 **stylizer_options):
        from .pipeline import Stylizer

        self.quality, self.overwrite = quality, overwrite
        self.stylizer = Stylizer(style, threads=1, models_dir=models_dir, **stylizer_options)
        self.style = self.stylizer.style.name
        self.checksum = self.stylizer.store.fp32_sha256(self.stylizer.style)

    def __call__(self, batch: dict) -> dict:
        paths = list(batch["path"])
        datas = list(batch["bytes"]) if "bytes" in batch else [None] * len(paths)
        rows = [self.one(str(p), str(d), str(f), data)
                for p, d, f, data in zip(paths, batch["dst"], batch["fmt"], datas)]
        return {"manifest": [json.dumps(r, sort_keys=True) for r in rows]}

    def one(self, path: str, dst: str, fmt: str, data: bytes | None = None) -> dict:
        """Stylize one photo to *dst*; the manifest row (never raises for a bad file)."""
        row = {"input": path, "output": dst, "status": "failed", "error": None, "timings_ms": {},
               "style": self.style, "model_sha256": self.checksum, "working_size": None, "faces_found": None,
               "pid": os.getpid()}
        target = Path(dst)
        if not self.overwrite and os.path.lexists(target):
            row.update(status="skipped", error=None)
            return row
        try:
            if data is None:
                read = time.perf_counter()
                with open(path, "rb") as f:
                    data = f.read()
                row["timings_ms"]["read"] = round((time.perf_counter() - read) * 1000, 1)
            result = self.stylizer.encode(self.stylizer.stylize(bytes(data), name=path), fmt, self.quality)
            atomic_write(target, result.encoded, overwrite=self.overwrite)
        except TargetExists:  # another run wrote it meanwhile
            row.update(status="skipped")
            return row
        except Exception as exc:  # noqa: BLE001 - a bad file (or a full disk) is this row's failure, not the job's
            row["error"] = _reason(exc)
            return row
        row["timings_ms"].update({k: round(v * 1000, 1) for k, v in result.timings.items()})
        row.update(status="done", working_size=list(result.working_size),
                   faces_found=None if result.faces is None else result.faces.found)
        return row


@dataclass
class Summary:
    """What one :func:`stylize_dataset` run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    wall_s: float = 0.0  #: from the first photo submitted to the manifest written (Ray start-up not included)
    startup_s: float = 0.0  #: starting or joining Ray
    manifest: Path | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  #: (input, error)

    @property
    def photos_per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else 0.0


def plan(sources: Iterable, out: Path, fmt: str | None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows ``{path, dst, fmt}`` for the inputs, and the refused ones (input, why).

    *sources*: file paths (the output keeps the file's name) or ``(file, relative path)`` pairs, as
    :func:`animelite.cli.files.collect_inputs` lists folders; the output is ``out/relative path`` with the
    format's suffix, as the plain CLI writes it.
    """
    rows, refused, claimed = [], [], {}
    for item in sources:
        src, rel = (Path(item[0]), Path(item[1])) if isinstance(item, tuple) else (Path(item), Path(Path(item).name))
        if src.is_dir():
            raise OptionError(f"{src} is a folder: pass its files, or (file, relative path) pairs "
                              "(animelite.cli.files.collect_inputs lists a folder)")
        job_fmt = canonical_format(fmt) if fmt else (format_for_suffix(src.suffix) or "png")
        dst = (out / rel).with_suffix(FORMAT_EXTENSIONS[job_fmt])
        key = os.path.abspath(dst)
        if os.path.abspath(src) == key:
            refused.append((str(src), f"output {dst} would overwrite the input"))
        elif key in claimed:
            refused.append((str(src), f"output {dst} is already the output of {claimed[key]}"))
        else:
            claimed[key] = src
            rows.append({"path": str(src), "dst": str(dst), "fmt": job_fmt})
    return rows, refused


def start_ray(address: str | None, *, quiet: bool = False) -> tuple[object, bool]:
    """Start or join Ray: None/"local" starts one on this machine, "auto" joins ``RAY_ADDRESS``'s cluster,
    anything else is a cluster address. (ray, whether this call started it); an already initialised Ray
    is used as it is."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": not quiet}
    if address in (None, "", "local"):
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray, True


def stylize_dataset(sources: Iterable, out: str | os.PathLike[str], *, address: str | None = None,
                    workers: int | None = None, style: str = "hayao", fmt: str | None = None, quality: int = 92,
                    overwrite: bool = False, models_dir: str | os.PathLike[str] | None = None,
                    actor_cpus: float = ACTOR_CPUS, progress: Callable[[dict], None] | None = None,
                    quiet: bool = False, **stylizer_options) -> Summary:
    """Stylize *sources* into the folder *out* on Ray Data; the outputs are the plain CLI's.

    ``address``: None/"local" starts Ray here, "auto" joins ``RAY_ADDRESS``, else a cluster address (an
    already initialised Ray is used as is and left running). ``workers``: actors (default: the cluster's
    CPUs). Outputs that exist are skipped unless ``overwrite`` (a re-run does only the rest). Each result
    row is passed to ``progress`` as it comes back. Options are checked before Ray starts
    (:class:`OptionError`); the model is pulled/converted once here, not by every actor at once.
    """
    from .pipeline import Stylizer

    out = Path(out)
    rows, refused = plan(sources, out, fmt)
    models_dir = None if models_dir is None else str(models_dir)
    # checks every option and prepares the model files once, before any actor exists
    check = Stylizer(style, threads=1, models_dir=models_dir, **stylizer_options)
    style = check.style.name
    checksum = check.store.fp32_sha256(check.style)
    del check
    summary = Summary(manifest=out / MANIFEST_NAME)
    out.mkdir(parents=True, exist_ok=True)
    # rows go to the manifest's temporary file as they come back (a 10^7-photo job keeps none in memory);
    # it replaces DST/animelite-manifest.jsonl when the job ends, so a crashed driver leaves the last one
    with atomic_path(summary.manifest) as tmp, open(tmp, "w", encoding="utf-8") as lines:

        def record(row: dict) -> None:
            status = row["status"]
            if status == "done":
                summary.done += 1
            elif status == "skipped":
                summary.skipped += 1
            else:
                summary.failed += 1
                summary.failures.append((row["input"], row["error"]))
            lines.write(json.dumps(row, sort_keys=True) + "\n")
            if progress is not None:
                progress(row)

        base = {"timings_ms": {}, "style": style, "model_sha256": checksum, "working_size": None,
                "faces_found": None}
        for src, why in refused:
            record({"input": src, "output": None, "status": "failed", "error": why, **base})
        todo = []
        for row in rows:
            if not overwrite and os.path.lexists(row["dst"]):
                record({"input": row["path"], "output": row["dst"], "status": "skipped", "error": None, **base})
            else:
                todo.append(row)
        if todo:
            began = time.perf_counter()
            ray, started = start_ray(address, quiet=quiet)
            summary.startup_s = time.perf_counter() - began
            try:
                _run(ray, todo, workers, actor_cpus, record, quiet,
                     dict(style=style, quality=quality, overwrite=overwrite, models_dir=models_dir,
                          **stylizer_options), summary)
            finally:
                if started:
                    ray.shutdown()
    return summary


def _run(ray, todo: list[dict], workers: int | None, actor_cpus: float, record, quiet: bool, options: dict,
         summary: Summary) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = max(1, min(workers or cpus, len(todo)))
    began = time.perf_counter()
    ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), max(1, workers * 4)))
    # a fixed pool of `workers` actors (ActorPoolStrategy: `concurrency=` is deprecated since Ray 2.51); Ray Data
    # restarts an actor that dies and retries its batch, and the atomic writes leave no half file behind
    ds = ds.map_batches(StylizeBatch, fn_constructor_kwargs=options, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=actor_cpus)
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        for text in batch["manifest"]:
            record(json.loads(str(text)))
    summary.wall_s = time.perf_counter() - began
