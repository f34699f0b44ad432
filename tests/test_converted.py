"""The converted-model cache (animelite.store.converted): damaged files are noticed, named and rebuilt.

A converted model (``<name>.onnx`` built from a .tflite/.pt, and its
``.stats.onnx``/``.tile.onnx`` graphs) and a user INT8 model carry their own
sha256 and size in their sidecars: a 0-byte or bit-flipped file is rebuilt
from the verified source on the next use (identical bytes, identical
pictures), ``verify`` names it with the command that fixes it, and
``pull --force`` really fetches and converts again. Synthetic AnimeGANv2
weights (a .pt written without torch) stand in for the real ones; the test
marked ``shared`` uses the real hayao .tflite.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import photo_like, random_generator_weights
from PIL import Image
from test_tiling import write_pt

from animelite import convert, engine, styles
from animelite.cli import main
from animelite.errors import ModelError
from animelite.pipeline import Stylizer
from animelite.quantize import quantize_style
from animelite.store import ModelStore
from animelite.styles import Style

GRAPHS = {"": "randpt.onnx", "stats": "randpt.stats.onnx", "tile": "randpt.tile.onnx"}


def _flip_middle_byte(path: Path) -> None:
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size // 2)
        byte = fh.read(1)
        fh.seek(size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".tmp", ".part")))


@pytest.fixture()
def v2(tmp_path) -> ModelStore:
    """A models dir with 'randpt' (AnimeGANv2 random weights as a .pt) and all three of its graphs built."""
    store = ModelStore(tmp_path / "models")
    store.add(write_pt(tmp_path / "randpt.pt", random_generator_weights(11).tensors), "randpt")
    for graph in GRAPHS:
        store.runtime_path("randpt", graph=graph)
    return store


@pytest.fixture()
def builds(monkeypatch) -> list[str]:
    """The graphs the converter builds from now on (the real converter runs)."""
    calls: list[str] = []
    real = convert.build_runtime_model

    def counting(path, source_format, variant="", **kw):
        calls.append(kw.get("norm_stats", ""))
        return real(path, source_format, variant, **kw)

    monkeypatch.setattr(convert, "build_runtime_model", counting)
    return calls


def _stylize(root: Path, tile) -> np.ndarray:
    """A picture from a fresh store (a next process: nothing remembered) through the whole pipeline."""
    img = photo_like(256, 192, seed=2)
    return Stylizer("randpt", store=ModelStore(root), size=256, faces="off", tile=tile).stylize(img).image


def _digest_ok(path: Path) -> bool:
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    return meta["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_sidecars_record_the_files_own_digest(v2):
    for graph, name in GRAPHS.items():
        path = v2.root / name
        meta = json.loads((v2.root / (name + ".json")).read_text())
        assert meta["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert meta["size"] == path.stat().st_size
        assert meta.get("graph", "") == graph
    assert _leftovers(v2.root) == []


def test_zero_byte_converted_file_is_named_then_rebuilt(v2, builds):
    path = v2.root / "randpt.onnx"
    good = path.read_bytes()
    path.write_bytes(b"")
    store = ModelStore(v2.root)
    [(name, status)] = store.verify(["randpt"])
    assert name == "randpt"
    assert "randpt.onnx damaged" in status and f"0 bytes where {len(good)} were written" in status
    assert "animelite models pull randpt --force" in status
    assert path.read_bytes() == b""  # verify reports, it does not repair
    assert store.runtime_path("randpt") == path
    assert builds == [""] and path.stat().st_size > 0 and _digest_ok(path)
    assert ModelStore(v2.root).verify(["randpt"]) == [("randpt", "ok")]
    assert _leftovers(v2.root) == []


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_bit_flipped_graph_is_rebuilt_with_identical_output(v2, builds, graph):
    tile = 128 if graph else "off"  # the stats and tile graphs are the tiled path's
    before = _stylize(v2.root, tile)
    path = v2.root / GRAPHS[graph]
    good = path.read_bytes()
    _flip_middle_byte(path)
    flipped = path.read_bytes()
    assert flipped != good
    [(_, status)] = ModelStore(v2.root).verify(["randpt"])
    assert status.startswith(f"{path.name} damaged (converted model: its checksum is sha256:")
    engine.clear_cache()
    after = _stylize(v2.root, tile)
    assert path.read_bytes() != flipped and _digest_ok(path)  # rebuilt from the source ...
    assert np.array_equal(after, before)  # ... and the same picture
    assert builds == [{"": "", "stats": "output", "tile": "input"}[graph]]  # only the damaged graph


def test_verify_names_every_damaged_graph(v2):
    for name in GRAPHS.values():
        _flip_middle_byte(v2.root / name)
    [(_, status)] = ModelStore(v2.root).verify(["randpt"])
    problems = status.split("; ")
    assert [p.split(" ")[0] for p in problems] == list(GRAPHS.values())
    assert all("damaged" in p for p in problems)


def test_cli_verify_reports_a_damaged_converted_file(v2, capsys):
    _flip_middle_byte(v2.root / "randpt.onnx")
    assert main(["--models", str(v2.root), "models", "verify", "randpt"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("randpt: randpt.onnx damaged") and "animelite models pull randpt --force" in out
    assert main(["--models", str(v2.root), "models", "pull", "randpt", "--force"]) == 0
    assert main(["--models", str(v2.root), "models", "verify", "randpt"]) == 0


def test_sidecar_without_the_files_digest_is_stale_once(v2, builds):
    sidecar = v2.root / "randpt.onnx.json"
    meta = json.loads(sidecar.read_text())
    old = {k: v for k, v in meta.items() if k not in ("sha256", "size")}  # written before this change
    sidecar.write_text(json.dumps(old))
    (v2.root / "randpt.onnx").write_bytes(b"")  # and damaged: it cannot vouch for it
    assert ModelStore(v2.root).verify(["randpt"]) == [("randpt", "ok")]  # stale, rebuilt on use: not damage
    ModelStore(v2.root).runtime_path("randpt")
    assert builds == [""] and _digest_ok(v2.root / "randpt.onnx")
    assert {k: v for k, v in json.loads(sidecar.read_text()).items() if k in old} == old
    ModelStore(v2.root).runtime_path("randpt")
    assert builds == [""]


def test_pull_force_converts_again_even_when_the_sidecar_vouches(v2, builds):
    """A wrong file whose sidecar matches it (say, a converter bug since fixed): only --force redoes it."""
    path, sidecar = v2.root / "randpt.onnx", v2.root / "randpt.onnx.json"
    _flip_middle_byte(path)
    flipped = path.read_bytes()
    meta = json.loads(sidecar.read_text())
    meta.update(sha256="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())
    sidecar.write_text(json.dumps(meta))
    store = ModelStore(v2.root)
    assert store.pull("randpt", progress=False) == path and path.read_bytes() == flipped and builds == []
    # an added style has no URL: --force converts again from its verified file, every graph already cached
    assert store.pull("randpt", progress=False, force=True) == path
    assert path.read_bytes() != flipped and _digest_ok(path)
    assert sorted(builds) == ["", "input", "output"]
    assert _leftovers(v2.root) == []


@pytest.fixture()
def catalog_pt(tmp_path, monkeypatch):
    """A catalog style published as a .pt, served from a local mirror folder."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    src = write_pt(mirror / "forcept_gen.pt", random_generator_weights(5).tensors)
    sha = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    style = Style(name="forcept", family="animeganv2", file=src.name, source_format="pt",
                  url=f"http://127.0.0.1:9/{src.name}", checksum=sha,
                  layout="NCHW", size_multiple=4, value_range=(-1.0, 1.0), licence="test", description="test",
                  variant="pytorch")
    monkeypatch.setitem(styles.CATALOG, style.name, style)
    return style, mirror


