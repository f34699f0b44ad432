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

Sources and the destination are local paths (a shared filesystem every node
mounts at the same path) or URIs of any filesystem pyarrow opens (``s3://``,
``gs://``, ``abfs://``, ``hdfs://``, ``file://``): URIs are passed to
``pyarrow.fs`` untouched, listed there (:func:`animelite.inputs.collect_uris`)
and read and written by the actors themselves
(:func:`animelite.atomic.atomic_write_fs` says what each filesystem
guarantees). Folders are walked like the CLI walks them
(:mod:`animelite.inputs`, the one walker).

Resumable: a re-run skips an input whose output exists, and says why: "done
in the manifest" when the previous manifest has it done with the same style,
options and model checksum (its row, timings and checksum, is carried over,
so the manifest keeps saying how each output was made), else "output exists".
``overwrite`` redoes all. ``model_sha256`` and ``precision`` are those of the
model file that actually ran (the INT8 file when INT8 ran).

Why JSON Lines and not Parquet: the manifest is written by the driver as rows
stream back (one line each, no schema to agree on when a row has an error and
another has face counts), it is readable with ``grep``/``jq``/``pandas.read_json(lines=True)``
and by Ray itself (``ray.data.read_json``), and it needs nothing beyond the
standard library. At 10^7 rows it is a few GB; convert it with pandas when
columnar queries matter.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .atomic import TargetExists, atomic_path, atomic_write, atomic_write_fs
from .errors import AnimeliteError
from .inputs import Filesystems, collect_inputs, collect_uris, is_uri, join_uri, read_bytes, uri_with_suffix
from .inputs import exists as path_exists
from .options import (DEFAULT_TEMPORAL, DEFAULT_VIDEO_FORMAT, FORMAT_EXTENSIONS, VIDEO_FORMAT_EXTENSIONS,
                      VIDEO_FORMATS, VIDEO_SUFFIXES, canonical_format, format_for_suffix, one_of)

MANIFEST_NAME = "animelite-manifest.jsonl"
#: CPU share of one stylizing actor. Below 1 so that Ray Data's own tasks (reads, splits) always find a slot:
#: with whole CPUs on a 2-CPU machine the job stalls "backpressured" (checked on the 2-core dev machine).
ACTOR_CPUS = 0.75
INSTALL_HINT = "pip install 'animelite[ray]'"
DONE_BEFORE = "done in the manifest"  #: a skipped row's reason when the last manifest has it done alike
OUTPUT_EXISTS = "output exists"
#: loggers that print Ray's INFO lines in the driver (start-up, Ray Data's plan and per-dataset reports)
RAY_LOGGERS = ("ray", "ray.data", "ray._private", "ray.util")
#: says "Progress bars disabled" as a WARNING when they were turned off on purpose (-q)
BARS_LOGGER = "ray.data._internal.progress"


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


def job_options(quality: int, stylizer_options: dict) -> dict:
    """The options that shape an output besides style and format, as the manifest records (and compares) them."""
    return json.loads(json.dumps({"quality": quality, **stylizer_options}, sort_keys=True, default=str))


def new_row(path: str, dst: str | None, status: str, **fields) -> dict:
    """One manifest row with every column present (None where it does not apply)."""
    row = {"input": path, "output": dst, "status": status, "reason": None, "error": None, "style": None,
           "format": None, "options": None, "precision": None, "model_sha256": None, "timings_ms": {},
           "working_size": None, "faces_found": None, "frames": None, "pid": None}
    row.update(fields)
    return row


def ran_model(stylizer) -> tuple[str, str]:
    """(precision, SHA-256 of the model file) that *stylizer* runs: the INT8 file's when INT8 runs."""
    spec = getattr(stylizer.generator, "spec", None)
    path = getattr(spec, "path", None) or stylizer.store.runtime_path(stylizer.style)
    return stylizer.precision, stylizer.store.model_sha256(path)


class StylizeBatch:
    """``map_batches`` callable: one warm Stylizer per actor; rows in, manifest rows (JSON) out.

    >>> ds.map_batches(StylizeBatch, fn_constructor_kwargs={"style": "hayao", "size": 512}, batch_size=1,
    ...                compute=ray.data.ActorPoolStrategy(size=16), num_cpus=0.75)   # doctest: +SKIP

    Rows: ``path`` and ``dst`` (local paths or URIs of any pyarrow filesystem), ``fmt``, and optionally
    ``bytes`` (the file's contents when a reader already has them). Constructor: ``style``, ``quality``,
    ``overwrite``, ``models_dir`` and any other :class:`Stylizer` option (``size``, ``keep_size``, ``faces``,
    ``face_style``, ``face_size``, ``precision``, ``backend``, ``mode``, ``hd_size``, ``tile``).
    """

    def __init__(self, style: str, *, quality: int = 92, overwrite: bool = False, models_dir: str | None = None,
                 video: dict | None = None, **stylizer_options):
        from .pipeline import Stylizer

        self.quality, self.overwrite = quality, overwrite
        self.video = dict(video or {})  # stylize_video's options (temporal, crf, preset, max_duration)
        self.stylizer = Stylizer(style, threads=1, models_dir=models_dir, **stylizer_options)
        self.style = self.stylizer.style.name
        self.precision, self.checksum = ran_model(self.stylizer)
        self.options = job_options(quality, stylizer_options)
        self.video_options = job_options(quality, {**stylizer_options, **self.video})
        self.filesystems = Filesystems()

    def __call__(self, batch: dict) -> dict:
        paths = list(batch["path"])
        datas = list(batch["bytes"]) if "bytes" in batch else [None] * len(paths)
        rows = [self.one(str(p), str(d), str(f), data)
                for p, d, f, data in zip(paths, batch["dst"], batch["fmt"], datas)]
        return {"manifest": [json.dumps(r, sort_keys=True) for r in rows]}

    def one(self, path: str, dst: str, fmt: str, data: bytes | None = None) -> dict:
        """Stylize one photo to *dst*; the manifest row (never raises for a bad file)."""
        row = new_row(path, dst, "failed", style=self.style, format=fmt,
                      options=self.video_options if fmt in VIDEO_FORMATS else self.options,
                      precision=self.precision, model_sha256=self.checksum, pid=os.getpid())
        skipped = {"status": "skipped", "reason": OUTPUT_EXISTS}
        try:
            if not self.overwrite and path_exists(dst, self.filesystems):
                row.update(skipped)
                return row
            if fmt in VIDEO_FORMATS:  # a clip: stylized whole by this actor (never split across actors)
                return self._video(path, dst, row)
            if data is None:
                read = time.perf_counter()
                data = read_bytes(path, self.filesystems)
                row["timings_ms"]["read"] = round((time.perf_counter() - read) * 1000, 1)
            result = self.stylizer.encode(self.stylizer.stylize(bytes(data), name=path), fmt, self.quality)
            write = time.perf_counter()
            if is_uri(dst):
                fs, where = self.filesystems.resolve(dst)
                atomic_write_fs(fs, where, result.encoded, overwrite=self.overwrite)
            else:
                atomic_write(dst, result.encoded, overwrite=self.overwrite)
            row["timings_ms"]["write"] = round((time.perf_counter() - write) * 1000, 1)
        except TargetExists:  # another run wrote it meanwhile
            row.update(skipped)
            return row
        except Exception as exc:  # noqa: BLE001 - a bad file (or a full disk) is this row's failure, not the job's
            row["error"] = _reason(exc)
            return row
        row["timings_ms"].update({k: round(v * 1000, 1) for k, v in result.timings.items()})
        if result.precision and result.precision != self.precision:  # "auto" INT8 runs fp32 tiles
            row.update(precision=result.precision, model_sha256=self.stylizer.store.fp32_sha256(self.stylizer.style))
        row.update(status="done", working_size=list(result.working_size),
                   faces_found=None if result.faces is None else result.faces.found)
        return row


    def _video(self, path: str, dst: str, row: dict) -> dict:
        """One clip through :func:`animelite.video.stylize_video` with this actor's warm Stylizer (one session,
        one thread); a URI input is fetched to a local temporary file first and a URI output uploaded whole."""
        from .video import stylize_video

        with tempfile.TemporaryDirectory(prefix=".animelite-clip-") as tmp:
            src = path
            if is_uri(path):
                read = time.perf_counter()
                src = os.path.join(tmp, "input" + PurePosixPath(path).suffix)
                with open(src, "wb") as fh:
                    fh.write(read_bytes(path, self.filesystems))
                row["timings_ms"]["read"] = round((time.perf_counter() - read) * 1000, 1)
            target = os.path.join(tmp, "output" + PurePosixPath(dst).suffix) if is_uri(dst) else dst
            summary = stylize_video(src, target, stylizer=self.stylizer, workers=1, overwrite=self.overwrite,
                                    **self.video)
            if is_uri(dst):
                write = time.perf_counter()
                fs, where = self.filesystems.resolve(dst)
                with open(target, "rb") as fh:
                    atomic_write_fs(fs, where, fh.read(), overwrite=self.overwrite)
                row["timings_ms"]["write"] = round((time.perf_counter() - write) * 1000, 1)
        row["timings_ms"].update({k: round(v * 1000, 1) for k, v in summary.timings.items()})
        row.update(status="done", working_size=list(summary.working_size), frames=summary.frames)
        return row


@dataclass
class Summary:
    """What one :func:`stylize_dataset` run did."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    wall_s: float = 0.0  #: from the first photo submitted to the manifest written (Ray start-up not included)
    startup_s: float = 0.0  #: starting or joining Ray
    manifest: Path | str | None = None  #: a local path, or a URI when the output is one
    failures: list[tuple[str, str]] = field(default_factory=list)  #: (input, error)
    resumed: int = 0  #: of the skipped, those done in the previous manifest alike

    @property
    def photos_per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else 0.0


def gather(sources: Iterable, out: str | Path, filesystems: Filesystems | None = None
           ) -> tuple[list[tuple[str | Path, PurePosixPath | Path]], list[tuple[str, str]]]:
    """(input, relative path) pairs for *sources*, and the sources that name nothing (source, why).

    A source is a file, a folder (walked like the CLI walks it: recursive, image suffixes, sorted, the output
    left out), a glob, a URI of a file or a folder, or an ``(input, relative path)`` pair taken as it is.
    """
    fss = filesystems or Filesystems()
    pairs: list = []
    failed: list[tuple[str, str]] = []
    for item in sources:
        if isinstance(item, tuple):
            src, rel = item
            pairs.append((str(src) if is_uri(str(src)) else Path(src), PurePosixPath(Path(rel).as_posix())))
            continue
        if is_uri(str(item)):
            found = collect_uris([str(item)], output=str(out) if is_uri(str(out)) else None, filesystems=fss)
        else:
            found = collect_inputs([os.fspath(item)], output=None if is_uri(str(out)) else out)
        pairs.extend(found.files)
        failed.extend((str(m), "no such file, folder or matching glob") for m in found.missing)
        failed.extend((str(folder), f"cannot read this folder ({why}); the images in it were not stylized")
                      for folder, why in found.unreadable)
    return pairs, failed


def _where(path: str | Path, fss: Filesystems) -> tuple[str, str]:
    """(filesystem, absolute path): one key for a file however it is named (a local path or a file:// URI)."""
    if is_uri(str(path)):
        fs, p = fss.resolve(str(path))
        return fs.type_name, p
    return "local", os.path.abspath(path)


def plan(sources: Iterable, out: str | Path, fmt: str | None, filesystems: Filesystems | None = None,
         video_format: str = DEFAULT_VIDEO_FORMAT) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows ``{path, dst, fmt}`` for the inputs, and the refused ones (input, why).

    *sources*: as :func:`gather` takes them (files, folders, globs, URIs, (input, relative path) pairs). The
    output is ``out/relative path`` with the format's suffix, as the plain CLI writes it; a URI *out* gives URI
    outputs.
    """
    fss = filesystems or Filesystems()
    pairs, refused = gather(sources, out, fss)
    rows, claimed, seen = [], {}, set()
    remote = is_uri(str(out))
    for src, rel in pairs:
        src_key = _where(src, fss)
        if src_key in seen:
            continue
        seen.add(src_key)
        suffix = PurePosixPath(str(src)).suffix
        if suffix.lower() in VIDEO_SUFFIXES:  # a clip (by its name here; the actor's decoder checks the content)
            job_fmt, ext = video_format, VIDEO_FORMAT_EXTENSIONS[video_format]
        else:
            job_fmt = canonical_format(fmt) if fmt else (format_for_suffix(suffix) or "png")
            ext = FORMAT_EXTENSIONS[job_fmt]
        dst = uri_with_suffix(join_uri(str(out), rel), ext) if remote else str((Path(out) / rel).with_suffix(ext))
        key = _where(dst, fss)
        if key == src_key:
            refused.append((str(src), f"output {dst} would overwrite the input"))
        elif key in claimed:
            refused.append((str(src), f"output {dst} is already the output of {claimed[key]}"))
        else:
            claimed[key] = src
            rows.append({"path": str(src), "dst": dst, "fmt": job_fmt})
    return rows, refused


def manifest_location(out: str | Path) -> str | Path:
    return join_uri(str(out), MANIFEST_NAME) if is_uri(str(out)) else Path(out) / MANIFEST_NAME


def load_manifest(location: str | Path, filesystems: Filesystems | None = None) -> dict[str, dict]:
    """The last manifest's rows by input (none when there is no manifest; unreadable lines are ignored)."""
    try:
        text = read_bytes(location, filesystems).decode("utf-8", "replace")
    except (OSError, ValueError):
        return {}
    rows = {}
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("input"), str):
            rows[row["input"]] = row
    return rows


def made_alike(prev: dict | None, row: dict) -> bool:
    """Whether the last manifest's *prev* row made *row*'s output with the same style, format, options and
    model (done then, or carried over as done before)."""
    return (prev is not None and (prev.get("status") == "done"
                                  or (prev.get("status") == "skipped" and prev.get("reason") == DONE_BEFORE))
            and all(prev.get(k) == row[k] for k in ("output", "style", "format", "options", "model_sha256")))


@contextmanager
def _manifest_file(location: str | Path, fss: Filesystems) -> Iterator:
    """A text file for the manifest's rows that replaces *location* whole when the block ends cleanly."""
    if not is_uri(str(location)):
        with atomic_path(location) as tmp, open(tmp, "w", encoding="utf-8") as lines:
            yield lines
        return
    with tempfile.TemporaryFile("w+b") as local:
        lines = io.TextIOWrapper(local, encoding="utf-8", write_through=True)
        yield lines
        lines.flush()
        local.seek(0)
        fs, where = fss.resolve(str(location))
        atomic_write_fs(fs, where, lambda out: shutil.copyfileobj(local, out, 1 << 20))
        lines.detach()


def _existing(out: str | Path, fss: Filesystems) -> Callable[[str], bool]:
    """``exists(dst)`` for the outputs: one listing of *out* when it is a URI (not one request per file)."""
    if not is_uri(str(out)):
        return os.path.lexists
    from pyarrow.fs import FileSelector, FileType

    fs, root = fss.resolve(str(out))
    try:
        paths = {i.path for i in fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
                 if i.type == FileType.File}
    except OSError:
        return lambda dst: path_exists(dst, fss)
    return lambda dst: fss.resolve(dst)[1] in paths


def _make_folder(out: str | Path, fss: Filesystems) -> None:
    if not is_uri(str(out)):
        Path(out).mkdir(parents=True, exist_ok=True)
        return
    from .atomic import OBJECT_STORES

    fs, root = fss.resolve(str(out))
    if fs.type_name not in OBJECT_STORES:  # object stores have no folders, only key prefixes
        fs.create_dir(root, recursive=True)


def start_ray(address: str | None, *, quiet: bool = False) -> tuple[object, bool]:
    """Start or join Ray: None/"local" starts one on this machine, "auto" joins ``RAY_ADDRESS``'s cluster,
    anything else is a cluster address. (ray, whether this call started it); an already initialised Ray
    is used as it is. ``quiet``: Ray's INFO lines are not printed (warnings and errors are)."""
    ray, _ = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs = {"include_dashboard": False, "log_to_driver": not quiet}
    if quiet:
        kwargs["logging_level"] = logging.WARNING
    if address in (None, "", "local"):
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray, True


@contextmanager
def quiet_ray_logs(quiet: bool) -> Iterator[None]:
    """While the block runs, Ray's driver-side loggers print warnings and errors only (when *quiet*)."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(name) for name in (*RAY_LOGGERS, BARS_LOGGER)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if lg.name == BARS_LOGGER else logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def stylize_dataset(sources: Iterable, out: str | os.PathLike[str], *, address: str | None = None,
                    workers: int | None = None, style: str = "hayao", fmt: str | None = None, quality: int = 92,
                    overwrite: bool = False, models_dir: str | os.PathLike[str] | None = None,
                    actor_cpus: float = ACTOR_CPUS, progress: Callable[[dict], None] | None = None,
                    quiet: bool = False, video_format: str = DEFAULT_VIDEO_FORMAT, temporal: str = DEFAULT_TEMPORAL,
                    crf: int | None = None, preset: str | None = None, max_duration: float | None = None,
                    **stylizer_options) -> Summary:
    """Stylize *sources* into the folder *out* on Ray Data; the outputs are the plain CLI's.

    *sources*: files, folders (walked like the CLI walks them), globs, URIs of files or folders on any pyarrow
    filesystem, or ``(input, relative path)`` pairs; *out*: a folder or a folder URI. ``address``:
    None/"local" starts Ray here, "auto" joins ``RAY_ADDRESS``, else a cluster address (an already initialised
    Ray is used as is and left running). ``workers``: actors (default: the cluster's CPUs). Outputs that
    exist are skipped unless ``overwrite`` (a re-run does only the rest). Each result row is passed to
    ``progress`` as it comes back. ``quiet``: no Ray INFO lines and no progress bars. Options are checked
    before Ray starts (:class:`OptionError`); the model is pulled/converted once here, not by every actor.

    Clips (inputs named .mp4, .mov, .mkv, .webm, .avi, .m4v) are stylized whole by one actor each with
    :func:`animelite.video.stylize_video` (``temporal``, ``crf``, ``preset``, ``max_duration``) into
    ``video_format`` ("mp4" or "webm"); their manifest rows also say how many frames were made.
    """
    from .pipeline import Stylizer
    from .video.driver import check_video_options

    video_format = one_of("video_format", video_format, VIDEO_FORMATS)
    temporal, crf, preset, max_duration, _ = check_video_options(
        video_format, temporal=temporal, crf=crf, preset=preset, max_duration=max_duration, workers=None)
    video = {"temporal": temporal, "crf": crf, "preset": preset, "max_duration": max_duration}
    fss = Filesystems()
    out = str(out) if is_uri(str(out)) else Path(out)
    rows, refused = plan(sources, out, fmt, fss, video_format)
    models_dir = None if models_dir is None else str(models_dir)
    # checks every option and prepares the model files once, before any actor exists
    check = Stylizer(style, threads=1, models_dir=models_dir, **stylizer_options)
    style = check.style.name
    precision, checksum = ran_model(check)
    del check
    options = job_options(quality, stylizer_options)
    clip_options = job_options(quality, {**stylizer_options, **video})
    summary = Summary(manifest=manifest_location(out))
    previous = {} if overwrite else load_manifest(summary.manifest, fss)
    _make_folder(out, fss)
    exists = _existing(out, fss)
    # rows go to the manifest's temporary file as they come back (a 10^7-photo job keeps none in memory);
    # it replaces DST/animelite-manifest.jsonl when the job ends, so a crashed driver leaves the last one
    with _manifest_file(summary.manifest, fss) as lines:

        def record(row: dict) -> None:
            status = row["status"]
            if status == "done":
                summary.done += 1
            elif status == "skipped":
                summary.skipped += 1
                summary.resumed += row.get("reason") == DONE_BEFORE
            else:
                summary.failed += 1
                summary.failures.append((row["input"], row["error"]))
            lines.write(json.dumps(row, sort_keys=True) + "\n")
            if progress is not None:
                progress(row)

        base = {"style": style, "options": options, "precision": precision, "model_sha256": checksum}
        for src, why in refused:
            record(new_row(src, None, "failed", error=why, **base))
        todo = []
        for job in rows:
            row = new_row(job["path"], job["dst"], "skipped", format=job["fmt"],
                          **{**base, "options": clip_options if job["fmt"] in VIDEO_FORMATS else options})
            if not is_uri(job["dst"]) and os.path.isdir(job["dst"]):
                record({**row, "status": "failed", "error": f"output {job['dst']} is a folder; nothing was written"})
            elif overwrite or not exists(job["dst"]):
                todo.append(job)
            elif made_alike(prev := previous.get(job["path"]), row):
                record({**row, **{k: prev.get(k) for k in ("precision", "timings_ms", "working_size",
                                                            "faces_found", "frames", "pid")}, "reason": DONE_BEFORE})
            else:
                record({**row, "reason": OUTPUT_EXISTS})
        if todo:
            began = time.perf_counter()
            with quiet_ray_logs(quiet):
                ray, started = start_ray(address, quiet=quiet)
                summary.startup_s = time.perf_counter() - began
                try:
                    _run(ray, todo, workers, actor_cpus, record, quiet,
                         dict(style=style, quality=quality, overwrite=overwrite, models_dir=models_dir,
                              video=video, **stylizer_options), summary)
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
