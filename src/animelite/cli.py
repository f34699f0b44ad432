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

    try:
        stylizer = Stylizer(args.style, size=args.size, keep_size=args.keep_size, threads=args.threads,
                            store=_store(args), notice=note)
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
    show = not args.quiet and sys.stderr.isatty()
    bar = tqdm(plan, unit="img", disable=not show, file=sys.stderr)
    for src, dst, fmt in bar:
        bar.set_postfix_str(src.name[:30])
        if dst.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            result = stylizer.stylize_file(src, dst, fmt=fmt, quality=args.quality, overwrite=args.overwrite)
        except AnimeliteError as exc:
            failed.append((src, str(exc)))
            continue
        except (OSError, ValueError) as exc:  # e.g. a full disk or an unwritable folder
            failed.append((src, f"{type(exc).__name__}: {exc}"))
            continue
        done += 1
        if args.verbose:
            t = result.timings
            stages = " ".join(f"{k}={v * 1000:.0f}ms" for k, v in t.items())
            tqdm.write(f"{src} -> {dst} ({result.working_size[0]}x{result.working_size[1]}; {stages})",
                       file=sys.stderr)
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
        print(f"{'style':<{w}}  {'family':<12} {'present':<8} {'size':>9}  licence")
        for r in rows:
            lic = "NON-COMMERCIAL" if r["non_commercial"] else r["licence"]
            print(f"{r['name']:<{w}}  {r['family']:<12} {'yes' if r['present'] else 'no':<8} "
                  f"{_human(r['size_bytes']):>9}  {lic}")
        if any(r["non_commercial"] for r in rows):
            print("\nNON-COMMERCIAL: the AnimeGAN weights are free for academic and other non-commercial use "
                  "only; commercial use needs the author's permission.")
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
    try:
        rows = run_bench(style=args.style, sizes=args.sizes, threads=args.threads, photos_dir=photos,
                         count=args.count, fmt=args.format, store=_store(args),
                         progress=None if args.json or args.quiet else print_progress)
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
    s.add_argument("--size", type=_positive_int(64, 4096), default=512,
                   help="working long side in pixels (default 512)")
    s.add_argument("--keep-size", action="store_true", help="write the output at the input's size")
    s.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: the input's, else png)")
    s.add_argument("--quality", type=_positive_int(1, 100), default=92, help="jpg/webp quality (default 92)")
    s.add_argument("--threads", type=_positive_int(1, 256), default=None, help="threads for inference")
    s.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: skip them)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    s.add_argument("-v", "--verbose", action="store_true", help="print per-stage timings for each image")
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
    ver = msub.add_parser("verify", help="check the checksums of the models present")
    ver.add_argument("names", nargs="*", metavar="NAME")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="per-stage timing table (a benchmark, not a test)")
    b.add_argument("--style", default=DEFAULT_STYLE)
    b.add_argument("--photos", metavar="DIR", help="folder of photos (default: synthetic photos)")
    b.add_argument("--count", type=_positive_int(1, 1000), default=6, help="photos per row (default 6)")
    b.add_argument("--sizes", type=_positive_int(64, 4096), nargs="+", default=[256, 384, 512, 768, 1024])
    b.add_argument("--threads", type=_positive_int(1, 256), nargs="+", default=[1, 2])
    b.add_argument("--format", choices=OUTPUT_FORMATS, default="jpg", help="encode format (default jpg)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.add_argument("-q", "--quiet", action="store_true")
    b.set_defaults(func=cmd_bench)
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
