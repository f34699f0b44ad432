"""INT8 with no manual step, and ``precision="auto"`` (issue 10, part 3).

- ``precision="int8"`` makes the style's INT8 model on first use (calibrated on
  the photos that ship in ``animelite/calibration``), says so through
  ``notice``, and reuses it afterwards; one maker at a time across threads and
  processes; a user-calibrated model (``models quantize``) is never replaced.
- An unwritable models directory is a clear error naming the file; fp32 works.
- ``precision="auto"`` runs INT8 only where the style's data says INT8 was
  measured equivalent and faster *and* the CPU has VNNI/AMX (the flag reader
  is monkeypatched), falls back to fp32 with a notice when the INT8 model
  cannot be had, and runs fp32 on images tiled with shared statistics.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_store, photo_like, random_generator_weights
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from animelite import atomic, engine, quantize
from animelite.errors import ModelError
from animelite.options import DEFAULT_PRECISION, PRECISION_CHOICES, PRECISIONS, OptionError
from animelite.pipeline import Stylizer
from animelite.store import ModelStore, sidecar_of
from animelite.store.user_styles import write_user_styles
from animelite.styles import CATALOG, Measured

REPO = Path(__file__).resolve().parent.parent
VNNI = frozenset({"sse4_2", "avx2", "avx512f", "avx512_vnni"})
NO_VNNI = frozenset({"sse4_2", "avx2"})
GOOD = Measured("onnxruntime", "int8", psnr_db=40.0, ssim=0.99, speedup=2.0, cpu="test")


def named_conv_generator(path: Path) -> Path:
    """A small NCHW generator with two named convolutions: quick to calibrate at 384."""
    rng = np.random.default_rng(4)
    w1 = numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.normal(size=(3, 8, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.2),
        helper.make_node("Conv", ["a", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Tanh", ["c"], ["output"]),
    ]
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(nodes, "named", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def with_measured(store: ModelStore, name: str, *measured: Measured) -> None:
    """Give the user style *name* measurements, as the catalog's styles have them."""
    styles = [dataclasses.replace(s, measured=tuple(measured)) if s.name == name else s for s in store.user_styles()]
    write_user_styles(store.user_styles_path, styles)


@pytest.fixture
def store(tmp_path):
    """tiny and randv2 (tests/helpers.py), and 'named': a two-convolution model that calibrates in a moment."""
    store = make_store(tmp_path)
    store.add(named_conv_generator(tmp_path / "src" / "named.onnx"), "named", size_multiple=4)
    return store


@pytest.fixture
def one_photo_calibration(tmp_path, monkeypatch):
    """The shipped calibration set replaced by one small photo, so randv2 calibrates in a second."""
    folder = tmp_path / "calib"
    folder.mkdir()
    Image.fromarray(photo_like(96, 64, seed=3)).save(folder / "p.png")
    monkeypatch.setattr(quantize, "SHIPPED_CALIBRATION", folder)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """How many times the quantizer ran."""
    calls = []
    real = quantize.quantize_model

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(quantize, "quantize_model", counting)
    return calls


def _quiet(**kw):
    return {"size": 64, "faces": "off", "threads": 1, **kw}


# ---------------------------------------------------------------- the vocabulary


def test_auto_is_a_choice_and_the_default_but_not_a_runnable_precision():
    assert DEFAULT_PRECISION == "auto" and PRECISION_CHOICES == ("auto",) + PRECISIONS
    assert "auto" not in PRECISIONS  # the engine runs resolved precisions only
    with pytest.raises(ModelError, match="unknown precision"):
        engine.check_backend("onnxruntime", "auto")
    with pytest.raises(OptionError, match="precision must be one of auto, fp32, bf16, int8"):
        Stylizer("tiny", **_quiet(precision="int4"))


def test_cpu_flags_reads_the_flags_line(monkeypatch, tmp_path):
    flags = engine.cpu_flags()
    assert isinstance(flags, frozenset)
    if Path("/proc/cpuinfo").is_file() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "fpu" in flags or "sse2" in flags  # every x86-64 lists these
    monkeypatch.setattr(engine, "cpu_flags", lambda: NO_VNNI)
    assert not engine.cpu_has_int8_dot() and not engine.cpu_has_bf16()
    monkeypatch.setattr(engine, "cpu_flags", lambda: frozenset({"avx_vnni", "amx_bf16"}))
    assert engine.cpu_has_int8_dot() and engine.cpu_has_bf16()


# ---------------------------------------------------------------- the shipped calibration set


