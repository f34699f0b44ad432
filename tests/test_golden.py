"""Golden images: the same options give the same pixels, whatever the code's shape.

Made before the architecture work of issue 14 and kept since, so a refactor
that moves code around cannot silently change what users get. Every case runs
a full :class:`~animelite.pipeline.Stylizer` (one thread, so the result does
not depend on how the work is split) on a deterministic synthetic photo.

- Models that may be committed (synthetic random weights made here, and the
  embedded ``hayao-lite``): the expected output is a small PNG in
  ``tests/golden/``. On the machine that made them the match is exact; other
  CPUs pick other SIMD kernels in the runtimes, so the test allows a level or
  two of rounding (``MAX_DIFF``) and requires nearly every pixel to be exact
  on the CPU recorded in ``golden.json``.
- Real weights from ``../shared`` (never committed, nor anything made from
  them): only a SHA-256 of the output pixels is kept, per CPU model, and the
  case is checked where that CPU's digest exists.

``ANIMELITE_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` rewrites them (only
after a change that is *meant* to change pixels; say so in the commit).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from animelite.pipeline import Stylizer

from conftest import SHARED
from helpers import make_store, photo_like

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = GOLDEN / "golden.json"
UPDATE = os.environ.get("ANIMELITE_UPDATE_GOLDEN") == "1"
MAX_DIFF = 2  # levels, on another CPU than the one that made the goldens


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _png(rgb: np.ndarray) -> bytes:
    """A minimal RGB PNG writer (zlib level 9), so the goldens do not depend on Pillow's encoder."""
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _manifest() -> dict:
    if MANIFEST.is_file():
        return json.loads(MANIFEST.read_text())
    return {"cpu": None, "images": {}, "shared": {}}


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("golden"))


def _face_photo() -> np.ndarray:
    """A flat 'portrait': the portrait face mode needs no detector, so no real face is needed."""
    return photo_like(180, 240, seed=5)


# (case name, style, Stylizer options, input maker)
COMMITTABLE = [
    ("lite_fp32", "hayao-lite", {}, lambda: photo_like(200, 150, seed=1)),
    ("lite_int8", "hayao-lite", {"precision": "int8"}, lambda: photo_like(200, 150, seed=1)),
    ("lite_hd_keep", "hayao-lite", {"mode": "hd", "size": 160, "keep_size": True},
     lambda: photo_like(220, 170, seed=2)),
    ("lite_tiled", "hayao-lite", {"size": 320, "tile": 128}, lambda: photo_like(330, 250, seed=3)),
    ("lite_portrait", "hayao-lite", {"faces": "portrait", "face_size": 128}, _face_photo),
    ("tiny_keep", "tiny", {"keep_size": True}, lambda: photo_like(150, 120, seed=4)),
    ("randv2", "randv2", {"size": 96}, lambda: photo_like(120, 90, seed=6)),
]


def _run(style: str, opts: dict, make_input, store=None) -> np.ndarray:
    # fp32 unless a case asks otherwise: the goldens were made before "auto" became the default precision
    options = {"size": 128, "threads": 1, "faces": "off", "notice": lambda _m: None, "precision": "fp32", **opts}
    if store is not None:
        options["store"] = store
    return Stylizer(style, **options).stylize(make_input()).image


@pytest.mark.parametrize("name,style,opts,make_input", COMMITTABLE, ids=[c[0] for c in COMMITTABLE])
def test_golden_images(name, style, opts, make_input, synthetic_store):
    if opts.get("faces") == "portrait":
        pytest.importorskip("cv2")
    out = _run(style, opts, make_input, synthetic_store)
    path = GOLDEN / f"{name}.png"
    manifest = _manifest()
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(_png(out))
        manifest["cpu"] = cpu_model()
        manifest["images"][name] = hashlib.sha256(out.tobytes()).hexdigest()
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return
    want = _read_png(path)
    assert out.shape == want.shape, f"{name}: shape {out.shape} != golden {want.shape}"
    diff = np.abs(out.astype(np.int16) - want.astype(np.int16))
    if manifest.get("cpu") == cpu_model():
        assert hashlib.sha256(out.tobytes()).hexdigest() == manifest["images"][name], \
            f"{name}: pixels changed (max diff {diff.max()}, {np.count_nonzero(diff)} values differ)"
    else:
        assert diff.max() <= MAX_DIFF and np.count_nonzero(diff) / diff.size < 0.05, \
            f"{name}: max diff {diff.max()}, {np.count_nonzero(diff) / diff.size:.1%} of values differ"


SHARED_CASES = [
    ("hayao", "hayao", {}),
    ("hayao_tiled", "hayao", {"size": 384, "tile": 256}),
    ("hayao_openvino", "hayao", {"backend": "openvino"}),
    ("shinkai", "shinkai", {}),
    ("cute", "cute", {"size": 160}),
    ("hayao_face_cute", "hayao", {"faces": "portrait", "face_style": "cute", "face_size": 128}),
]


@pytest.mark.shared
@pytest.mark.skipif(SHARED is None, reason="../shared (real weights and photos) is not present")
@pytest.mark.parametrize("name,style,opts", SHARED_CASES, ids=[c[0] for c in SHARED_CASES])
def test_golden_real_weights(name, style, opts, tmp_path_factory):
    from animelite.store import ModelStore

    if opts.get("faces"):
        pytest.importorskip("cv2")
    if opts.get("backend") == "openvino":
        pytest.importorskip("openvino")
    store = ModelStore(tmp_path_factory.getbasetemp() / "golden-real")
    for s in {style, opts.get("face_style")} - {None}:
        store.pull(s, mirror=SHARED / "models", progress=False)
    digest = hashlib.sha256(_run(style, opts, lambda: photo_like(200, 150, seed=9), store).tobytes()).hexdigest()
    manifest = _manifest()
    cpu = cpu_model()
    if UPDATE:
        manifest.setdefault("shared", {}).setdefault(cpu, {})[name] = digest
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        return
    known = manifest.get("shared", {}).get(cpu, {})
    if name not in known:
        pytest.skip(f"no golden digest recorded for {cpu!r}")
    assert digest == known[name], f"{name}: pixels changed on {cpu}"