def test_pull_force_fetches_and_converts_again(tmp_path, catalog_pt, builds):
    style, mirror = catalog_pt
    store = ModelStore(tmp_path / "models")
    runtime = store.pull(style.name, mirror=mirror, progress=False)
    store.runtime_path(style.name, graph="stats")
    files = (store.source_path(style), runtime, tmp_path / "models" / "forcept.stats.onnx")
    ids = {p: p.stat().st_ino for p in files}
    good = runtime.read_bytes()
    builds.clear()
    assert store.pull(style.name, mirror=mirror, progress=False) == runtime and builds == []  # nothing to do
    assert store.pull(style.name, mirror=mirror, progress=False, force=True) == runtime
    assert sorted(builds) == ["", "output"]  # the plain graph and the stats graph that was cached; no tile graph
    assert all(p.stat().st_ino != ids[p] for p in files)  # fetched and written anew
    assert runtime.read_bytes() == good
    assert not (tmp_path / "models" / "forcept.tile.onnx").exists()
    assert store.verify([style.name]) == [(style.name, "ok")]


def test_damaged_cache_and_damaged_source_says_pull_force(tmp_path, catalog_pt):
    """A source put in place by hand is converted unverified; once its cache is damaged it is checked."""
    style, mirror = catalog_pt
    root = tmp_path / "models"
    root.mkdir()
    write_pt(root / style.file, random_generator_weights(6).tensors)  # readable, not the published file
    runtime = ModelStore(root).runtime_path(style.name)
    runtime.write_bytes(b"")
    with pytest.raises(ModelError) as err:
        ModelStore(root).runtime_path(style.name)
    msg = str(err.value)
    assert f"{runtime} is damaged" in msg and str(root / style.file) in msg
    assert "animelite models pull forcept --force" in msg
    ModelStore(root).pull(style.name, mirror=mirror, progress=False, force=True)
    assert ModelStore(root).verify([style.name]) == [(style.name, "ok")]


