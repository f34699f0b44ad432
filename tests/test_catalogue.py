"""The bad-input catalogue (issue 15): the hostile-user campaign, kept in the suite.

Each row says how to make the input, which front end gets it, what must come
back, and (through :func:`catalogue.run_case`) that nothing was lost: every
input and every output that existed before is byte-for-byte the same after,
and no temporary file is left. ``defect`` names the campaign defect (1-18) a
row keeps fixed. Server rows are in ``test_catalogue_server.py``; the
property-based decoder fuzzing is in ``test_decode_fuzz.py``.
"""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from catalogue import Case, api, cli, run_case
from helpers import make_store, photo_like
from PIL import Image

from animelite.errors import ImageError, ModelError, StyleError
from animelite.imageio import OutputExistsError
from animelite.options import OptionError

STORE_TEMPLATE: Path | None = None


@pytest.fixture(scope="module", autouse=True)
def _template(tmp_path_factory):
    """One synthetic models directory, copied into each case that needs one (cases may damage it)."""
    global STORE_TEMPLATE
    from test_tiling import write_pt

    from helpers import random_generator_weights

    root = tmp_path_factory.mktemp("catalogue-store")
    store = make_store(root)
    store.add(write_pt(root / "randpt.pt", random_generator_weights(11).tensors), "randpt")  # converted on add
    STORE_TEMPLATE = store.root
    yield
    STORE_TEMPLATE = None


# ------------------------------------------------------------------ input makers


def jpeg(path: Path, w: int = 96, h: int = 64, seed: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_like(w, h, seed)).save(path, "JPEG", quality=90, **kw)
    return path


def png(path: Path, w: int = 96, h: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_like(w, h, seed)).save(path, "PNG")
    return path


def models(root: Path) -> Path:
    dst = root / "models"
    shutil.copytree(STORE_TEMPLATE, dst)
    return dst


def base(root: Path, **files) -> dict:
    """A folder with a models directory and the given input files {name: maker(path)}."""
    ctx = {"models": models(root), "in": root / "in", "out": root / "out"}
    ctx["in"].mkdir()
    for name, maker in files.items():
        fname = name.replace("__", ".")
        ctx[fname] = maker(ctx["in"] / fname)
    return ctx


def _unlistable(folder: Path, act):
    """Run *act* while *folder* cannot be listed, as chmod 000 does for a user who is not root
    (the suite may run as root, for whom permissions do not apply)."""
    import os

    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    os.scandir = scandir
    try:
        return act()
    finally:
        os.scandir = real


def stylize_argv(ctx: dict, *paths, out=None, extra=()) -> list:
    return ["--models", ctx["models"], "stylize", *paths, "-o", out or ctx["out"], "--style", "tiny",
            "--size", "64", "--faces", "off", "-q", *extra]


def run_stylize(*extra, paths=None, out=None):
    return lambda ctx: cli(stylize_argv(ctx, *(paths(ctx) if paths else [ctx["in"]]),
                                        out=out(ctx) if out else None, extra=extra))


def written(*names):
    def check(ctx, _outcome):
        for n in names:
            assert (ctx["root"] / n).is_file(), f"{n} was not written"
    return check


def not_written(*names):
    def check(ctx, _outcome):
        for n in names:
            assert not (ctx["root"] / n).exists(), f"{n} should not exist"
    return check


def truncated_jpeg(path: Path) -> Path:
    data = (jpeg(path, 200, 150)).read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def lying_header_jpeg(path: Path) -> Path:
    """A real 320x213 JPEG whose SOF header claims 7000x7000 (defect 14)."""
    buf = io.BytesIO()
    Image.fromarray(photo_like(320, 213, 3)).save(buf, "JPEG", quality=85)
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", 7000, 7000)
    path.write_bytes(bytes(data))
    return path


