"""A stylize batch's report: the before/after contact sheet (``index.html``) and the per-stage timing summary.

The sheet is one self-contained HTML page in the output folder: no scripts,
no fonts, nothing fetched from the network. Each row shows a photo before and
after, side by side, with its working size, what the face stage did and the
milliseconds of each stage. "Before" is the input file itself, linked by a
relative path from the output folder (so the page works as long as the two
folders keep their places); an input a browser cannot show (TIFF) is embedded
as a small JPEG preview instead. "After" is the output file, linked the same
way.

The summary is the median of each stage over the photos stylized in the run,
and the median total per photo: what ``--summary`` prints and the sheet shows.
"""

from __future__ import annotations

import base64
import html
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .atomic import atomic_write
from .pipeline import STAGES

SHEET_NAME = "index.html"
#: written into every sheet; an existing index.html with it is ours and may be replaced without --overwrite
GENERATOR = "animelite contact sheet"
#: input suffixes every current browser shows; others (TIFF) get an embedded preview
WEB_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
PREVIEW_SIDE = 768
PREVIEW_QUALITY = 85


class SheetError(ValueError):
    """The sheet cannot be written where it would go (a user's own index.html, a folder of that name)."""


@dataclass
class Row:
    """One input of the batch and what became of it."""

    src: Path
    dst: Path | None  #: the output, when there is one (made now, or left from an earlier run)
    status: str  #: "stylized", "skipped" (the output existed) or "failed"
    reason: str = ""  #: why it failed or was skipped
    input_size: tuple[int, int] | None = None
    working_size: tuple[int, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)  #: stage -> seconds
    faces: tuple[int, int] | None = None  #: (found, restyled), when the face stage ran

    @property
    def total(self) -> float:
        return sum(self.timings.values())


@dataclass
class Summary:
    """Median seconds of each stage over the stylized photos (with how many photos had the stage)."""

    stages: list[tuple[str, float, int]]  #: (stage, median seconds, photos)
    total: float | None  #: median of the per-photo totals
    photos: int
    wall: float  #: seconds the whole batch took, start to finish
    jobs: int


def summarize(rows: list[Row], wall: float, jobs: int) -> Summary:
    done = [r for r in rows if r.status == "stylized" and r.timings]
    names = [s for s in STAGES if any(s in r.timings for r in done)]
    names += sorted({s for r in done for s in r.timings} - set(names))  # stages the pipeline may add later
    stages = []
    for name in names:
        values = [r.timings[name] for r in done if name in r.timings]
        stages.append((name, statistics.median(values), len(values)))
    total = statistics.median([r.total for r in done]) if done else None
    return Summary(stages=stages, total=total, photos=len(done), wall=wall, jobs=jobs)


def format_summary(summary: Summary) -> str:
    """The summary as a small text table (what ``--summary`` prints)."""
    if not summary.photos:
        return "timing summary: no photo was stylized in this run"
    photos = "photo" if summary.photos == 1 else "photos"
    lines = [f"per-stage time, median over {summary.photos} stylized {photos}:"]
    for name, seconds, count in summary.stages:
        note = f"  ({count} of {summary.photos})" if count != summary.photos else ""
        lines.append(f"  {name:<12}{seconds * 1000:>8.0f} ms{note}")
    jobs = f", {summary.jobs} images in flight" if summary.jobs > 1 else ""
    lines.append(f"  {'total':<12}{summary.total * 1000:>8.0f} ms per photo (median); "
                 f"the batch took {summary.wall:.1f} s{jobs}")
    return "\n".join(lines)


def check_target(out_dir: Path, overwrite: bool) -> Path:
    """The sheet's path in *out_dir*; raises :class:`SheetError` when writing it would replace something
    that is not an earlier sheet (unless *overwrite*) or cannot be a file."""
    target = out_dir / SHEET_NAME
    if target.is_dir():
        raise SheetError(f"{target} is a folder; the contact sheet cannot be written there")
    if target.exists() and not overwrite and not _is_ours(target):
        raise SheetError(f"{target} exists and was not written by animelite; --overwrite replaces it, "
                         "or choose another output folder")
    return target


def write_sheet(out_dir: Path, rows: list[Row], summary: Summary, *, title: str, settings: str,
                overwrite: bool = False) -> Path:
    """Write ``index.html`` into *out_dir* atomically and return its path."""
    target = check_target(out_dir, overwrite)
    page = render(out_dir, rows, summary, title=title, settings=settings)
    atomic_write(target, page.encode("utf-8"))
    return target


