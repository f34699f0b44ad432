"""The ``animelite`` command line: stylize, models, bench."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from . import __version__
from .errors import AnimeliteError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
OUTPUT_FORMATS = ("png", "jpg", "webp")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(msg: str) -> None:
    print(f"animelite: error: {msg}", file=sys.stderr)


def _store(args):
    from .store import ModelStore

    return ModelStore(Path(args.models) if args.models else None)


# -- stylize -------------------------------------------------------------------
def _collect_inputs(paths: list[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(file, path relative to its root) for every input; and the arguments that matched nothing."""
    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    for arg in paths:
        matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))] if glob.has_magic(arg) else [Path(arg)]
        matches = [m for m in matches if m.exists()]
        if not matches:
            missing.append(arg)
            continue
        for m in matches:
            if m.is_dir():
                for f in sorted(m.rglob("*")):
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                        found.append((f, f.relative_to(m)))
            else:
                found.append((m, Path(m.name)))
    seen, unique = set(), []
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, missing


def _default_format(src: Path) -> str:
    suffix = src.suffix.lower().lstrip(".")
    return {"jpeg": "jpg"}.get(suffix, suffix) if suffix in ("jpg", "jpeg", "png", "webp") else "png"


def cmd_stylize(args) -> int:
    from tqdm import tqdm

    from .pipeline import Stylizer

    inputs, missing = _collect_inputs(args.paths)
    for arg in missing:
        _err(f"{arg}: no such file, folder or matching glob")
    if not inputs:
        _err("no input images found")
        return EXIT_FAILED
    out = Path(args.output)
    single_file_out = len(inputs) == 1 and out.suffix.lower().lstrip(".") in OUTPUT_FORMATS + ("jpeg",)
    if not single_file_out and out.exists() and not out.is_dir():
        _err(f"output {out} exists and is not a folder")
        return EXIT_USAGE

    def note(msg: str) -> None:
        print(f"animelite: note: {msg}", file=sys.stderr)

    if args.jobs is None:
        # Two images in flight with one thread each beat one image with two
        # threads (1.30 vs 1.25 images/s at 512 on 2 cores, `bench --concurrency`).
        from .engine import default_threads

        args.jobs = min(default_threads(), len(inputs)) if len(inputs) > 1 and args.threads is None else 1
    try:
        stylizer = Stylizer(args.style, size=args.size, keep_size=args.keep_size, threads=args.threads,
                            store=_store(args), notice=note, faces=args.faces, face_style=args.face_style,
                            face_size=args.face_size, sessions=args.jobs, tile=args.tile, **_speed_kwargs(args))
    except AnimeliteError as exc:
        _err(str(exc))
        return EXIT_FAILED

    plan: list[tuple[Path, Path, str]] = []
    claimed: dict[Path, Path] = {}
    failed: list[tuple[Path, str]] = []
    for src, rel in inputs:
        fmt = args.format or (out.suffix.lower().lstrip(".") if single_file_out else _default_format(src))
        fmt = "jpg" if fmt == "jpeg" else fmt
        dst = out if single_file_out else (out / rel).with_suffix("." + fmt)
        if dst.resolve() == src.resolve():
            failed.append((src, f"output {dst} would overwrite the input"))
            continue
        if dst.resolve() in claimed:
            failed.append((src, f"output {dst} is already the output of {claimed[dst.resolve()]}"))
            continue
        claimed[dst.resolve()] = src
        plan.append((src, dst, fmt))

    done = skipped = 0
    todo = []
    for src, dst, fmt in plan:
        if dst.exists() and not args.overwrite:
            skipped += 1
        else:
            todo.append((src, dst, fmt))

    def process(item):
        src, dst, fmt = item
        try:
            return item, stylizer.stylize_file(src, dst, fmt=fmt, quality=args.quality, overwrite=args.overwrite), None
        except AnimeliteError as exc:
            return item, None, str(exc)
        except (OSError, ValueError) as exc:  # e.g. a full disk or an unwritable folder
            return item, None, f"{type(exc).__name__}: {exc}"

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
            continue
        done += 1
        if args.verbose:
            stages = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in result.timings.items())
            faces = ""
            if result.faces is not None:
                f = result.faces
                sizes = ",".join(str(c) for c in f.crop_sizes)
                faces = f"; {f.found} face(s) found, {f.stylized} restyled" + (f" at {sizes} px" if sizes else "")
            tqdm.write(f"{src} -> {dst} ({result.working_size[0]}x{result.working_size[1]}; {stages}{faces})",
                       file=sys.stderr)
    if pool is not None:
        pool.shutdown()
    bar.close()
    for src, why in failed:
        _err(f"{src}: {why}" if str(src) not in why else why)
    if not args.quiet or failed:
        summary = f"{done} stylized, {skipped} skipped (output exists; --overwrite to redo), {len(failed)} failed"
        print(summary, file=sys.stderr)
    return EXIT_FAILED if failed or missing else EXIT_OK


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
    store = _store(args)
    action = args.models_cmd
    if action == "list":
        rows = store.list_rows()
        print(f"models directory: {store.root}")
        w = max(len(r["name"]) for r in rows)
        print(f"{'style':<{w}}  {'kind':<9}{'family':<12} {'present':<8} {'size':>9}  licence")
        for r in rows:
            lic = "NON-COMMERCIAL" if r["non_commercial"] else r["licence"]
            print(f"{r['name']:<{w}}  {r.get('kind', 'style'):<9}{r['family']:<12} {'yes' if r['present'] else 'no':<8} "
                  f"{_human(r['size_bytes']):>9}  {lic}")
        if any(r["non_commercial"] for r in rows):
            print("\nNON-COMMERCIAL: the AnimeGAN weights are free for academic and other non-commercial use "
                  "only; commercial use needs the author's permission. The embedded hayao-lite is distilled "
                  "from the Hayao weights and is non-commercial too.")
        return EXIT_OK
    if action == "pull":
        names = [s.name for s in store.styles() if s.url] if args.all else args.names
        if not names:
            _err("name one or more styles, or use --all")
            return EXIT_USAGE
        failed = 0
        for name in names:
            try:
                path = store.pull(name, mirror=Path(args.mirror) if args.mirror else None, force=args.force,
                                  progress=not args.quiet)
                print(f"{name}: ok ({path})")
            except AnimeliteError as exc:
                failed += 1
                _err(str(exc))
        return EXIT_FAILED if failed else EXIT_OK
    if action == "add":
        try:
            style = store.add(Path(args.file), args.name, description=args.description or "",
                              licence=args.licence, non_commercial=args.non_commercial, replace=args.replace,
                              size_multiple=args.size_multiple)
        except AnimeliteError as exc:
            _err(str(exc))
            return EXIT_FAILED
        print(f"added {style.name} ({style.family}, {style.source_format}, layout {style.layout}, "
              f"sides a multiple of {style.size_multiple})")
        return EXIT_OK
    if action == "quantize":
        from .quantize import quantize_style

        try:
            path = quantize_style(store, args.name, Path(args.calib), count=args.count)
        except AnimeliteError as exc:
            _err(str(exc))
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
    from .bench import format_table, print_progress, run_bench, to_json

    photos = Path(args.photos) if args.photos else None
    source = str(photos) if photos else f"{args.count} synthetic 1600x1200 photos"
    if args.sizes is None:
        args.sizes = [512] if args.compare or args.concurrency else [256, 384, 512, 768, 1024]
    if args.also and not args.compare:
        _err("--also adds rows to the --compare table; use it with --compare")
        return EXIT_USAGE
    if args.concurrency:
        from .bench import format_concurrency, print_progress_text, run_concurrency

        try:
            rows = run_concurrency(style=args.style, size=args.sizes[0], threads=args.threads, photos_dir=photos,
                                   count=args.count, store=_store(args), fmt=args.format,
                                   progress=None if args.quiet or args.json else print_progress_text,
                                   **_speed_kwargs(args))
        except (AnimeliteError, FileNotFoundError) as exc:
            _err(str(exc))
            return EXIT_FAILED
        if args.json:
            import json
            from dataclasses import asdict

            print(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            print(format_concurrency(rows, style=args.style, size=args.sizes[0], source=source))
        return EXIT_OK
    if args.compare:
        from .bench import format_compare, print_progress_text, run_compare, to_json_compare

        out = []
        try:
            for size in args.sizes:
                for t in args.threads:
                    rows, notes = run_compare(style=args.style, size=size, threads=t, photos_dir=photos,
                                              count=args.count, store=_store(args), also=tuple(args.also),
                                              progress=None if args.quiet or args.json else print_progress_text)
                    out.append(to_json_compare(rows, notes, size, t) if args.json else
                               format_compare(rows, notes, style=args.style, size=size, threads=t,
                                              photos=args.count, source=source))
        except (AnimeliteError, FileNotFoundError) as exc:
            _err(str(exc))
            return EXIT_FAILED
        print(("[" + ",\n".join(out) + "]") if args.json else "\n\n".join(out))
        return EXIT_OK
    try:
        rows = run_bench(style=args.style, sizes=args.sizes, threads=args.threads, photos_dir=photos,
                         count=args.count, fmt=args.format, store=_store(args),
                         progress=None if args.json or args.quiet else print_progress,
                         faces=args.faces, face_style=args.face_style, face_size=args.face_size,
                         **_speed_kwargs(args))
    except (AnimeliteError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_FAILED
    print(to_json(rows, source) if args.json else format_table(rows, source))
    return EXIT_OK


# -- parser ----------------------------------------------------------------------
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
    from .engine import BACKENDS, PRECISIONS
    from .pipeline import MODES

    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="inference runtime (default onnxruntime)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default); bf16 with --backend openvino; int8 after `models quantize`")
    p.add_argument("--mode", choices=MODES, default="full",
                   help="full (default) or hd: run the model smaller, restore detail guided by the photo")
    p.add_argument("--hd-size", type=_positive_int(64, 8192), default=None,
                   help="working long side of the model in hd mode (default 3/4 of --size)")


def _speed_kwargs(args) -> dict:
    return {"backend": args.backend, "precision": args.precision, "mode": args.mode, "hd_size": args.hd_size}


def _face_args(p: argparse.ArgumentParser, default: str | None) -> None:
    from .faces.stage import DEFAULT_FACE_SIZE, MODES

    when = ("default: auto when the faces extra and the yunet model are installed, else off" if default is None
            else f"default {default}")
    p.add_argument("--faces", choices=MODES, default=default,
                   help=f"face-aware pass: find faces, stylize each at full detail and paste it back; "
                        f"portrait = the photo is one face, a centred square ({when})")
    p.add_argument("--face-style", default=None, metavar="STYLE",
                   help="stylize the faces with this style (e.g. cute); default: the same style")
    p.add_argument("--face-size", type=_positive_int(64, 2048), default=DEFAULT_FACE_SIZE, metavar="PX",
                   help=f"largest side a face crop is stylized at (default {DEFAULT_FACE_SIZE}); "
                        "smaller is faster, larger keeps more detail on big faces")


def build_parser() -> argparse.ArgumentParser:
    from .styles import DEFAULT_STYLE

    p = argparse.ArgumentParser(prog="animelite", description="Photo-to-anime style transfer on any CPU.")
    p.add_argument("--version", action="version", version=f"animelite {__version__}")
    p.add_argument("--models", metavar="DIR", default=os.environ.get("ANIMELITE_MODELS"),
                   help="models directory (default: $ANIMELITE_MODELS or the per-user cache)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stylize", help="stylize files, folders (recursive) and globs")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (or a file name when there is one input)")
    s.add_argument("-s", "--style", default=DEFAULT_STYLE, help=f"style name (default {DEFAULT_STYLE}); "
                   "see `animelite models list`")
    s.add_argument("--size", type=_positive_int(64, 8192), default=512,
                   help="working long side in pixels (default 512; above ~1.5 MP the model runs in tiles)")
    s.add_argument("--keep-size", action="store_true", help="write the output at the input's size")
    tiles = s.add_mutually_exclusive_group()
    tiles.add_argument("--tile", type=_positive_int(128, 8192), default=None, metavar="N",
                       help="run the model in overlapping N x N tiles whenever the working image is larger "
                            "(default: 384 tiles, on by themselves above 1536x1024 pixels)")
    tiles.add_argument("--no-tile", dest="tile", action="store_const", const=0,
                       help="always run the whole working image at once (needs far more memory)")
    s.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: the input's, else png)")
    s.add_argument("--quality", type=_positive_int(1, 100), default=92, help="jpg/webp quality (default 92)")
    s.add_argument("--threads", type=_positive_int(1, 256), default=None, help="threads for inference")
    s.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: skip them)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    s.add_argument("-v", "--verbose", action="store_true", help="print per-stage timings for each image")
    _face_args(s, default=None)
    _speed_args(s)
    s.add_argument("-j", "--jobs", type=_positive_int(1, 64), default=None,
                   help="images in flight at once, each with its own session (default: one per core when "
                        "there are several inputs and no --threads; threads are shared out)")
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
    b.add_argument("--sizes", type=_positive_int(64, 4096), nargs="+", default=None,
                   help="working sizes (default 256 384 512 768 1024; 512 with --compare)")
    b.add_argument("--threads", type=_positive_int(1, 256), nargs="+", default=[1, 2])
    b.add_argument("--format", choices=OUTPUT_FORMATS, default="jpg", help="encode format (default jpg)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("--compare", action="store_true",
                   help="rows for each backend x precision x mode with speed-up over a PyTorch reference and "
                        "fidelity vs fp32 (sizes default to 512 here)")
    b.add_argument("--also", nargs="+", default=[], metavar="STYLE",
                   help="with --compare: add these styles' rows to the table (speed-up vs --style's PyTorch "
                        "reference, fidelity vs --style's fp32 output), e.g. --style hayao --also hayao-lite")
    b.add_argument("--concurrency", action="store_true",
                   help="images/s with 1, 2 and 4 images in flight (one session each) at --sizes[0] (default 512)")
    b.add_argument("-q", "--quiet", action="store_true")
    _face_args(b, default="off")
    _speed_args(b)
    b.set_defaults(func=cmd_bench)

    from .server.command import add_serve_parser  # flags only; FastAPI/uvicorn are imported when it runs

    add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except AnimeliteError as exc:
        _err(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
