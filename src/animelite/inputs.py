"""Which files a run reads: arguments to input files (literal paths, globs, folder walks, --shard pieces).

Pure path logic, no stylizing, so each rule is easy to test on its own. The
CLI (``animelite.cli.files`` re-exports these names) and the distributed
driver share this one walker, so a folder lists the same files in both.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from .options import IMAGE_SUFFIXES, VIDEO_SUFFIXES

#: what a folder walk picks up (content decides afterwards what each file is)
WALK_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


@dataclass
class Inputs:
    """What the arguments named: ``files`` as (file, path relative to its root), arguments that matched
    nothing, and folders that could not be read (their files are neither stylized nor silently skipped)."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  #: folders a walk could not list, and why


def expand(arg: str) -> list[Path]:
    """The paths one argument names: itself when it exists (even with ``[``, ``*`` or ``?`` in its name),
    else its glob matches."""
    if os.path.exists(arg):
        return [Path(arg)]
    if glob.has_magic(arg):
        return [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if os.path.exists(m)]
    return []


def collect_inputs(paths: list[str], output: str | os.PathLike[str] | None = None) -> Inputs:
    """Every input file the arguments name, each once, in argument order (folders sorted, recursive).

    *output* (the ``-o`` path) is left out of folder walks and glob matches
    that reach it from outside, so an output folder inside an input folder is
    not stylized again on the next run (``anime/anime/...``).
    """
    found = Inputs()
    skip = _stat_or_none(output) if output is not None else None
    for arg in paths:
        matches = expand(arg)
        if not matches:
            found.missing.append(arg)
            continue
        if skip is not None and not os.path.exists(arg):  # a glob: leave out what it found in the output
            root = _glob_root(arg)
            matches = [m for m in matches if not _within_output(m, root, skip)]
        for m in matches:
            if m.is_dir():
                found.files.extend(_walk(m, skip, found.unreadable))
            else:
                found.files.append((m, Path(m.name)))
    seen, unique = set(), []
    for f, rel in found.files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    found.files = unique
    return found


def _walk(root: Path, skip: os.stat_result | None, unreadable: list[tuple[Path, str]]) -> list[tuple[Path, Path]]:
    """The image and video files under *root*, sorted by their path relative to it, without the output's subtree;
    folders that cannot be listed are added to *unreadable*."""

    def cannot_list(exc: OSError) -> None:
        unreadable.append((Path(exc.filename) if exc.filename else root, exc.strerror or str(exc)))

    files = []
    for folder, dirs, names in os.walk(root, onerror=cannot_list):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not _is_output(here / d, skip)]
        for name in names:
            f = here / name
            if (f.suffix.lower() in WALK_SUFFIXES and not name.startswith(".") and f.is_file()
                    and not _is_output(f, skip)):
                files.append((f, f.relative_to(root)))
    return sorted(files, key=lambda item: item[1].parts)


def _glob_root(pattern: str) -> Path:
    """The fixed folder a glob searches from: its leading components without wildcards."""
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def _within_output(match: Path, root: Path, skip: os.stat_result) -> bool:
    """Whether *match* is the output or lies inside it, looking only below the glob's fixed *root*."""
    p = match
    while len(p.parts) > len(root.parts):
        if _is_output(p, skip):
            return True
        p = p.parent
    return False


def _stat_or_none(path: str | os.PathLike[str]) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _is_output(path: Path, skip: os.stat_result | None) -> bool:
    """Whether *path* is the output (the same file or folder, however it is spelled)."""
    if skip is None:
        return False
    st = _stat_or_none(path)
    return st is not None and os.path.samestat(st, skip)


def shard_of(rel: Path, count: int) -> int:
    """Which of *count* shards (1..count) the input at relative path *rel* belongs to.

    A stable hash (SHA-256 of the path's POSIX form, UTF-8) rather than Python's
    ``hash`` (salted per process) or the listing order (differs between
    machines and as files come and go): every machine, run and scheduler puts
    a file in the same shard, so N pieces of one job neither overlap nor leave
    a gap, whatever order they run in.
    """
    digest = hashlib.sha256(rel.as_posix().encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def take_shard(files: list[tuple[Path, Path]], index: int, count: int) -> list[tuple[Path, Path]]:
    """The inputs of shard *index* of *count* (1-based), in their original order."""
    return [(f, rel) for f, rel in files if shard_of(rel, count) == index]


# ---- URIs: any filesystem pyarrow reads (s3://, gs://, abfs://, hdfs://, file://, mock://) -------------------

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: object) -> bool:
    """Whether *path* is a ``scheme://...`` URI (passed to pyarrow untouched, never made a local Path)."""
    return isinstance(path, str) and _URI.match(path) is not None


