"""hayao-lite: the embedded style (a student distilled from AnimeGANv2 Hayao).

The model file ships inside the package; it must match its catalog checksum,
work with no models directory at all (offline), and stay close to its teacher
on held-out photos (training/heldout.txt; thresholds a little under what
training/evaluate.py measured, see src/animelite/models/HAYAO_LITE.md).
"""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from helpers import photo_like
from PIL import Image

from animelite import styles
from animelite.cli import main
from animelite.store import EMBEDDED_DIR, ModelStore, file_checksum

LITE = styles.get_style("hayao-lite")
# two held-out photos (never trained on), at the default working size
FIDELITY_PHOTOS = ["scenes/chelsea.png", "scenes/v3_40.jpg"]
MIN_PSNR, MIN_SSIM = 28.0, 0.87  # measured: chelsea 29.44 dB / 0.895, v3_40 28.95 dB / 0.889


def test_lite_is_embedded():
    assert LITE.embedded and LITE.kind == "style" and LITE.source_format == "onnx" and not LITE.url
    assert LITE.non_commercial and "non-commercial" in LITE.licence
    assert styles.get_style("hayao").name == "hayao"  # the full model stays in the catalog


def test_shipped_file_matches_the_catalog():
    path = EMBEDDED_DIR / LITE.file
    assert path.is_file(), f"{path} is missing from the package"
    assert file_checksum(path, "sha256") == LITE.checksum
    assert path.stat().st_size == LITE.size_bytes <= 2_000_000
    assert (EMBEDDED_DIR / "HAYAO_LITE.md").is_file()
    int8 = EMBEDDED_DIR / LITE.int8_file
    assert LITE.int8_file and file_checksum(int8, "sha256") == LITE.int8_checksum
    assert int8.stat().st_size <= 2_000_000


def test_default_style_is_the_embedded_lite_model():
    assert styles.DEFAULT_STYLE == "hayao-lite"
    import animelite

    assert animelite.DEFAULT_STYLE == "hayao-lite"


def test_verify_names_a_damaged_embedded_int8_model(tmp_path, monkeypatch):
    import shutil

    from animelite import store as store_mod

    pkg = tmp_path / "pkg"
    shutil.copytree(EMBEDDED_DIR, pkg)
    monkeypatch.setattr(store_mod.directory, "EMBEDDED_DIR", pkg)
    store = ModelStore(tmp_path / "models")
    assert store.verify(["hayao-lite"]) == [("hayao-lite", "ok")]
    with open(pkg / LITE.int8_file, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    [(name, status)] = store.verify(["hayao-lite"])
    assert name == "hayao-lite" and "checksum mismatch" in status and LITE.int8_file in status
    (pkg / LITE.int8_file).unlink()
    assert store.verify(["hayao-lite"]) == [("hayao-lite", f"{LITE.int8_file} missing")]


def test_stylize_offline_with_no_models_directory(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"  # does not even exist
    monkeypatch.setenv("ANIMELITE_MODELS", str(models))

    def no_network(*args, **kwargs):
        raise AssertionError("hayao-lite must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    src = tmp_path / "photo.jpg"
    Image.fromarray(photo_like(160, 120, 5)).save(src)
    out = tmp_path / "anime.png"
    # the default style, at fp32 (the default precision, auto, may pick INT8 on this CPU)
    assert main(["stylize", str(src), "-o", str(out), "--size", "128", "--precision", "fp32"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (96, 128, 3) and img.std() > 5  # 160x120 -> 128x96, not blank
    # the shipped INT8 model: no `models quantize` step, still offline
    out8 = tmp_path / "anime8.png"
    assert main(["stylize", str(src), "-o", str(out8), "--size", "128", "--precision", "int8"]) == 0
    img8 = np.asarray(Image.open(out8))
    assert img8.shape == img.shape and 0 < np.abs(img8.astype(int) - img).mean() < 8
    # nothing was downloaded or copied: at most the licence-notice marker
    assert not models.exists() or not [p for p in models.rglob("*") if p.suffix == ".onnx"]
    store = ModelStore(models)
    assert store.is_present("hayao-lite") and store.verify(["hayao-lite"]) == [("hayao-lite", "ok")]
    assert store.pull("hayao-lite") == EMBEDDED_DIR / LITE.file  # no-op, no network
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith("hayao-lite"))
    assert " yes " in line and "NON-COMMERCIAL" in line


@pytest.mark.shared
def test_fidelity_to_the_teacher_on_heldout_photos(tmp_path, shared_models, shared_photos):
    from animelite.engine import Generator, ModelSpec
    from animelite.imageio import decode_image
    from animelite.quality import psnr, ssim
    from animelite.pipeline import resize_rgb, working_size

    store = ModelStore(tmp_path / "models")
    spec = dict(layout="NCHW", value_range=(-1.0, 1.0), size_multiple=4)
    teacher = Generator(ModelSpec(path=store.pull("hayao", mirror=shared_models), **spec), threads=1)
    student = Generator(ModelSpec(path=store.runtime_path("hayao-lite"), **spec), threads=1)
    for rel in FIDELITY_PHOTOS:
        rgb = decode_image(shared_photos / rel).rgb
        x = resize_rgb(rgb, working_size(rgb.shape[1], rgb.shape[0], 512, 4)).astype(np.float32) / 255
        t = np.round(teacher.run(x) * 255) / 255
        s = np.round(student.run(x) * 255) / 255
        p, q = psnr(s, t), ssim(s, t)
        assert p >= MIN_PSNR and q >= MIN_SSIM, f"{rel}: PSNR {p:.2f} dB, SSIM {q:.4f}"
