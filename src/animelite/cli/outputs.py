"""Where a ``stylize`` run writes: what ``-o`` means, each input's output path and format, what to refuse.

``-o`` is a file when there is one input and its name ends in an output
format's suffix (.png, .jpg, .jpeg, .webp; .mp4, .webm for a video), else a folder; a trailing slash
always makes it a folder. Names that cannot be right (``x.gif``, an existing
folder named ``x.png``, ``--format webp -o x.png``) are usage errors. No
output may replace an input of the same run (compared by resolved path and
by file identity, so links and other spellings are caught too), and two
inputs may not share an output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..options import (DEFAULT_VIDEO_FORMAT, FORMAT_EXTENSIONS, IMAGE_SUFFIXES, VIDEO_FORMAT_EXTENSIONS,
                       VIDEO_SUFFIXES, canonical_format, format_for_suffix)

#: suffixes of image, image-like and video files: an output named so is meant as a file, never as a folder
_FILE_LIKE = IMAGE_SUFFIXES | VIDEO_SUFFIXES | {".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ico", ".tga",
                                                ".svg", ".psd", ".dng", ".pdf"}
#: output suffix -> video format ("mp4", "webm")
_VIDEO_OUT = {ext: fmt for fmt, ext in VIDEO_FORMAT_EXTENSIONS.items()}
_NAMES = ".png, .jpg or .webp for photos, .mp4 or .webm for videos"


class OutputUsageError(ValueError):
    """``-o`` (with ``--format`` and the number of inputs) cannot be what the user meant: exit status 2."""


@dataclass
class Job:
    src: Path
    dst: Path
    fmt: str  #: canonical output format ("jpeg", "png", "webp"; "mp4" or "webm" for a video)
    kind: str = "photo"  #: "photo" or "video"


def output_target(arg: str, count: int, fmt: str | None) -> tuple[Path, bool]:
    """(the output path, whether it is one file) for ``-o`` *arg* with *count* inputs and ``--format`` *fmt*."""
    out = Path(arg)
    suffix = out.suffix.lower()
    named = (format_for_suffix(suffix) or _VIDEO_OUT.get(suffix)) if suffix else None
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if arg.endswith(seps) or (out.is_dir() and not (named and count == 1)):
        if out.exists() and not out.is_dir():
            raise OutputUsageError(f"output {out} exists and is not a folder")
        return out, False
    if out.is_dir():  # one input and a folder named like a file
        raise OutputUsageError(f"output {arg} is a folder, but a name ending in {out.suffix} means a file here; "
                               f"to write into the folder, end the name with a slash ({arg}{os.sep})")
    if named:
        if count > 1:
            raise OutputUsageError(f"output {arg} names a {out.suffix} file, but there are {count} inputs: give a "
                                   f"folder (to make a folder of that name, end it with a slash: {arg}{os.sep})")
        if fmt and named in _VIDEO_OUT.values():
            raise OutputUsageError(f"--format {fmt} is for photos, but the output name {arg} is a {named} video: "
                                   "drop --format or change the suffix")
        if fmt and canonical_format(fmt) != named:
            raise OutputUsageError(f"--format {fmt} does not match the output name {arg} ({out.suffix} is "
                                   f"{named}): drop --format or change the suffix")
        return out, True
    if suffix in _FILE_LIKE:
        raise OutputUsageError(f"output {arg}: {out.suffix} is not an output format; name the file {_NAMES} "
                               f"(or end the name with a slash to make a folder of that name)")
    if out.exists():
        raise OutputUsageError(f"output {out} exists and is not a folder")
    return out, False


def default_format(src: Path) -> str:
    """The output format for *src* in a folder run: the input's own when it is an output format, else png."""
    return format_for_suffix(src.suffix) or "png"


def plan_outputs(inputs: list[tuple[Path, Path]], out: Path, single_file: bool,
                 fmt: str | None, *, videos: frozenset[Path] | set[Path] = frozenset(),
                 video_format: str | None = None) -> tuple[list[Job], list[tuple[Path, str]]]:
    """(jobs, refused): each input's output under *out* (or *out* itself for one file), and the inputs whose
    output would replace an input of this run or another input's output, or whose kind cannot be written under
    the name asked for (a video to .png, a photo to .mp4), with the reason.

    *videos*: the inputs that are videos (by content); they get ``video_format``'s suffix in a folder."""
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
        kind = "video" if src in videos else "photo"
        out_video = _VIDEO_OUT.get(out.suffix.lower()) if single_file else None
        if kind == "video":
            if single_file and out_video is None:
                refused.append((src, f"is a video, but the output {out} names a photo: name it .mp4 or .webm"))
                continue
            job_fmt = out_video or video_format or DEFAULT_VIDEO_FORMAT
            dst = out if single_file else (out / rel).with_suffix(VIDEO_FORMAT_EXTENSIONS[job_fmt])
        else:
            if out_video is not None:
                refused.append((src, f"is a photo, not a video: it cannot be written as {out}; name the output "
                                     ".png, .jpg or .webp"))
                continue
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
        jobs.append(Job(src, dst, job_fmt, kind))
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
