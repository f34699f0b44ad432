"""The ``stylize`` command's videos: telling them from photos by content, and running each clip with a frame bar.

A file is a photo when its first bytes are a supported image format's magic
number, else a video when PyAV finds a video stream in it; anything else goes
down the photo path (whose error says what it is) unless its name says video,
when the video path says why it is not one. A photo named like a video
(``holiday.mp4`` holding a JPEG) is refused rather than silently stylized as a
photo: the user expected a clip.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import AnimeliteError
from ..options import VIDEO_SUFFIXES, OptionError


def classify(inputs: list[tuple[Path, Path]]) -> tuple[set[Path], list[tuple[Path, str]]]:
    """(the inputs that are videos, the inputs refused because their name and content disagree)."""
    from ..imageio import sniff_image
    from ..video import is_video

    videos: set[Path] = set()
    refused: list[tuple[Path, str]] = []
    for src, _rel in inputs:
        named_video = src.suffix.lower() in VIDEO_SUFFIXES
        image = sniff_image(src)
        if image is not None:
            if named_video:
                refused.append((src, f"{src}: is a {image} image, not a video (the name ends in {src.suffix}); "
                                     f"rename it to stylize it as a photo"))
            continue
        if named_video or is_video(src):
            videos.add(src)
    return videos, refused


def frames_dir_for(base: str | None, job, single: bool) -> Path | None:
    """``--frames-dir``: the folder itself for one video, else a subfolder per video named after its output."""
    if base is None:
        return None
    return Path(base) if single else Path(base) / job.dst.stem


def run_videos(args, stylizer, jobs, note, say) -> tuple[int, list[tuple[Path, str]], list, int | None]:
    """Stylize each video job; returns (done, failed, rows for the report, exit status to stop with or None).

    Ctrl-C stops the whole run (exit 130) after saying how far the clip got;
    one clip's failure is reported and the next clip goes on. An option the
    driver refuses (``--crf 70``) is a usage error for the run (exit 2).
    """
    from tqdm import tqdm

    from ..video import VideoCancelled, stylize_video
    from .common import EXIT_USAGE, describe, err, one_line, option_message

    done, failed, rows = 0, [], []
    show = not args.quiet and sys.stderr.isatty()
    for job in jobs:
        bar = tqdm(total=None, unit="frame", desc=job.src.name[:30], disable=not show, file=sys.stderr)

        def progress(p, bar=bar) -> None:
            if bar.total is None and p.frames_total:
                bar.total = p.frames_total
            bar.update(p.frames_done - bar.n)

        started = time.perf_counter()
        try:
            summary = stylize_video(job.src, job.dst, stylizer=stylizer, temporal=args.temporal, crf=args.crf,
                                    preset=args.preset, keep_size=args.keep_size, max_duration=args.max_duration,
                                    frames_dir=frames_dir_for(args.frames_dir, job, len(jobs) == 1),
                                    overwrite=args.overwrite, workers=args.jobs, progress=progress, notice=note)
        except VideoCancelled as exc:
            bar.close()
            if exc.interrupted:
                err(str(exc))
                return done, failed, rows, 130
            failed.append((job.src, one_line(str(exc))))
            continue
        except OptionError as exc:
            bar.close()
            err(option_message(exc))
            return done, failed, rows, EXIT_USAGE
        except AnimeliteError as exc:
            bar.close()
            failed.append((job.src, one_line(str(exc))))
            continue
        except Exception as exc:  # noqa: BLE001 - one clip's failure (a bug, a full disk): the run goes on
            bar.close()
            failed.append((job.src, describe(exc)))
            continue
        bar.close()
        done += 1
        rows.append((job, summary, time.perf_counter() - started))
        if args.verbose:
            stages = " ".join(f"{k}={v:.1f}ms" for k, v in summary.ms_per_frame().items())
            w, h = summary.working_size
            say(f"{job.src} -> {job.dst} ({summary.frames} frames at {w}x{h}, {summary.frames_per_s:.1f} frames/s; "
                f"per frame: {stages}; audio {', '.join(summary.audio) or 'none'}; temporal {summary.temporal})")
    return done, failed, rows, None


def format_video_bench(summary, label: str) -> str:
    """``bench --video``: per-stage milliseconds per frame, summed over threads, and the clip's frames/s."""
    ms = summary.ms_per_frame()
    w, h = summary.working_size
    lines = [f"{label}: {summary.frames} frames, {summary.input_size[0]}x{summary.input_size[1]} -> {w}x{h}, "
             f"temporal {summary.temporal}",
             f"{'stage':<12}{'ms/frame':>10}"]
    lines += [f"{stage:<12}{value:>10.1f}" for stage, value in ms.items()]
    lines.append(f"{'frames/s':<12}{summary.frames_per_s:>10.2f}   (wall {summary.wall_s:.1f} s; stages run "
                 f"in parallel threads, so their sum exceeds the wall time; peak RSS {summary.peak_rss_mb:.0f} MB)")
    return "\n".join(lines)
