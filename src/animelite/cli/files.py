"""Which files a ``stylize`` run reads: arguments to input files (literal paths, globs, folder walks).

Pure path logic, no stylizing, so each rule is easy to test on its own.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..options import IMAGE_SUFFIXES, VIDEO_SUFFIXES

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