# -- the page ----------------------------------------------------------------------
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
.settings{color:#555;margin:0 0 1em}
table.timing{border-collapse:collapse;margin:0 0 1.5em}
table.timing td,table.timing th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}
table.timing th:first-child,table.timing td:first-child{text-align:left}
.row{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px;margin:0 0 14px}
.row h2{font-size:1.05em;margin:0 0 6px;word-break:break-all}
.pair{display:flex;gap:10px}
.pair figure{flex:1;margin:0;min-width:0}
.pair img{width:100%;height:auto;display:block;background:#eee}
figcaption{color:#666;font-size:.9em}
.facts{color:#444;margin:6px 0 0}
.missing{padding:2em;text-align:center;background:#f3f3f3;color:#a00}
""".strip()


def render(out_dir: Path, rows: list[Row], summary: Summary, *, title: str, settings: str) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f'<meta name="generator" content="{GENERATOR}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{_esc(title)}</h1>", f'<p class="settings">{_esc(settings)}</p>',
             _timing_table(summary)]
    for row in rows:
        parts.append(_row(out_dir, row))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _timing_table(summary: Summary) -> str:
    if not summary.photos:
        return '<p class="timing">No photo was stylized in this run, so there are no timings.</p>'
    cells = [f'<tr><td>{_esc(name)}</td><td>{s * 1000:.0f}</td><td>{n}</td></tr>'
             for name, s, n in summary.stages]
    cells.append(f"<tr><th>total per photo</th><th>{summary.total * 1000:.0f}</th><th>{summary.photos}</th></tr>")
    jobs = f", {summary.jobs} images in flight" if summary.jobs > 1 else ""
    return ('<table class="timing"><caption>Per-stage time, median over the stylized photos '
            f'(the batch took {summary.wall:.1f} s{jobs})</caption>'
            "<tr><th>stage</th><th>median ms</th><th>photos</th></tr>" + "".join(cells) + "</table>")


def _row(out_dir: Path, row: Row) -> str:
    before = _figure(_before_src(out_dir, row.src), f"before: {row.src}", _size_text("input", row.input_size))
    if row.dst is not None and row.dst.is_file():
        after = _figure(_link(out_dir, row.dst), f"after: {row.dst}", _size_text("working size", row.working_size))
    else:
        after = f'<figure><div class="missing">no output: {_esc(row.reason or row.status)}</div></figure>'
    facts = [row.status + (f" ({row.reason})" if row.reason and row.status != "failed" else "")]
    if row.faces is not None:
        facts.append(f"faces: {row.faces[0]} found, {row.faces[1]} restyled")
    elif row.status == "stylized":
        facts.append("faces: off")
    if row.timings:
        stages = ", ".join(f"{k} {v * 1000:.0f}" for k, v in row.timings.items())
        facts.append(f"ms: {stages}; total {row.total * 1000:.0f}")
    return (f'<div class="row"><h2>{_esc(str(row.src))}</h2><div class="pair">{before}{after}</div>'
            f'<p class="facts">{_esc("; ".join(facts))}</p></div>')


def _figure(src: str | None, alt: str, caption: str) -> str:
    if src is None:
        return f'<figure><div class="missing">{_esc(alt)}: cannot be shown</div></figure>'
    href = f' href="{src}"' if not src.startswith("data:") else ""
    img = f'<img src="{src}" alt="{_esc(alt)}" loading="lazy">'
    return f"<figure>{f'<a{href}>{img}</a>' if href else img}<figcaption>{_esc(caption)}</figcaption></figure>"


def _size_text(label: str, size: tuple[int, int] | None) -> str:
    return f"{label} {size[0]}x{size[1]}" if size else label


def _link(out_dir: Path, path: Path) -> str:
    """A URL for *path* relative to *out_dir* (both taken as written, so ``..`` means what the browser
    will make of it), or a file: URL when there is no relative path (another drive)."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:
        return Path(os.path.abspath(path)).as_uri()
    return quote(Path(rel).as_posix())


def _before_src(out_dir: Path, src: Path) -> str | None:
    if src.suffix.lower() in WEB_SUFFIXES:
        return _link(out_dir, src)
    return _preview(src)


def _preview(src: Path) -> str | None:
    """An embedded JPEG preview (data: URL) of an input a browser cannot show, or None if it cannot be read."""
    from .imageio import decode_image, encode_image
    from .imageops import resize_rgb

    try:
        decoded = decode_image(src)
    except Exception:  # noqa: BLE001 - the row says the photo could not be shown; the batch has reported why
        return None
    rgb = decoded.rgb
    scale = min(1.0, PREVIEW_SIDE / max(decoded.width, decoded.height))
    if scale < 1.0:
        rgb = resize_rgb(rgb, (max(1, round(decoded.width * scale)), max(1, round(decoded.height * scale))))
    data = encode_image(rgb, "jpeg", quality=PREVIEW_QUALITY, icc_profile=b"")
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'content="{GENERATOR}"'.encode() in head


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