def test_damaged_user_int8_model_is_named(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.add(write_pt(tmp_path / "randpt.pt", random_generator_weights(11).tensors), "randpt")
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(photo_like(96, 64)).save(calib / "p.png")
    int8 = quantize_style(store, "randpt", calib)
    meta = json.loads(int8.with_name(int8.name + ".json").read_text())
    assert meta["sha256"] == "sha256:" + hashlib.sha256(int8.read_bytes()).hexdigest()
    assert ModelStore(store.root).quantized_path("randpt") == int8
    assert ModelStore(store.root).verify(["randpt"]) == [("randpt", "ok")]
    _flip_middle_byte(int8)
    [(_, status)] = ModelStore(store.root).verify(["randpt"])
    assert status.startswith("randpt.int8.onnx damaged (INT8 model: its checksum is")
    assert "animelite models quantize randpt --calib DIR" in status
    with pytest.raises(ModelError, match=r"randpt\.int8\.onnx damaged"):
        Stylizer("randpt", store=ModelStore(store.root), size=64, precision="int8")
    assert main(["--models", str(store.root), "models", "verify", "randpt"]) == 1
    quantize_style(store, "randpt", calib)
    assert ModelStore(store.root).verify(["randpt"]) == [("randpt", "ok")]


def test_install_with_sidecar_failure_leaves_the_old_pair(v2):
    path, sidecar = v2.root / "randpt.onnx", v2.root / "randpt.onnx.json"
    before = (path.read_bytes(), sidecar.read_bytes())

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    with pytest.raises(ModelError) as err:
        v2.install_with_sidecar(write, path, sidecar, {"k": 1})
    assert str(path) in str(err.value) and "No space left" in str(err.value)
    assert (path.read_bytes(), sidecar.read_bytes()) == before
    assert _leftovers(v2.root) == []


@pytest.mark.shared
def test_real_hayao_damaged_conversion_is_rebuilt(shared_models, tmp_path):
    store = ModelStore(tmp_path / "models")
    path = store.pull("hayao", mirror=shared_models, progress=False)
    img = photo_like(192, 128, seed=5)

    def picture() -> np.ndarray:
        engine.clear_cache()
        return Stylizer("hayao", store=ModelStore(store.root), size=192, faces="off", notice=lambda _: None,
                        tile="off").stylize(img).image

    good_bytes, good = path.read_bytes(), picture()
    _flip_middle_byte(path)
    [(_, status)] = ModelStore(store.root).verify(["hayao"])
    assert status.startswith("hayao.onnx damaged") and "animelite models pull hayao --force" in status
    assert np.array_equal(picture(), good) and path.read_bytes() == good_bytes
    path.write_bytes(b"")
    assert ModelStore(store.root).pull("hayao", mirror=shared_models, progress=False, force=True) == path
    assert path.read_bytes() == good_bytes
    assert ModelStore(store.root).verify(["hayao"]) == [("hayao", "ok")]