def join_uri(root: str, rel: str | PurePosixPath) -> str:
    """*root* with the relative path *rel* appended (percent-encoded; a query such as ``?region=`` is kept).

    Plain string work, not ``urlunsplit`` (which turns ``file:///x`` into ``file:/x``): the root stays as given.
    """
    base, sep, query = root.partition("?")
    return base.rstrip("/") + "/" + quote(PurePosixPath(rel).as_posix(), safe="/") + sep + query


def uri_with_suffix(uri: str, suffix: str) -> str:
    """*uri* with its file name's suffix replaced (``.../a.jpeg`` -> ``.../a.png``), query kept."""
    base, sep, query = uri.partition("?")
    folder, _, name = base.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{folder}/{stem}{suffix}{sep}{query}"


class Filesystems:
    """pyarrow filesystems for URIs: ``resolve(uri) -> (filesystem, path on it)``.

    One filesystem per (scheme, authority, query) is built with
    ``pyarrow.fs.FileSystem.from_uri`` and reused, so a 10^7-file job does not
    build one per file (an S3 one resolves its bucket's region over the network
    unless the URI says ``?region=``). The path of a later URI on the same
    filesystem is derived the way ``from_uri`` mapped the first one; when that
    mapping cannot be seen (an empty path), ``from_uri`` is asked again.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], tuple[object, str | None]] = {}

    def resolve(self, uri: str) -> tuple[object, str]:
        from pyarrow.fs import FileSystem

        parts = urlsplit(uri)
        key = (parts.scheme.lower(), parts.netloc, parts.query)
        tail = unquote(parts.path).lstrip("/")
        hit = self._cache.get(key)
        if hit is not None and hit[1] is not None:
            return hit[0], hit[1] + tail
        fs, path = FileSystem.from_uri(uri)
        prefix = path[: len(path) - len(tail)] if tail and path.endswith(tail) else None
        self._cache[key] = (fs, prefix)
        return fs, path


def _file_type(fs, path: str):
    from pyarrow.fs import FileType

    try:
        return fs.get_file_info(path).type
    except OSError:
        return FileType.Unknown


def exists(path: str | os.PathLike[str], filesystems: Filesystems | None = None) -> bool:
    """Whether a local path or a URI names something (a file or a folder)."""
    if not is_uri(path):
        return os.path.lexists(path)
    from pyarrow.fs import FileType

    fs, p = (filesystems or Filesystems()).resolve(str(path))
    return _file_type(fs, p) not in (FileType.NotFound, FileType.Unknown)


def read_bytes(path: str | os.PathLike[str], filesystems: Filesystems | None = None) -> bytes:
    """The contents of a local file or of a URI (through pyarrow)."""
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    fs, p = (filesystems or Filesystems()).resolve(str(path))
    with fs.open_input_stream(p) as f:
        return f.read()


def collect_uris(uris: list[str], output: str | None = None,
                 filesystems: Filesystems | None = None) -> Inputs:
    """:func:`collect_inputs` for URIs: a file URI is itself (relative path: its name), a folder URI is walked
    recursively through ``pyarrow.fs`` (image suffixes only, hidden files left out, sorted by relative path,
    the output's subtree left out). ``files`` holds (URI, relative PurePosixPath) pairs."""
    from pyarrow.fs import FileSelector, FileType

    fss = filesystems or Filesystems()
    found = Inputs()
    skip = None
    if output is not None and is_uri(output):
        ofs, opath = fss.resolve(output)
        skip = (ofs.type_name, opath.rstrip("/"))
    seen = set()
    for uri in uris:
        fs, root = fss.resolve(uri)
        kind = _file_type(fs, root)
        if kind == FileType.File:
            items = [(uri, PurePosixPath(PurePosixPath(root).name))]
        elif kind == FileType.Directory:
            try:
                infos = fs.get_file_info(FileSelector(root, recursive=True))
            except OSError as exc:
                found.unreadable.append((uri, str(exc)))  # type: ignore[arg-type]
                continue
            base = root.rstrip("/")
            items = []
            for info in infos:
                name = info.base_name
                if (info.type != FileType.File or name.startswith(".")
                        or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES):
                    continue
                if skip is not None and skip[0] == fs.type_name and (
                        info.path == skip[1] or info.path.startswith(skip[1] + "/")):
                    continue
                rel = PurePosixPath(info.path[len(base):].lstrip("/"))
                items.append((join_uri(uri, rel), rel))
            items.sort(key=lambda item: item[1].parts)
        else:
            found.missing.append(uri)
            continue
        for item in items:
            if item[0] not in seen:
                seen.add(item[0])
                found.files.append(item)  # type: ignore[arg-type]
    return found
