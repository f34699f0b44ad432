"""The first command (`make demo`): the shipped samples, the contact sheet and the timing summary."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import shlex
import shutil
import socket
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from helpers import make_store, photo_like
from PIL import Image

from animelite.cli import main
from animelite.contact_sheet import Row, format_summary, summarize
from animelite.options import IMAGE_SUFFIXES

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


class Sheet(HTMLParser):
    """What a contact sheet holds: image sources, link targets, rows, every tag name."""

    def __init__(self, text: str):
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.rows = 0
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "a":
            self.links.append(a["href"])
        if tag == "div" and a.get("class") == "row":
            self.rows += 1

    def handle_data(self, data):
        self.text.append(data)


def _target(sheet_dir: Path, src: str) -> Path:
    assert not re.match(r"[a-z]+:", src) or src.startswith("data:"), f"not a relative link: {src}"
    return (sheet_dir / unquote(src)).resolve()


@pytest.fixture()
def batch(tmp_path):
    store = make_store(tmp_path)
    photos = tmp_path / "photos"
    (photos / "sub dir").mkdir(parents=True)
    Image.fromarray(photo_like(120, 80, 1)).save(photos / "a.jpg")
    Image.fromarray(photo_like(80, 120, 2)).save(photos / "b.png")
    Image.fromarray(photo_like(100, 100, 3)).save(photos / "sub dir" / "c d.tiff")  # a browser cannot show it
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return store, photos, tmp_path / "out"


def test_contact_sheet_for_a_folder_run(batch, capsys):
    store, photos, out = batch
    code = main(["--models", str(store.root), "stylize", str(photos), "-o", str(out), "--style", "tiny",
                 "--size", "64", "--contact-sheet"])
    captured = capsys.readouterr()
    assert code == 1  # broken.jpg failed; the sheet is written all the same
    index = out / "index.html"
    assert f"contact sheet: {index}" in captured.out
    assert "per-stage time, median over 3 stylized photos" in captured.out
    assert re.search(r"inference\s+\d+ ms", captured.out) and re.search(r"total\s+\d+ ms per photo", captured.out)
    page = index.read_text(encoding="utf-8")
    sheet = Sheet(page)
    assert sheet.rows == 4  # one per photo, the failed one included
    assert not sheet.tags & {"script", "link", "iframe", "object"}  # self-contained: nothing to fetch
    assert "http://" not in page and "https://" not in page
    files = [_target(out, s) for s in sheet.imgs if not s.startswith("data:")]
    assert all(f.is_file() for f in files), files
    inputs = {p.resolve() for p in (photos / "a.jpg", photos / "b.png", photos / "broken.jpg")}
    outputs = {(out / n).resolve() for n in ("a.jpg", "b.png", "sub dir/c d.png")}
    assert inputs | outputs == set(files)  # before = the input itself, after = the output
    assert all(_target(out, h).is_file() for h in sheet.links)
    previews = [s for s in sheet.imgs if s.startswith("data:")]  # the TIFF, embedded as a JPEG preview
    assert len(previews) == 1 and previews[0].startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(previews[0].split(",", 1)[1]))).size == (100, 100)
    text = " ".join(sheet.text)
    assert text.count("working size 64x") + text.count("working size 40x64") == 3
    assert len(re.findall(r"ms: decode \d+, preprocess \d+, inference \d+", text)) == 3
    assert "no output" in text and "truncated" in text  # the failed photo's row says why
    assert "median ms" in text and "total per photo" in text


def test_contact_sheet_refused_for_a_single_file_output(batch, capsys):
    store, photos, out = batch
    target = out / "one.png"
    code = main(["--models", str(store.root), "stylize", str(photos / "a.jpg"), "-o", str(target),
                 "--style", "tiny", "--contact-sheet"])
    assert code == 2
    assert "--contact-sheet writes index.html into an output folder" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was stylized


def test_contact_sheet_keeps_a_users_index_html_and_replaces_its_own(batch, capsys):
    store, photos, out = batch
    out.mkdir()
    mine = out / "index.html"
    mine.write_text("<p>my own page</p>")
    args = ["--models", str(store.root), "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(out),
            "--style", "tiny", "--size", "64", "--contact-sheet"]
    assert main(args) == 2
    assert "was not written by animelite" in capsys.readouterr().err
    assert mine.read_text() == "<p>my own page</p>" and not (out / "a.jpg").exists()
    mine.unlink()
    assert main(args) == 0
    capsys.readouterr()
    # a second run: the outputs exist and are skipped; its own sheet is replaced, the rows say "skipped"
    assert main(args) == 0
    assert "timing summary: no photo was stylized in this run" in capsys.readouterr().out
    sheet = Sheet(mine.read_text(encoding="utf-8"))
    assert sheet.rows == 2 and len(sheet.imgs) == 4 and all(_target(out, s).is_file() for s in sheet.imgs)
    assert "skipped" in " ".join(sheet.text)


def test_summary_without_a_sheet(batch, capsys):
    store, photos, out = batch
    assert main(["--models", str(store.root), "stylize", str(photos / "a.jpg"), "-o", str(out), "--style", "tiny",
                 "--size", "64", "--summary", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "per-stage time, median over 1 stylized photo:" in printed and "decode" in printed
    assert not (out / "index.html").exists()


def test_summary_medians():
    rows = [Row(Path(f"{i}.jpg"), None, "stylized", timings=t) for i, t in enumerate([
        {"decode": 0.010, "inference": 0.100, "encode": 0.005},
        {"decode": 0.050, "inference": 0.200, "faces": 0.040, "encode": 0.005},
        {"decode": 0.020, "inference": 0.400, "faces": 0.020, "encode": 0.005},
    ])] + [Row(Path("x.jpg"), None, "failed", "broken")]
    s = summarize(rows, wall=1.5, jobs=2)
    assert s.photos == 3
    assert [(n, round(v, 3), c) for n, v, c in s.stages] == [
        ("decode", 0.02, 3), ("inference", 0.2, 3), ("faces", 0.03, 2), ("encode", 0.005, 3)]  # pipeline order
    assert round(s.total, 3) == 0.295  # the median of the totals (0.115, 0.295, 0.445), not the sum of medians
    text = format_summary(s)
    assert "faces" in text and "(2 of 3)" in text and "295 ms per photo" in text and "2 images in flight" in text


# -- the shipped samples -------------------------------------------------------------------------
def _sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _attribution_rows() -> dict[str, list[str]]:
    rows = {}
    for line in (SAMPLES / "ATTRIBUTION.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`([^`]+)`", cells[0]) if line.startswith("|") else None
        if m:
            rows[m.group(1)] = cells
    return rows


def test_samples_are_few_small_and_attributed():
    files = _sample_files()
    assert 4 <= len(files) <= 6
    assert sum(f.stat().st_size for f in files) <= 1_500_000
    rows = _attribution_rows()
    assert sorted(rows) == sorted(f.name for f in files)  # every file listed, nothing listed that is not there
    for f in files:
        with Image.open(f) as img:
            img.verify()
        licence = rows[f.name][3]
        assert re.search(r"public domain|CC0|CC-BY", licence), f"{f.name}: licence {licence!r}"
        if "CC-BY" in licence:
            assert rows[f.name][4], f"{f.name}: CC-BY needs its attribution"
    assert "collage" in " ".join(rows["collage_faces.jpg"]).lower()
    assert not any("portraits/" in " ".join(r) for r in rows.values())  # unclear licences: never shipped


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_samples", REPO / "scripts" / "make_demo_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_script_reproduces_the_committed_files(shared_photos):
    made = _load_script().build(shared_photos / "scenes")
    assert sorted(made) == [f.name for f in _sample_files()]
    for name, data in made.items():
        committed = (SAMPLES / name).read_bytes()
        if data == committed:
            continue
        # another Pillow / libjpeg may encode the same pixels a little differently: allow only that
        a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(committed)).convert("RGB"), dtype=np.int16)
        assert a.shape == b.shape, name
        diff = np.abs(a - b)
        assert diff.mean() < 0.5 and diff.max() <= 16, f"{name}: differs from the script's output"


def test_collage_has_several_small_faces():
    module = _load_script()
    widths = [w for _, w, _ in module.TILES]
    assert len(widths) >= 4 and 40 <= min(widths) and max(widths) <= 80
    with Image.open(SAMPLES / "collage_faces.jpg") as img:
        assert img.size == module.COLLAGE_SIZE


# -- the demo command itself ---------------------------------------------------------------------
def _demo_command() -> list[str]:
    """The `animelite stylize ...` line `make demo` runs, with a fake venv so make only prints it."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    printed = subprocess.run(["make", "-n", "demo", "BIN=/nonexistent/bin", "DEMO_OUT=OUT"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in printed.splitlines() if ln.startswith("/nonexistent/bin/animelite stylize")]
    assert len(lines) == 1, printed
    return shlex.split(lines[0])[1:]