def bomb_png(path: Path) -> Path:
    """A PNG whose header says 20000x20000 (400 MP) over a few bytes."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    return path


def text_as(name_suffix: str):
    def make(path: Path) -> Path:
        path.write_text("this is not a picture\n" * 20)
        return path
    return make


def corrupt_exif_jpeg(path: Path) -> Path:
    jpeg(path)
    data = bytearray(path.read_bytes())
    # an APP1 Exif segment with a broken TIFF header right after SOI
    seg = b"Exif\x00\x00" + b"II*\x00" + b"\xff\xff\xff\x7f" + b"\x00" * 20
    data[2:2] = b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------- the cases

CLI = [
    # --- inputs that are not what they claim ---
    Case("cli-truncated-jpeg", "cli", lambda r: base(r, a__jpg=truncated_jpeg), run_stylize(), 1, "truncated"),
    Case("cli-text-named-jpg", "cli", lambda r: base(r, a__jpg=text_as(".jpg")), run_stylize(), 1, "not an image"),
    Case("cli-empty-file", "cli", lambda r: base(r, a__png=lambda p: (p.write_bytes(b""), p)[1]), run_stylize(), 1,
         "empty"),
    Case("cli-png-named-jpg-is-sniffed", "cli",
         lambda r: base(r, a__jpg=lambda p: png(p)), run_stylize(), 0, check=written("out/a.jpg")),
    Case("cli-gif-refused", "cli",
         lambda r: base(r, a__gif=lambda p: (Image.new("P", (8, 8)).save(p, "GIF"), p)[1]),
         run_stylize(paths=lambda c: [c["a.gif"]]), 1, "GIF"),
    Case("cli-bomb-header", "cli", lambda r: base(r, a__png=bomb_png), run_stylize(), 1, "MP is above"),
    Case("cli-lying-jpeg-header", "cli", lambda r: base(r, a__jpg=lying_header_jpeg), run_stylize(), 1,
         "truncated", defect=14, check=not_written("out/a.jpg")),
    Case("cli-corrupt-exif-no-noise", "cli", lambda r: base(r, a__jpg=corrupt_exif_jpeg), run_stylize(), 0,
         defect=15, absent=("site-packages", "\x1b["), check=written("out/a.jpg")),
    # --- paths ---
    Case("cli-missing-path", "cli", lambda r: base(r), run_stylize(paths=lambda c: [c["in"] / "nope.jpg"]), 1,
         "no such file"),
    Case("cli-glob-matches-nothing", "cli", lambda r: base(r), run_stylize(paths=lambda c: [c["in"] / "*.jpg"]), 1,
         "no such file"),
    Case("cli-empty-folder", "cli", lambda r: base(r), run_stylize(), 1, "no input images"),
    Case("cli-brackets-in-name", "cli", lambda r: base(r, **{"a[1]__jpg": jpeg}),
         run_stylize(paths=lambda c: [c["a[1].jpg"]], out=lambda c: c["out"] / "x.png"), 0, defect=8,
         check=written("out/x.png")),
    Case("cli-250-byte-name", "cli", lambda r: base(r, **{("n" * 246) + "__jpg": jpeg}), run_stylize(), 0,
         defect=9, check=written("out/" + "n" * 246 + ".jpg")),
    Case("cli-output-under-a-file", "cli", lambda r: {**base(r, a__jpg=jpeg), "blocker": (r / "f").write_text("x")},
         run_stylize(out=lambda c: c["root"] / "f" / "sub"), 1, "cannot create the folder"),
    Case("cli-unknown-output-suffix", "cli", lambda r: base(r, a__jpg=jpeg),
         run_stylize(paths=lambda c: [c["a.jpg"]], out=lambda c: c["root"] / "x.gif"), 2, "gif", defect=10,
         check=not_written("x.gif")),
    Case("cli-format-contradicts-suffix", "cli", lambda r: base(r, a__jpg=jpeg),
         run_stylize("--format", "webp", paths=lambda c: [c["a.jpg"]], out=lambda c: c["root"] / "x.png"), 2,
         "webp", defect=10, check=not_written("x.png")),
    Case("cli-output-is-a-folder-named-like-a-file", "cli",
         lambda r: {**base(r, a__jpg=jpeg), "d": (r / "d.png").mkdir()},
         run_stylize(paths=lambda c: [c["a.jpg"]], out=lambda c: c["root"] / "d.png"), 2, "folder", defect=18,
         absent=("skipped (output exists",)),
    # --- never lose data ---
    Case("cli-existing-output-is-skipped", "cli",
         lambda r: {**base(r, a__jpg=jpeg), "old": png(r / "out" / "a.jpg", seed=5)}, run_stylize(), 0),
    Case("cli-overwrite-never-replaces-an-input", "cli",
         lambda r: base(r, a__jpg=jpeg, b__jpg=lambda p: jpeg(p, seed=2), a__png=lambda p: png(p, seed=3)),
         run_stylize("--format", "png", "--overwrite", out=lambda c: c["in"]), 1, "input", defect=2,
         changes=("in/b.png",)),
    Case("cli-same-file-in-and-out", "cli", lambda r: base(r, a__png=png),
         run_stylize("--overwrite", paths=lambda c: [c["a.png"]], out=lambda c: c["a.png"]), 1, "input", defect=2),
    Case("cli-output-folder-inside-input-is-not-walked", "cli",
         lambda r: {**base(r, a__jpg=jpeg), "prev": jpeg(r / "in" / "anime" / "a.jpg", seed=4)},
         run_stylize(out=lambda c: c["in"] / "anime"), 0, defect=6,
         check=not_written("in/anime/anime")),
    # --- the batch carries on ---
    Case("cli-unreadable-sub-folder-is-reported", "cli",
         lambda r: {**base(r, a__jpg=jpeg), "sub": jpeg(r / "in" / "sub" / "b.jpg", seed=2)},
         lambda c: _unlistable(c["in"] / "sub", lambda: run_stylize()(c)), 1, "cannot read this folder", defect=17,
         check=written("out/a.jpg")),
    Case("cli-thin-image", "cli", lambda r: base(r, a__png=lambda p: png(p, 1, 900)),
         lambda c: cli(["--models", c["models"], "stylize", c["in"], "-o", c["out"], "--style", "randv2",
                        "--size", "256", "-q", "--faces", "off"]), 0, defect=1, check=written("out/a.png")),
    Case("cli-batch-carries-on-past-bad-files", "cli",
         lambda r: base(r, a__jpg=jpeg, b__jpg=truncated_jpeg, c__png=lambda p: png(p, 2, 700), d__jpg=text_as("")),
         lambda c: cli(["--models", c["models"], "stylize", c["in"], "-o", c["out"], "--style", "randv2",
                        "--size", "128", "--faces", "off"]), 1, "2 stylized", defect=1,
         check=written("out/a.jpg", "out/c.png")),
    # --- option values: usage errors, exit 2 ---
    *[Case(f"cli-option-{name}", "cli", lambda r: base(r, a__jpg=jpeg), run_stylize(*argv), 2, frag,
           defect=defect)
      for name, argv, frag, defect in [
          ("size-too-small", ["--size", "10"], "--size", None),
          ("size-not-a-number", ["--size", "abc"], "--size", None),
          ("threads-zero", ["--threads", "0"], "--threads", None),
          ("threads-1000", ["--threads", "1000"], "--threads", 16),
          ("face-size-small", ["--face-size", "10"], "--face-size", None),
          ("quality-zero", ["--quality", "0"], "--quality", None),
          ("tile-too-small", ["--tile", "10"], "--tile", None),
          ("unknown-format", ["--format", "gif"], "--format", None),
          ("hd-size-without-hd", ["--hd-size", "200"], "hd", 18),
          ("hd-at-8192", ["--mode", "hd", "--size", "8192"], "hd", 18),
          ("bf16-on-onnxruntime", ["--precision", "bf16"], "bf16", 18),
          ("unknown-backend", ["--backend", "tensorflow"], "--backend", None),
      ]],
    Case("cli-unknown-style", "cli", lambda r: base(r, a__jpg=jpeg),
         lambda c: cli(["--models", c["models"], "stylize", c["in"], "-o", c["out"], "--style", "nope"]), 2,
         "unknown style"),
    # INT8 is made on first use; tiny's unnamed convolution is what the quantizer cannot take
    Case("cli-int8-unquantizable-model", "cli", lambda r: base(r, a__jpg=jpeg), run_stylize("--precision", "int8"),
         1, "cannot run at INT8"),
    # --- the models directory ---
    Case("cli-models-dir-is-a-file", "cli", lambda r: {**base(r, a__jpg=jpeg), "blk": (r / "mfile").write_text("x")},
         lambda c: cli(["--models", c["root"] / "mfile", "stylize", c["a.jpg"], "-o", c["out"], "--style", "hayao"]),
         1, "mfile"),
    Case("cli-models-add-missing-file", "cli", lambda r: base(r),
         lambda c: cli(["--models", c["models"], "models", "add", c["root"] / "nope.onnx", "--name", "mine"]), 1,
         "no such file"),
    Case("cli-models-add-text-file", "cli", lambda r: {**base(r), "f": (r / "x.onnx").write_text("not a model")},
         lambda c: cli(["--models", c["models"], "models", "add", c["root"] / "x.onnx", "--name", "mine"]), 1,
         "x.onnx"),
    Case("cli-models-add-bad-name", "cli", lambda r: {**base(r), "f": png(r / "x.png")},
         lambda c: cli(["--models", c["models"], "models", "add", c["root"] / "x.png", "--name", "Bad Name"]), 1,
         "invalid style name"),
    Case("cli-damaged-user-styles", "cli",
         lambda r: {**base(r, a__jpg=jpeg), "f": (r / "models" / "user_styles.json").write_text("{broken")},
         run_stylize(), 1, "damaged"),
    Case("cli-verify-names-a-damaged-converted-model", "cli",
         lambda r: {**base(r), "t": (r / "models" / "randpt.onnx").write_bytes(b"")},
         lambda c: cli(["--models", c["models"], "models", "verify"]), 1, "randpt.onnx", defect=4),
]


def _stylizer(ctx, style="tiny", **kw):
    from animelite.pipeline import Stylizer

    return Stylizer(style, **{"models_dir": ctx["models"], "size": 64, "faces": "off", "notice": lambda _m: None,
                              **kw})


def _make_stylizer_with(kw: dict):
    return lambda ctx: _stylizer(ctx, **kw)


def api_case(id_, make, call, status, message="", defect=None, **kw):
    return Case(id_, "api", make, lambda c: api(lambda: call(c)), status, message, defect, **kw)


API = [
    *[api_case(f"api-option-{name}", lambda r: base(r), _make_stylizer_with(kw), OptionError, frag, defect=16)
      for name, kw, frag in [
          ("face-size-none", {"face_size": None}, "face_size"),
          ("face-size-text", {"face_size": "x"}, "face_size"),
          ("face-size-zero", {"face_size": 0}, "face_size"),
          ("face-size-huge", {"face_size": 100000}, "face_size"),
          ("threads-1000", {"threads": 1000}, "threads"),
          ("size-float", {"size": 512.0}, "size"),
          ("faces-unknown", {"faces": "sometimes"}, "faces"),
          ("mode-unknown", {"mode": "turbo"}, "mode"),
          ("tile-tiny", {"tile": 5}, "tile"),
      ]],
    api_case("api-style-none", lambda r: base(r), lambda c: _stylizer(c, style=None), OptionError, "style", 16),
    api_case("api-unknown-style", lambda r: base(r), lambda c: _stylizer(c, style="nope"), StyleError,
             "unknown style"),
    api_case("api-detector-is-not-a-style", lambda r: base(r), lambda c: _stylizer(c, style="yunet"), StyleError,
             "not a style"),
    api_case("api-int8-unquantizable-model", lambda r: base(r), lambda c: _stylizer(c, precision="int8"),
             ModelError, "cannot run at INT8"),
    api_case("api-empty-bytes", lambda r: base(r), lambda c: _stylizer(c).stylize(b""), ImageError, "empty"),
    api_case("api-random-bytes", lambda r: base(r),
             lambda c: _stylizer(c).stylize(np.random.default_rng(0).bytes(4096)), ImageError, "not an image"),
    api_case("api-wrong-array", lambda r: base(r),
             lambda c: _stylizer(c).stylize(np.zeros((8, 8, 5), np.float32)), ImageError, ""),
    api_case("api-empty-array", lambda r: base(r), lambda c: _stylizer(c).stylize(np.zeros((0, 0, 3), np.uint8)),
             ImageError, ""),
    api_case("api-missing-path", lambda r: base(r), lambda c: _stylizer(c).stylize(c["root"] / "nope.jpg"),
             ImageError, "nope.jpg"),
    api_case("api-directory", lambda r: base(r), lambda c: _stylizer(c).stylize(c["in"]), ImageError,
             "is a directory"),
    api_case("api-truncated-jpeg", lambda r: base(r, a__jpg=truncated_jpeg),
             lambda c: _stylizer(c).stylize(c["a.jpg"]), ImageError, "truncated"),
    api_case("api-lying-jpeg-header", lambda r: base(r, a__jpg=lying_header_jpeg),
             lambda c: _stylizer(c).stylize(c["a.jpg"]), ImageError, "truncated", 14),
    api_case("api-thin-image", lambda r: base(r),
             lambda c: _stylizer(c, style="randv2", size=256).stylize(photo_like(1, 5000)), None, defect=1),
    api_case("api-stylize-file-onto-itself", lambda r: base(r, a__png=png),
             lambda c: _stylizer(c).stylize_file(c["a.png"], c["a.png"], overwrite=True), OptionError, "input",
             defect=2),
    api_case("api-stylize-file-existing-output", lambda r: {**base(r, a__png=png), "o": png(r / "o.png", seed=7)},
             lambda c: _stylizer(c).stylize_file(c["a.png"], c["root"] / "o.png"), OutputExistsError,
             "already exists"),
    api_case("api-stylize-file-bad-suffix", lambda r: base(r, a__png=png),
             lambda c: _stylizer(c).stylize_file(c["a.png"], c["root"] / "o.gif"), ImageError, "gif",
             check=not_written("o.gif")),
    api_case("api-top-level-bad-size", lambda r: base(r),
             lambda c: __import__("animelite").stylize(photo_like(8, 8), size=10, models_dir=c["models"]),
             OptionError, "size", 16),
    api_case("api-bomb-bytes", lambda r: base(r, a__png=bomb_png),
             lambda c: _stylizer(c).stylize(c["a.png"].read_bytes()), ImageError, "MP is above"),
    api_case("api-corrupt-converted-model-is-rebuilt", lambda r: {**base(r), "x": _flip_middle(r)},
             lambda c: _stylizer(c, style="randpt").stylize(photo_like(64, 48)), None, defect=4,
             changes=("models/randpt.onnx", "models/randpt.onnx.json"), check=lambda c, o: _same_as_fresh(c, o)),
]


def _same_as_fresh(ctx, outcome) -> None:
    """The repaired model gives exactly what the undamaged one gives."""
    from animelite.pipeline import Stylizer

    want = Stylizer("randpt", models_dir=STORE_TEMPLATE, size=64, faces="off", notice=lambda _m: None)
    assert np.array_equal(outcome.value.image, want.stylize(photo_like(64, 48)).image)


def _flip_middle(root: Path) -> None:
    """Flip one byte in the middle of the converted randpt model (its weights)."""
    path = root / "models" / "randpt.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


CASES = CLI + API


def test_the_catalogue_covers_the_campaign():
    from test_catalogue_server import SERVER_CASES

    every = CASES + SERVER_CASES
    ids = [c.id for c in every]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(every) >= 80, f"only {len(every)} cases"
    fixed = {c.defect for c in every if c.defect}
    assert fixed >= set(range(1, 19)), f"defects without a case: {sorted(set(range(1, 19)) - fixed)}"
    fronts = {c.front for c in every}
    assert {"cli", "api", "server"} <= fronts


@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMELITE_MODELS", str(tmp_path / "no-default-models"))
    run_case(case, tmp_path)
