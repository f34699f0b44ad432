"""The ``stylize`` command: collect the input files, plan each one's output, run the batch, report.

Every file is stylized on its own: one file's failure is reported in the
summary and the batch goes on. Options are checked by the pipeline
(:class:`~animelite.pipeline.Stylizer`); an OptionError is a usage error.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import AnimeliteError
from ..options import OptionError
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, describe, err, one_line, option_message, store_for
from .files import collect_inputs, take_shard
from .outputs import OutputUsageError, output_target, plan_outputs


class LibraryWarnings:
    """Warnings raised while files are stylized (Pillow's "Corrupt EXIF data", ...), each shown once per file
    as one line, ``animelite: warning: FILE: text``, instead of Python's two lines with a site-packages path.

    Installed once, on the main thread, for the whole batch (``warnings.catch_warnings`` is process-wide);
    worker threads say which file they are on with :meth:`file`.
    """

    def __init__(self, say):
        self.say = say
        self.local = threading.local()
        self.seen: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    @contextmanager
    def routed(self):
        with warnings.catch_warnings():
            warnings.simplefilter("always", UserWarning)  # per file, not once per line of library code
            warnings.showwarning = self.show
            yield

    @contextmanager
    def file(self, src):
        self.local.src = src
        try:
            yield
        finally:
            self.local.src = None

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        src = getattr(self.local, "src", None)
        text = one_line(str(message))
        with self.lock:
            if (str(src), text) in self.seen:
                return
            self.seen.add((str(src), text))
        self.say(f"animelite: warning: {src}: {text}" if src is not None else f"animelite: warning: {text}")


def cmd_stylize(args) -> int:
    from tqdm import tqdm

    def say(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    routing = LibraryWarnings(say)
    with routing.routed():
        return _stylize(args, routing)


def _stylize(args, routing: LibraryWarnings) -> int:
    from tqdm import tqdm

    from ..pipeline import Stylizer

    found = collect_inputs(args.paths, output=args.output)
    inputs, missing = found.files, found.missing
    for arg in missing:
        err(f"{arg}: no such file, folder or matching glob")
    # a folder that cannot be listed is a failure, not a silent gap in the batch
    unreadable = [(folder, f"cannot read this folder ({why}); the images in it were not stylized")
                  for folder, why in found.unreadable]
    if not inputs:
        for folder, why in unreadable:
            err(f"{folder}: {why}")
        err("no input images found")
        return EXIT_FAILED
    total = len(inputs)
    if args.shard is not None:
        index, count = args.shard  # -o is then always a folder: output_target sees "several inputs"
        inputs = take_shard(inputs, index, count)
        if not args.quiet:
            print(f"animelite: shard {index}/{count}: {len(inputs)} of {total} input(s)", file=sys.stderr)
    try:
        out, single_file_out = output_target(args.output, max(total, 2) if args.shard else total, args.format)
    except OutputUsageError as exc:
        err(str(exc))
        return EXIT_USAGE
    from .video import classify

    videos, mismatched = classify(inputs)
    if args.ray is not None:
        if videos:
            err(f"--ray stylizes photos; {len(videos)} input(s) are videos (e.g. {sorted(videos)[0]}): run "
                "them without --ray")
            return EXIT_USAGE
        return _stylize_on_ray(args, inputs, out, single_file_out, unreadable, missing)
    if args.contact_sheet:
        from ..contact_sheet import SheetError, check_target

        if single_file_out:
            err(f"--contact-sheet writes index.html into an output folder, but {args.output} is one file; "
                "give a folder (end the name with a slash to make one)")
            return EXIT_USAGE
        try:
            check_target(out, args.overwrite)
        except SheetError as exc:
            err(str(exc))
            return EXIT_USAGE

    def note(msg: str) -> None:
        print(f"animelite: note: {msg}", file=sys.stderr)

    if args.jobs is None:
        # Two images in flight with one thread each beat one image with two
        # threads (1.30 vs 1.25 images/s at 512 on 2 cores, `bench --concurrency`).
        from ..engine import default_threads

        many = len(inputs) > 1 or bool(videos)  # a clip has frames in flight, one session each
        args.jobs = min(default_threads(), max(len(inputs), 2 if videos else 1)) \
            if many and args.threads is None else 1
    try:
        stylizer = Stylizer(args.style, size=args.size, keep_size=args.keep_size, threads=args.threads,
                            store=store_for(args), notice=note, faces=args.faces, face_style=args.face_style,
                            face_size=args.face_size, sessions=args.jobs, tile=args.tile, backend=args.backend,
                            precision=args.precision, mode=args.mode, hd_size=args.hd_size)
    except OptionError as exc:  # a value or combination the pipeline cannot run: the user's to fix
        err(option_message(exc))
        return EXIT_USAGE
    except AnimeliteError as exc:
        err(str(exc))
        return EXIT_FAILED
    if args.verbose:
        note(f"{stylizer.style.name} runs at {stylizer.precision} ({stylizer.precision_reason})")

    from ..contact_sheet import Row

    started = time.perf_counter()
    mismatched_src = {src for src, _ in mismatched}
    jobs, refused = plan_outputs([i for i in inputs if i[0] not in mismatched_src], out, single_file_out,
                                 args.format, videos=videos, video_format=args.video_format)
    refused = mismatched + refused
    failed: list[tuple[Path, str]] = unreadable + refused
    rows: dict[Path, Row] = {src: Row(src, None, "failed", why) for src, why in refused}  # for the report
    done = skipped = 0
    todo, video_jobs = [], []
    for job in jobs:
        if job.dst.is_dir():
            failed.append((job.src, f"output {job.dst} is a folder; nothing was written"))
            rows[job.src] = Row(job.src, None, "failed", failed[-1][1])
        elif job.dst.exists() and not args.overwrite:
            skipped += 1
            rows[job.src] = Row(job.src, job.dst, "skipped", "the output exists; --overwrite redoes it")
        elif job.kind == "video":
            video_jobs.append(job)
        else:
            todo.append((job.src, job.dst, job.fmt))

    def process(item):
        src, dst, fmt = item
        try:
            with routing.file(src):
                result = stylizer.stylize_file(src, dst, fmt=fmt, quality=args.quality, overwrite=args.overwrite)
            return item, result, None
        except AnimeliteError as exc:
            return item, None, one_line(str(exc))
        except Exception as exc:  # noqa: BLE001 - anything one file raises (a full disk, an onnxruntime
            return item, None, describe(exc)  # error, a bug) is that file's failure: the batch goes on

    show = not args.quiet and sys.stderr.isatty()
    bar = tqdm(total=len(todo), unit="img", disable=not show, file=sys.stderr)
    if args.jobs > 1:  # several images in flight, one session each (see engine.GeneratorPool)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=args.jobs)
        outcomes = pool.map(process, todo)
    else:
        pool, outcomes = None, map(process, todo)
    for (src, dst, _fmt), result, error in outcomes:
        bar.update(1)
        bar.set_postfix_str(src.name[:30])
        if error is not None:
            failed.append((src, error))
            rows[src] = Row(src, None, "failed", error)
            continue
        done += 1
        rows[src] = Row(src, dst, "stylized", input_size=result.input_size, working_size=result.working_size,
                        timings=dict(result.timings),
                        faces=None if result.faces is None else (result.faces.found, result.faces.stylized))
        if args.verbose:
            stages = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in result.timings.items())
            faces = ""
            if result.faces is not None:
                f = result.faces
                sizes = ",".join(str(c) for c in f.crop_sizes)
                faces = f"; {f.found} face(s) found, {f.stylized} restyled" + (f" at {sizes} px" if sizes else "")
            why = f"; {result.size_choice}" if result.size_choice is not None else ""
            why += f"; {result.precision}" if result.precision else ""
            tqdm.write(f"{src} -> {dst} ({result.working_size[0]}x{result.working_size[1]}{why}; {stages}{faces})",
                       file=sys.stderr)
    if pool is not None:
        pool.shutdown()
    bar.close()
    if video_jobs:
        from .video import run_videos

        clips_done, clips_failed, _clips, stop_with = run_videos(
            args, stylizer, video_jobs, note, say=lambda line: tqdm.write(line, file=sys.stderr))
        done += clips_done
        failed += clips_failed
        for src, why in clips_failed:
            rows[src] = Row(src, None, "failed", why)
        if stop_with is not None:
            for src, why in failed:
                err(f"{src}: {why}" if str(src) not in why else why)
            return stop_with
    for src, why in failed:
        err(f"{src}: {why}" if str(src) not in why else why)
    if not args.quiet or failed:
        summary = f"{done} stylized, {skipped} skipped (output exists; --overwrite to redo), {len(failed)} failed"
        print(summary, file=sys.stderr)
    sheet_failed = False
    if args.summary or args.contact_sheet:
        sheet_failed = not _report(args, stylizer, out, [rows[src] for src, _ in inputs if src in rows],
                                   time.perf_counter() - started)
    return EXIT_FAILED if failed or missing or sheet_failed else EXIT_OK


def _report(args, stylizer, out: Path, rows, wall: float) -> bool:
    """Print the timing summary and write the contact sheet, as asked; False when the sheet could not be
    written."""
    from ..contact_sheet import SheetError, format_summary, summarize, write_sheet

    summary = summarize(rows, wall, args.jobs)
    if args.summary or not args.quiet:
        print(format_summary(summary))
    if not args.contact_sheet:
        return True
    faces = "off" if stylizer.face_stage is None else getattr(stylizer.face_stage, "mode", "on")
    kept = " (outputs at the input size)" if args.keep_size else ""
    settings = (f"style {stylizer.style.name}; size {args.size}{kept}; faces {faces}; "
                f"{stylizer.backend} {stylizer.precision}; mode {stylizer.mode}; "
                f"{len(rows)} photo(s)")
    try:
        path = write_sheet(out, rows, summary, title=f"animelite: {' '.join(args.paths)}", settings=settings,
                           overwrite=args.overwrite)
    except (SheetError, OSError) as exc:
        err(f"contact sheet not written: {exc}")
        return False
    print(f"contact sheet: {path}")
    return True


def _stylize_on_ray(args, inputs, out: Path, single_file_out: bool, unreadable, missing) -> int:
    """``--ray``: the same inputs, options and output layout, run by :func:`animelite.distributed.stylize_dataset`."""
    from ..distributed import RayMissing, import_ray, stylize_dataset

    if single_file_out:
        err(f"--ray writes into an output folder (and its manifest), but {args.output} is one file; give a folder "
            "(end the name with a slash to make one)")
        return EXIT_USAGE
    if args.contact_sheet or args.threads is not None or args.jobs is not None:
        err("--ray runs one thread per actor and --ray-workers actors; --threads, -j and --contact-sheet do not "
            "apply")
        return EXIT_USAGE
    try:
        import_ray()
    except RayMissing as exc:
        err(str(exc))
        return EXIT_USAGE
    from tqdm import tqdm

    counts = {"done": 0, "skipped": 0, "failed": 0}
    started = time.perf_counter()
    # animelite's own counter beside Ray Data's bars: photos done/skipped/failed and photos/s
    bar = tqdm(total=len(inputs), unit="photo", disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr)

    def progress(row) -> None:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        bar.update(1)
        bar.set_postfix(counts, refresh=False)
        if args.verbose and row["status"] == "done":
            stages = " ".join(f"{k}={v:.0f}ms" for k, v in row["timings_ms"].items())
            tqdm.write(f"{row['input']} -> {row['output']} ({stages})", file=sys.stderr)

    models = args.models
    try:
        summary = stylize_dataset(inputs, out, address=args.ray, workers=args.ray_workers, style=args.style,
                                  fmt=args.format, quality=args.quality, overwrite=args.overwrite,
                                  models_dir=models, quiet=args.quiet, progress=progress, size=args.size,
                                  keep_size=args.keep_size, faces=args.faces, face_style=args.face_style,
                                  face_size=args.face_size, tile=args.tile, backend=args.backend,
                                  precision=args.precision, mode=args.mode, hd_size=args.hd_size)
    except OptionError as exc:
        err(option_message(exc))
        return EXIT_USAGE
    except AnimeliteError as exc:
        err(str(exc))
        return EXIT_FAILED
    finally:
        bar.close()
    failed = list(unreadable) + summary.failures
    for src, why in failed:
        err(f"{src}: {why}" if str(src) not in why else why)
    if not args.quiet or failed:
        print(f"{summary.done} stylized, {summary.skipped} skipped (output exists; --overwrite to redo), "
              f"{len(failed)} failed", file=sys.stderr)
    if not args.quiet:
        print(f"animelite: ray: start-up {summary.startup_s:.1f} s, {summary.done} photo(s) in {summary.wall_s:.1f} s "
              f"({summary.photos_per_s:.2f} photos/s), {time.perf_counter() - started:.1f} s in all; manifest "
              f"{summary.manifest}", file=sys.stderr)
    return EXIT_FAILED if failed or missing else EXIT_OK
