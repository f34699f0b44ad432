"""Where a ``stylize`` run writes: each input's output path and format, and the outputs it must refuse.

No output may replace an input of the same run (compared by resolved path
and by file identity, so links and other spellings are caught too), and two
inputs may not share an output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..options import FORMAT_EXTENSIONS, canonical_format, format_for_suffix


@dataclass
class Job:
    src: Path
    dst: Path
    fmt: str  #: canonical output format ("jpeg", "png", "webp")


def default_format(src: Path) -> str:
    """The output format for *src* in a folder run: the input's own when it is an output format, else png."""
    return format_for_suffix(src.suffix) or "png"


def plan_outputs(inputs: list[tuple[Path, Path]], out: Path, single_file: bool,
                 fmt: str | None) -> tuple[list[Job], list[tuple[Path, str]]]:
    """(jobs, refused): each input's output under *out* (or *out* itself for one file), and the inputs whose
    output would replace an input of this run or another input's output, with the reason."""
    by_path = {_resolved(src): src for src, _ in inputs}
    by_id = {}
    for src, _ in inputs:
        key = _file_id(src)
        if key is not None:
            by_id[key] = src
    jobs: list[Job] = []
    refused: list[tuple[Path, str]] = []
    claimed: dict[Path, Path] = {}
    for src, rel in inputs:
        job_fmt = canonical_format(fmt) if fmt else (format_for_suffix(out.suffix) if single_file
                                                       else default_format(src))
        dst = out if single_file else (out / rel).with_suffix(FORMAT_EXTENSIONS[job_fmt])
        key = _resolved(dst)
        victim = by_path.get(key) or by_id.get(_file_id(dst))
        if victim is not None:
            which = "the input" if victim == src else f"the input {victim} of this run"
            refused.append((src, f"output {dst} would overwrite {which}"))
            continue
        if key in claimed:
            refused.append((src, f"output {dst} is already the output of {claimed[key]}"))
            continue
        claimed[key] = src
        jobs.append(Job(src, dst, job_fmt))
    return jobs, refused


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return Path(os.path.abspath(path))


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: the same file under another name (a hard link) has the same."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)