def test_make_demo_runs_offline_with_no_models_directory(tmp_path, monkeypatch, capsys):
    args = _demo_command()
    assert "--style" not in args and "-s" not in args  # the default style
    assert args[:2] == ["stylize", "samples"] and "--contact-sheet" in args

    def no_network(*a, **k):
        raise AssertionError("the demo must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANIMELITE_MODELS", raising=False)
    monkeypatch.chdir(REPO)
    out = tmp_path / "demo"
    args = [str(out) + "/" if a == "OUT/" else a for a in args]
    models = tmp_path / "empty-models"
    assert main(["--models", str(models), *args]) == 0
    printed = capsys.readouterr().out
    names = sorted(f.name for f in _sample_files())
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == names
    assert f"contact sheet: {out / 'index.html'}" in printed
    assert f"median over {len(names)} stylized photos" in printed
    sheet = Sheet((out / "index.html").read_text(encoding="utf-8"))
    assert sheet.rows == len(names) and all(_target(out, s).is_file() for s in sheet.imgs)
    # faces are on by default and offline: the shipped collage's small faces are found and restyled
    text = (out / "index.html").read_text(encoding="utf-8")
    row = text[text.index("collage_faces.jpg"):]
    found = int(row.split(" found, ")[0].rsplit(" ", 1)[-1])
    assert found >= 6 and f"{found} found, {found} restyled" in row
