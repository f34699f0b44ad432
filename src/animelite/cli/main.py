"""The command line's parser and entry point, and the ``models`` and ``bench`` commands.

Flags take their choices, bounds and defaults from :mod:`animelite.options`;
``stylize`` lives in :mod:`animelite.cli.stylize`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import __version__
from ..errors import AnimeliteError
from ..options import (AUTO_TILE_TEXT, BACKENDS, DEFAULT_BACKEND, DEFAULT_FACE_SIZE, DEFAULT_MODE, DEFAULT_PRECISION,
                       DEFAULT_QUALITY, DEFAULT_SIZE, DEFAULT_TILE, FACE_MODES, FORMAT_CHOICES, MAX_FACE_SIZE,
                       MAX_QUALITY, MAX_SESSIONS, MAX_SIZE, MAX_THREADS, MIN_FACE_SIZE, MIN_QUALITY, MIN_SIZE, MIN_TILE,
                       MODELS_ENV, MODES, PRECISION_CHOICES, SIZE_AUTO, AUTO_SIZE_MAX, AUTO_SIZE_MIN, OptionError)
from ..options import (CRF_BOUNDS, DEFAULT_CRF, DEFAULT_PRESET, DEFAULT_TEMPORAL, DEFAULT_VIDEO_FORMAT,
                       DEFAULT_WEBM_CRF, TEMPORAL_MODES, VIDEO_FORMATS, VIDEO_PRESETS)
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, option_message, store_for
from .stylize import cmd_stylize


# -- models ----------------------------------------------------------------------
def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_models(args) -> int:
    store = store_for(args)
    action = args.models_cmd
    if action == "list":
        rows = store.list_rows()
        print(f"models directory: {store.root}")
        w = max(len(r["name"]) for r in rows)
        print(f"{'style':<{w}}  {'kind':<9}{'family':<12} {'present':<8} {'size':>9}  licence")
        for r in rows:
            lic = "NON-COMMERCIAL" if r["non_commercial"] else r["licence"]
            present = "yes" if r["present"] else "no"
            print(f"{r['name']:<{w}}  {r.get('kind', 'style'):<9}{r['family']:<12} {present:<8} "
                  f"{_human(r['size_bytes']):>9}  {lic}")
        if any(r["non_commercial"] for r in rows):
            print("\nNON-COMMERCIAL: the AnimeGAN weights are free for academic and other non-commercial use "
                  "only; commercial use needs the author's permission. The embedded hayao-lite is distilled "
                  "from the Hayao weights and is non-commercial too.")
        return EXIT_OK
    if action == "pull":
        names = [s.name for s in store.styles() if s.url] if args.all else args.names
        if not names:
            err("name one or more styles, or use --all")
            return EXIT_USAGE
        failed = 0
        for name in names:
            try:
                path = store.pull(name, mirror=Path(args.mirror) if args.mirror else None, force=args.force,
                                  progress=not args.quiet)
                print(f"{name}: ok ({path})")
            except AnimeliteError as exc:
                failed += 1
                err(str(exc))
        return EXIT_FAILED if failed else EXIT_OK
    if action == "add":
        try:
            style = store.add(Path(args.file), args.name, description=args.description or "",
                              licence=args.licence, non_commercial=args.non_commercial, replace=args.replace,
                              size_multiple=args.size_multiple)
        except AnimeliteError as exc:
            err(str(exc))
            return EXIT_FAILED
        print(f"added {style.name} ({style.family}, {style.source_format}, layout {style.layout}, "
              f"sides a multiple of {style.size_multiple})")
        return EXIT_OK
    if action == "quantize":
        from ..quantize import quantize_style

        try:
            path = quantize_style(store, args.name, Path(args.calib), count=args.count)
        except AnimeliteError as exc:
            err(str(exc))
            return EXIT_FAILED
        print(f"{args.name}: int8 model written to {path}")
        return EXIT_OK
    if action == "verify":
        results = store.verify(args.names or None)
        bad = 0
        for name, status in results:
            print(f"{name}: {status}")
            bad += status not in ("ok", "missing")
        return EXIT_FAILED if bad else EXIT_OK
    raise AssertionError(action)


# -- bench -----------------------------------------------------------------------
def cmd_bench(args) -> int:
    from ..bench import format_table, print_progress, run_bench, to_json

    if args.video:
        return _bench_report(lambda: _bench_video(args))
    photos = Path(args.photos) if args.photos else None
    source = str(photos) if photos else f"{args.count} synthetic 1600x1200 photos"
    if args.sizes is None:
        args.sizes = [512] if args.compare or args.concurrency else [256, 384, 512, 768, 1024]
    if args.also and not args.compare:
        err("--also adds rows to the --compare table; use it with --compare")
        return EXIT_USAGE
    if args.concurrency:
        from ..bench import format_concurrency, print_progress_text, run_concurrency

        def concurrency() -> str:
            rows = run_concurrency(style=args.style, size=args.sizes[0], threads=args.threads, photos_dir=photos,
                                   count=args.count, store=store_for(args), fmt=args.format,
                                   progress=None if args.quiet or args.json else print_progress_text,
                                   **_speed_kwargs(args))
            if args.json:
                import json
                from dataclasses import asdict

                return json.dumps([asdict(r) for r in rows], indent=2)
            return format_concurrency(rows, style=args.style, size=args.sizes[0], source=source)

        return _bench_report(concurrency)
    if args.compare:
        from ..bench import format_compare, print_progress_text, run_compare, to_json_compare

        def compare() -> str:
            out = []
            for size in args.sizes:
                for t in args.threads:
                    rows, notes = run_compare(style=args.style, size=size, threads=t, photos_dir=photos,
                                              count=args.count, store=store_for(args), also=tuple(args.also),
                                              progress=None if args.quiet or args.json else print_progress_text)
                    out.append(to_json_compare(rows, notes, size, t) if args.json else
                               format_compare(rows, notes, style=args.style, size=size, threads=t,
                                              photos=args.count, source=source))
            return ("[" + ",\n".join(out) + "]") if args.json else "\n\n".join(out)

        return _bench_report(compare)

    def table() -> str:
        rows = run_bench(style=args.style, sizes=args.sizes, threads=args.threads, photos_dir=photos,
                         count=args.count, fmt=args.format, store=store_for(args),
                         progress=None if args.json or args.quiet else print_progress,
                         faces=args.faces, face_style=args.face_style, face_size=args.face_size,
                         **_speed_kwargs(args))
        return to_json(rows, source) if args.json else format_table(rows, source)

    return _bench_report(table)


def _bench_video(args) -> str:
    """``bench --video CLIP``: the clip through the video driver once per --threads value (frames in flight)."""
    import tempfile

    from ..pipeline import Stylizer
    from ..video import stylize_video
    from .video import format_video_bench

    size = args.sizes[0] if args.sizes else DEFAULT_SIZE
    out = []
    with tempfile.TemporaryDirectory(prefix="animelite-bench-") as tmp:
        for workers in args.threads:
            stylizer = Stylizer(args.style, size=size, threads=1, sessions=workers, store=store_for(args),
                                faces=args.faces, face_style=args.face_style, face_size=args.face_size,
                                **_speed_kwargs(args))
            summary = stylize_video(args.video, Path(tmp) / f"bench-{workers}.mp4", stylizer=stylizer,
                                    temporal=args.temporal, workers=workers, overwrite=True)
            label = f"{args.style} at {size}, {stylizer.precision}, {workers} worker(s) x 1 thread"
            out.append(format_video_bench(summary, label))
    return "\n\n".join(out)


def _bench_report(make) -> int:
    """Print what *make* returns; an OptionError is a usage error (2), other failures exit 1."""
    try:
        text = make()
    except OptionError as exc:
        err(option_message(exc))
        return EXIT_USAGE
    except (AnimeliteError, FileNotFoundError) as exc:
        err(str(exc))
        return EXIT_FAILED
    print(text)
    return EXIT_OK


# -- parser ----------------------------------------------------------------------
def _shard_arg(text: str) -> tuple[int, int]:
    """--shard I/N with 1 <= I <= N."""
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N (e.g. 2/8)") from None
    if not sep or count < 1 or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"{text!r}: I/N needs 1 <= I <= N (e.g. 1/4 .. 4/4)")
    return index, count


def _size_arg(text: str) -> int | str:
    """--size: a whole number of pixels or 'auto'."""
    if text.strip().lower() == SIZE_AUTO:
        return SIZE_AUTO
    return _positive_int(MIN_SIZE, MAX_SIZE)(text)


def _positive_int(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is outside {lo}..{hi}")
        return v

    return parse


def _speed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"inference runtime (default {DEFAULT_BACKEND})")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default=DEFAULT_PRECISION,
                   help="auto (default): the fastest precision measured as faithful as fp32 for the style on this "
                        "CPU (-v says which ran and why); fp32; bf16 with --backend openvino; int8 (the INT8 model "
                        "is made on first use, or by `models quantize` from your own photos)")
    p.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help=f"{DEFAULT_MODE} (default) or hd: run the model smaller, restore detail guided by the photo")
    p.add_argument("--hd-size", type=_positive_int(MIN_SIZE, MAX_SIZE), default=None,
                   help="working long side of the model in hd mode (default 3/4 of --size)")


def _speed_kwargs(args) -> dict:
    return {"backend": args.backend, "precision": args.precision, "mode": args.mode, "hd_size": args.hd_size}


def _face_args(p: argparse.ArgumentParser, default: str | None) -> None:
    when = f"default {default or 'auto'}" if default != "bench" else \
        "default auto; off under --compare and --concurrency, whose rows time the style alone"
    default = None if default == "bench" else default
    p.add_argument("--faces", choices=FACE_MODES, default=default,
                   help=f"face-aware pass: find faces, stylize each at full detail and paste it back; "
                        f"portrait = the photo is one face, a centred square ({when})")
    p.add_argument("--face-style", default=None, metavar="STYLE",
                   help="stylize the faces with this style (e.g. cute); default: the same style")
    p.add_argument("--face-size", type=_positive_int(MIN_FACE_SIZE, MAX_FACE_SIZE), default=DEFAULT_FACE_SIZE,
                   metavar="PX",
                   help=f"largest side a face crop is stylized at (default {DEFAULT_FACE_SIZE}); "
                        "smaller is faster, larger keeps more detail on big faces")


def _seconds(text: str) -> float:
    """--max-duration: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return v