def test_calibration_photos_ship_with_their_licences():
    folder = quantize.SHIPPED_CALIBRATION
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) == 6 and sum(p.stat().st_size for p in photos) < 400_000
    licences = (folder / "LICENSES.md").read_text()
    for p in photos:
        assert re.search(rf"\| {re.escape(p.name)} \|.*\| (public domain|CC0)", licences), p.name
        with Image.open(p) as im:
            assert max(im.size) == 384
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"calibration/*.jpg"' in pyproject and '"calibration/*.md"' in pyproject


def test_first_use_calibrates_on_the_shipped_photos(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.add(named_conv_generator(tmp_path / "named.onnx"), "named", size_multiple=4)
    said = []
    s = Stylizer("named", store=store, notice=said.append, **_quiet(precision="int8"))
    assert s.precision == "int8" and s.generator.spec.path == store.root / "named.int8.onnx"
    meta = json.loads(sidecar_of(store.root / "named.int8.onnx").read_text())
    assert meta["origin"] == "auto"
    assert sorted(meta["calibration"]["photos"]) == sorted(p.name for p in quantize.SHIPPED_CALIBRATION.glob("*.jpg"))
    assert [m for m in said if m.startswith("making the INT8 model of named (first use, ~")] == said[:1]
    assert s.stylize(photo_like(80, 60)).precision == "int8"


# ---------------------------------------------------------------- int8 on first use


def test_int8_is_made_on_first_use_and_reused(store, one_photo_calibration, counted):
    said = []
    s = Stylizer("randv2", store=store, notice=said.append, **_quiet(precision="int8"))
    int8 = store.root / "randv2.int8.onnx"
    assert s.precision == "int8" and s.precision_reason == "asked for" and s.generator.spec.path == int8
    assert len(counted) == 1 and re.fullmatch(r"making the INT8 model of randv2 \(first use, ~\d+ s\)\.\.\.", said[0])
    r = s.stylize(photo_like(90, 60))
    assert r.precision == "int8" and r.image.shape[1] == 64
    stamp = int8.stat().st_mtime_ns

    engine.clear_cache()
    said.clear()
    again = Stylizer("randv2", store=ModelStore(store.root), notice=said.append, **_quiet(precision="int8"))
    assert again.generator.spec.path == int8 and again.precision == "int8"
    assert len(counted) == 1 and int8.stat().st_mtime_ns == stamp and not said  # no second quantization
    assert ModelStore(store.root).verify(["randv2"]) == [("randv2", "ok")]


def test_threads_make_it_once(store, counted):
    paths, errors = [], []

    def make():
        try:
            paths.append(quantize.ensure_int8(ModelStore(store.root), "named"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and len(counted) == 1


def test_two_processes_make_it_once_and_intact(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.add(named_conv_generator(tmp_path / "named.onnx"), "named", size_multiple=4)
    code = textwrap.dedent(f"""
        from animelite.quantize import ensure_int8
        from animelite.store import ModelStore
        said = []
        ensure_int8(ModelStore({str(store.root)!r}), "named", said.append)
        print("made" if said else "reused")
    """)
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["made", "reused"]
    assert ModelStore(store.root).verify(["named"]) == [("named", "ok")]
    assert not [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_user_calibrated_model_takes_precedence_and_is_never_replaced(store, tmp_path, counted):
    calib = tmp_path / "mine"
    calib.mkdir()
    for i in range(2):
        Image.fromarray(photo_like(80, 64, seed=10 + i)).save(calib / f"{i}.png")
    quantize.ensure_int8(store, "named")  # automatic first ...
    assert json.loads(sidecar_of(store.root / "named.int8.onnx").read_text())["origin"] == "auto"
    quantize.quantize_style(store, "named", calib)  # ... replaced by `models quantize`
    int8 = store.root / "named.int8.onnx"
    meta = json.loads(sidecar_of(int8).read_text())
    assert meta["origin"] == "user" and meta["calibration"]["photos"] == ["0.png", "1.png"]
    assert len(counted) == 2
    assert Stylizer("named", store=store, **_quiet(precision="int8")).generator.spec.path == int8
    assert len(counted) == 2  # used as it is

    # made from another fp32 model: an error that says how to make it again, never silently replaced
    meta["fp32_sha256"] = "0" * 64
    sidecar_of(int8).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"calibrated with `models quantize` is unusable.*models quantize named "
                                         r"--calib DIR.*named\.int8\.onnx"):
        Stylizer("named", store=ModelStore(store.root), **_quiet(precision="int8"))
    assert len(counted) == 2 and json.loads(sidecar_of(int8).read_text())["origin"] == "user"


def test_damaged_automatic_model_is_made_again(store, counted):
    int8 = quantize.ensure_int8(store, "named")
    data = bytearray(int8.read_bytes())
    data[len(data) // 2] ^= 0xFF
    int8.write_bytes(bytes(data))
    [(_, status)] = ModelStore(store.root).verify(["named"])
    assert "named.int8.onnx damaged" in status and "made again on next use" in status
    Stylizer("named", store=ModelStore(store.root), **_quiet(precision="int8"))
    assert len(counted) == 2 and ModelStore(store.root).verify(["named"]) == [("named", "ok")]


def test_a_model_the_quantizer_cannot_take(store, monkeypatch):
    """tiny's convolution has no name: explicit int8 is a clear error, auto runs fp32 and says why."""
    with pytest.raises(ModelError, match=r"style 'tiny' cannot run at INT8: .*tiny\.onnx: no named convolutions"
                                         r".*--precision fp32"):
        Stylizer("tiny", store=store, **_quiet(precision="int8"))
    assert not (store.root / "tiny.int8.onnx").exists()
    monkeypatch.setattr(engine, "cpu_flags", lambda: VNNI)
    with_measured(store, "tiny", GOOD)
    said = []
    s = Stylizer("tiny", store=ModelStore(store.root), notice=said.append, **_quiet())
    assert s.precision == "fp32" and s.stylize(photo_like(64, 48)).precision == "fp32"
    assert any("'tiny' runs fp32" in m and "no named convolutions" in m for m in said)
    with pytest.warns(quantize.PrecisionNotice, match="'tiny' runs fp32"):  # no notice callback: a warning
        Stylizer("tiny", store=ModelStore(store.root), **_quiet())


# ---------------------------------------------------------------- an unwritable cache


def _refuse_int8_writes(monkeypatch, err: int, at_write: bool = False):
    """Make the models directory refuse the INT8 files: read-only (at open) or full (while writing)."""
    real_open = atomic._open_temp

    def open_temp(folder, target_name):
        if ".int8.onnx" in target_name and not at_write:
            raise OSError(err, "Read-only file system")
        return real_open(folder, target_name)

    monkeypatch.setattr(atomic, "_open_temp", open_temp)
    if at_write:
        def full(fp32, out, inputs):
            Path(out).write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(quantize, "quantize_model", full)


@pytest.mark.parametrize("err,at_write,text", [(errno.EROFS, False, "Read-only file system"),
                                               (errno.ENOSPC, True, "No space left on device")],
                         ids=["read-only", "disk-full"])
def test_unwritable_cache_names_the_path_and_fp32_works(store, monkeypatch, err, at_write, text):
    _refuse_int8_writes(monkeypatch, err, at_write)
    before = sorted(p.name for p in store.root.iterdir())
    int8 = store.root / "named.int8.onnx"
    with pytest.raises(ModelError) as info:
        Stylizer("named", store=store, **_quiet(precision="int8"))
    msg = str(info.value)
    assert f"cannot write the INT8 model of style 'named' {int8}" in msg and text in msg
    assert "--precision fp32 works without it" in msg
    after = sorted(p.name for p in store.root.iterdir() if not p.name.endswith(".lock"))
    assert after == before  # nothing half-written left behind
    fp32 = Stylizer("named", store=store, **_quiet(precision="fp32"))
    assert fp32.stylize(photo_like(64, 48)).precision == "fp32"
    # auto that chose INT8 runs fp32 and says why
    monkeypatch.setattr(engine, "cpu_flags", lambda: VNNI)
    with_measured(store, "named", GOOD)
    said = []
    auto = Stylizer("named", store=ModelStore(store.root), notice=said.append, **_quiet())
    assert auto.precision == "fp32" and any(str(int8) in m and "runs fp32" in m for m in said)


# ---------------------------------------------------------------- precision="auto"


@pytest.mark.parametrize("flags,measured,want,why", [
    (VNNI, (GOOD,), "int8", "CPU has avx512_vnni"),
    (frozenset({"avx_vnni"}), (GOOD,), "int8", "CPU has avx_vnni"),
    (frozenset({"amx_int8"}), (GOOD,), "int8", "CPU has amx_int8"),
    (NO_VNNI, (GOOD,), "fp32", "needs avx512_vnni or avx_vnni or amx_int8"),
    (VNNI, (), "fp32", "no faster precision measured"),
    (VNNI, (dataclasses.replace(GOOD, psnr_db=27.0),), "fp32", "27.0 dB from fp32"),
    (VNNI, (dataclasses.replace(GOOD, speedup=0.9),), "fp32", "not faster"),
    (VNNI, (dataclasses.replace(GOOD, backend="openvino"),), "fp32", "no faster precision measured"),
])
def test_auto_precision_rule(store, flags, measured, want, why):
    style = dataclasses.replace(store.style("randv2"), measured=measured)
    precision, reason = quantize.auto_precision(style, "onnxruntime", flags)
    assert precision == want and why in reason


def test_auto_prefers_the_fastest_equivalent_precision():
    style = dataclasses.replace(CATALOG["hayao-lite"], measured=(
        Measured("openvino", "int8", 40.0, 0.99, 1.8), Measured("openvino", "bf16", 55.0, 0.999, 2.0)))
    assert quantize.auto_precision(style, "openvino", VNNI | {"avx512_bf16"})[0] == "bf16"
    assert quantize.auto_precision(style, "openvino", VNNI)[0] == "int8"  # no bf16 on this CPU
    assert quantize.auto_precision(style, "openvino", NO_VNNI)[0] == "fp32"


def test_auto_picks_int8_only_on_a_vnni_cpu_with_data_that_allows(store, counted, monkeypatch):
    monkeypatch.setattr(engine, "cpu_flags", lambda: VNNI)
    s = Stylizer("named", store=store, **_quiet())  # no measurements: fp32, nothing made
    assert s.precision == "fp32" and "no faster precision measured" in s.precision_reason and not counted
    with_measured(store, "named", GOOD)
    monkeypatch.setattr(engine, "cpu_flags", lambda: NO_VNNI)
    s = Stylizer("named", store=ModelStore(store.root), **_quiet())
    assert s.precision == "fp32" and "avx512_vnni" in s.precision_reason and not counted
    monkeypatch.setattr(engine, "cpu_flags", lambda: VNNI)
    said = []
    s = Stylizer("named", store=ModelStore(store.root), notice=said.append, **_quiet())
    assert s.precision == "int8" and s.precision_reason.startswith("auto: int8: measured 40.0 dB")
    assert len(counted) == 1 and said[0].startswith("making the INT8 model of named")
    img = photo_like(90, 60, seed=2)
    r = s.stylize(img)
    assert r.precision == "int8"
    explicit = Stylizer("named", store=ModelStore(store.root), **_quiet(precision="int8")).stylize(img)
    assert np.array_equal(r.image, explicit.image)


def test_auto_runs_fp32_on_shared_statistics_tiles(tmp_path, one_photo_calibration, monkeypatch):
    from test_tiling import write_pt

    store = ModelStore(tmp_path / "models")
    store.add(write_pt(tmp_path / "randpt.pt", random_generator_weights(11).tensors), "randpt")
    with_measured(store, "randpt", GOOD)
    monkeypatch.setattr(engine, "cpu_flags", lambda: VNNI)
    whole = Stylizer("randpt", store=ModelStore(store.root), size=128, tile=128, faces="off", threads=1)
    assert whole.precision == "int8"
    big = photo_like(200, 150, seed=2)
    assert whole.stylize(big).precision == "int8"  # 128x96 working: one run, at INT8
    auto = Stylizer("randpt", store=ModelStore(store.root), size=160, tile=128, faces="off", threads=1)
    assert auto.precision == "int8"
    r = auto.stylize(big)  # 160x120 working, in tiles of 128 with shared statistics: fp32
    assert r.precision == "fp32"
    fp32 = Stylizer("randpt", store=ModelStore(store.root), size=160, tile=128, faces="off", threads=1,
                    precision="fp32").stylize(big)
    assert np.array_equal(r.image, fp32.image)
    with pytest.raises(ModelError, match="INT8 cannot run tiled"):  # asked for explicitly: refused, as before
        Stylizer("randpt", store=ModelStore(store.root), size=160, tile=128, faces="off", threads=1,
                 precision="int8").stylize(big)


def test_catalog_measurements_follow_the_rule():
    """Every catalog style's measured data says what auto does with it on a VNNI CPU."""
    for style in CATALOG.values():
        for m in style.measured:
            assert m.backend in ("onnxruntime", "openvino") and m.precision in ("int8", "bf16")
            assert 0 < m.ssim <= 1 and m.psnr_db > 0 and m.speedup > 0 and m.cpu
    lite = CATALOG["hayao-lite"]
    assert quantize.auto_precision(lite, "onnxruntime", VNNI)[0] == "int8"
    assert quantize.auto_precision(lite, "onnxruntime", NO_VNNI)[0] == "fp32"
