"""Which files a ``stylize`` run reads: arguments to input files (literal paths, globs, folder walks).

Pure path logic, no stylizing, so each rule is easy to test on its own.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..options import IMAGE_SUFFIXES


@dataclass
class Inputs:
    """What the arguments named: ``files`` as (file, path relative to its root), arguments that matched nothing."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def expand(arg: str) -> list[Path]:
    """The paths one argument names: itself when it exists (even with ``[``, ``*`` or ``?`` in its name),
    else its glob matches."""
    if os.path.exists(arg):
        return [Path(arg)]
    if glob.has_magic(arg):
        return [Path(m) for m in sorted(glob.glob(arg, recursive=True)) if os.path.exists(m)]
    return []


def collect_inputs(paths: list[str]) -> Inputs:
    """Every input file the arguments name, each once, in argument order (folders sorted, recursive)."""
    found = Inputs()
    for arg in paths:
        matches = expand(arg)
        if not matches:
            found.missing.append(arg)
            continue
        for m in matches:
            if m.is_dir():
                for f in sorted(m.rglob("*")):
                    if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                        found.files.append((f, f.relative_to(m)))
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