def _temporal_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temporal", choices=TEMPORAL_MODES, default=DEFAULT_TEMPORAL,
                   help=f"videos: off = each frame on its own; default = statistics shared across frames (reset at "
                        f"scene cuts) and a light blend with the previous frame along the motion; strong = a "
                        f"heavier blend (default {DEFAULT_TEMPORAL})")


def _video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("videos (recognised by content; audio, timestamps and rotation are kept)")
    _temporal_arg(g)
    hi = max(b for _, b in CRF_BOUNDS.values())
    g.add_argument("--crf", type=_positive_int(0, hi), default=None,
                   help=f"quality, lower is better and larger: H.264 0..{CRF_BOUNDS['mp4'][1]} (default "
                        f"{DEFAULT_CRF}), VP9 0..{CRF_BOUNDS['webm'][1]} (default {DEFAULT_WEBM_CRF})")
    g.add_argument("--preset", choices=VIDEO_PRESETS, default=DEFAULT_PRESET,
                   help=f"encoder speed, faster = larger file (default {DEFAULT_PRESET})")
    g.add_argument("--max-duration", type=_seconds, default=None, metavar="SECONDS",
                   help="refuse clips longer than this (checked before decoding when the file declares its length)")
    g.add_argument("--frames-dir", default=None, metavar="DIR",
                   help="also write every stylized frame as a PNG into DIR (a subfolder per clip when there are "
                        "several)")
    g.add_argument("--video-format", choices=VIDEO_FORMATS, default=DEFAULT_VIDEO_FORMAT,
                   help=f"container for videos written into an -o folder: mp4 (H.264) or webm (VP9) "
                        f"(default {DEFAULT_VIDEO_FORMAT}; a file name's suffix decides for one clip)")


def build_parser() -> argparse.ArgumentParser:
    from ..styles import DEFAULT_STYLE

    p = argparse.ArgumentParser(prog="animelite", description="Photo-to-anime style transfer on any CPU.")
    p.add_argument("--version", action="version", version=f"animelite {__version__}")
    p.add_argument("--models", metavar="DIR", default=os.environ.get(MODELS_ENV),
                   help=f"models directory (default: ${MODELS_ENV} or the per-user cache)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stylize", help="stylize files, folders (recursive) and globs")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (or a file name when there is one input)")
    s.add_argument("-s", "--style", default=DEFAULT_STYLE, help=f"style name (default {DEFAULT_STYLE}); "
                   "see `animelite models list`")
    s.add_argument("--size", type=_size_arg, default=DEFAULT_SIZE,
                   help=f"working long side in pixels, {MIN_SIZE} to {MAX_SIZE} (default {DEFAULT_SIZE}; above "
                        f"{AUTO_TILE_TEXT} the model runs in tiles), or '{SIZE_AUTO}': "
                        f"{AUTO_SIZE_MIN}..{AUTO_SIZE_MAX} chosen per photo from its detail (-v says why)")
    s.add_argument("--keep-size", action="store_true", help="write the output at the input's size")
    tiles = s.add_mutually_exclusive_group()
    tiles.add_argument("--tile", type=_positive_int(MIN_TILE, MAX_SIZE), default=None, metavar="N",
                       help="run the model in overlapping N x N tiles whenever the working image is larger "
                            f"(default: {DEFAULT_TILE} tiles, on by themselves above {AUTO_TILE_TEXT})")
    tiles.add_argument("--no-tile", dest="tile", action="store_const", const=0,
                       help="always run the whole working image at once (needs far more memory)")
    s.add_argument("--format", choices=FORMAT_CHOICES, help="output format (default: the input's, else png)")
    s.add_argument("--quality", type=_positive_int(MIN_QUALITY, MAX_QUALITY), default=DEFAULT_QUALITY,
                   help=f"jpg/webp quality (default {DEFAULT_QUALITY})")
    s.add_argument("--threads", type=_positive_int(1, MAX_THREADS), default=None, help="threads for inference")
    s.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: skip them)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    s.add_argument("-v", "--verbose", action="store_true", help="print per-stage timings for each image")
    s.add_argument("--summary", action="store_true",
                   help="print the median time of each stage over the photos stylized, and the total")
    s.add_argument("--contact-sheet", action="store_true",
                   help="write index.html into the output folder: each photo before and after, side by side, "
                        "with its working size, faces and per-stage times; prints its path and the --summary "
                        "table (an output folder only)")
    _face_args(s, default=None)
    _speed_args(s)
    s.add_argument("--shard", type=_shard_arg, default=None, metavar="I/N",
                   help="stylize only piece I of N (1-based) of the inputs, split by a stable hash of each "
                        "file's relative path: N runs with I=1..N (a Slurm array, Kubernetes indexed Jobs, "
                        "several machines) cover every input exactly once; -o must be a folder")
    s.add_argument("--ray", nargs="?", const="local", default=None, metavar="local|auto|ADDRESS",
                   help="run on Ray Data (needs `pip install 'animelite[ray]'`): 'local' (the default) starts Ray "
                        "here, 'auto' joins the cluster in RAY_ADDRESS, an address joins that cluster; one warm "
                        "model per actor, a manifest OUT/animelite-manifest.jsonl; -o must be a folder")
    s.add_argument("--ray-workers", type=_positive_int(1, 100000), default=None, metavar="N",
                   help="with --ray: actors (default: the cluster's CPUs)")
    s.add_argument("-j", "--jobs", type=_positive_int(1, MAX_SESSIONS), default=None,
                   help="images in flight at once, each with its own session (default: one per core when "
                        "there are several inputs and no --threads; threads are shared out)")
    _video_args(s)
    s.set_defaults(func=cmd_stylize)

    m = sub.add_parser("models", help="list, pull, add and verify models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="styles, whether present, size and licence")
    pull = msub.add_parser("pull", help="download (or copy from a local mirror), verify and convert")
    pull.add_argument("names", nargs="*", metavar="NAME")
    pull.add_argument("--all", action="store_true", help="every catalog style")
    pull.add_argument("--from", dest="mirror", metavar="DIR", help="a local mirror folder instead of the URL")
    pull.add_argument("--force", action="store_true", help="fetch again even when present and valid")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add = msub.add_parser("add", help="add a local .tflite / .pt / .onnx generator as a style")
    add.add_argument("file")
    add.add_argument("--name", required=True)
    add.add_argument("--description", default="")
    add.add_argument("--licence", default="unknown (added by the user)", help="licence text shown by `models list`")
    add.add_argument("--non-commercial", action="store_true",
                     help="mark the weights non-commercial (a notice is shown at first use)")
    add.add_argument("--size-multiple", type=_positive_int(1, 256), default=None,
                     help="the multiple the model's sides need (default 8 for ONNX, 4 for AnimeGANv2)")
    add.add_argument("--replace", action="store_true", help="replace a user style of the same name")
    qz = msub.add_parser("quantize", help="make the INT8 model of a style, calibrated on your photos")
    qz.add_argument("name", metavar="STYLE")
    qz.add_argument("--calib", required=True, metavar="DIR", help="folder of photos to calibrate on")
    qz.add_argument("--count", type=_positive_int(1, 1000), default=None, help="photos to use (default 16)")
    ver = msub.add_parser("verify", help="check the checksums of the models present")
    ver.add_argument("names", nargs="*", metavar="NAME")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="per-stage timing table (a benchmark, not a test)")
    b.add_argument("--style", default=DEFAULT_STYLE)
    b.add_argument("--photos", metavar="DIR", help="folder of photos (default: synthetic photos)")
    b.add_argument("--count", type=_positive_int(1, 1000), default=6, help="photos per row (default 6)")
    b.add_argument("--sizes", type=_positive_int(MIN_SIZE, 4096), nargs="+", default=None,
                   help="working sizes (default 256 384 512 768 1024; 512 with --compare)")
    b.add_argument("--threads", type=_positive_int(1, MAX_THREADS), nargs="+", default=[1, 2])
    b.add_argument("--format", choices=FORMAT_CHOICES, default="jpg", help="encode format (default jpg)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("--compare", action="store_true",
                   help="rows for each backend x precision x mode with speed-up over a PyTorch reference and "
                        "fidelity vs fp32 (sizes default to 512 here)")
    b.add_argument("--also", nargs="+", default=[], metavar="STYLE",
                   help="with --compare: add these styles' rows to the table (speed-up vs --style's PyTorch "
                        "reference, fidelity vs --style's fp32 output), e.g. --style hayao --also hayao-lite")
    b.add_argument("--concurrency", action="store_true",
                   help="images/s with 1, 2 and 4 images in flight (one session each) at --sizes[0] (default 512)")
    b.add_argument("--video", metavar="CLIP", default=None,
                   help="stylize this clip (to a temporary file) and print per-stage ms per frame and frames/s, "
                        "for each --threads value as the number of frames in flight (one session each)")
    _temporal_arg(b)
    b.add_argument("-q", "--quiet", action="store_true")
    _face_args(b, default="bench")
    _speed_args(b)
    b.set_defaults(func=cmd_bench)

    from ..server.command import add_serve_parser  # flags only; FastAPI/uvicorn are imported when it runs

    add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except OptionError as exc:  # caught after parsing, by the pipeline: still a usage error
        err(option_message(exc))
        return EXIT_USAGE
    except AnimeliteError as exc:
        err(str(exc))
        return EXIT_FAILED

