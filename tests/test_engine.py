"""The engine: sessions, tensor conventions, the session cache and pools, the smallest runnable side."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import make_store, photo_like, tiny_onnx_generator

from animelite import engine
from animelite.engine import Generator, GeneratorPool, ModelSpec, Session, get_generator, model_input, model_output
from animelite.errors import ModelError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("engine"))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_model_input_and_output_follow_layout_and_range(layout):
    rgb = photo_like(24, 16)
    for value_range in [(-1.0, 1.0), (0.0, 255.0)]:
        x = model_input(rgb, layout, value_range)
        assert x.dtype == np.float32 and x.flags.c_contiguous
        assert x.shape == ((1, 3, 16, 24) if layout == "NCHW" else (1, 16, 24, 3))
        assert x.min() >= value_range[0] and x.max() <= value_range[1]
        back = model_output(x.copy(), layout, value_range)
        assert back.shape == (16, 24, 3)
        np.testing.assert_allclose(back, rgb / 255.0, atol=1e-5)
        # float input in [0, 1] maps to the same tensor as uint8 (to float rounding)
        np.testing.assert_allclose(model_input(rgb / np.float32(255), layout, value_range), x, atol=1e-4)
    assert model_output(np.full((1, 4, 4, 3), 9.0, np.float32), "NHWC").max() == 1.0  # clipped


def test_session_runs_and_names_its_inputs(tmp_path):
    path = tiny_onnx_generator(tmp_path / "t.onnx", "NCHW")
    s = Session(path, threads=1)
    assert s.input_names == ["input"] and s.output_names == ["output"]
    y = s.run({"input": np.zeros((1, 3, 8, 8), np.float32)})[0]
    assert y.shape == (1, 3, 8, 8)


def test_a_broken_model_is_a_model_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(ModelError, match="broken.onnx: ONNX Runtime cannot load"):
        Session(bad, threads=1)
    with pytest.raises(ModelError, match="broken.onnx"):
        engine.ort_session(bad, 1)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_generator_gives_images_back_in_their_own_convention(tmp_path, layout):
    gen = Generator(ModelSpec(tiny_onnx_generator(tmp_path / f"{layout}.onnx", layout), layout=layout), threads=1)
    rgb = photo_like(32, 24).astype(np.float32) / 255
    y = gen.run(rgb)
    assert y.shape == rgb.shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    assert np.corrcoef(y.ravel(), rgb.ravel())[0, 1] > 0.9  # the tiny model is close to identity
    with pytest.raises(ValueError, match="multiple of 8"):
        gen.run(rgb[:20])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        gen.run(rgb[..., :2])


def test_sessions_are_cached_and_renewed_when_the_file_changes(tmp_path):
    path = tiny_onnx_generator(tmp_path / "m.onnx", "NCHW")
    spec = ModelSpec(path, layout="NCHW")
    a = get_generator(spec, threads=1)
    assert get_generator(spec, threads=1) is a
    assert get_generator(spec, threads=2) is not a
    tiny_onnx_generator(path, "NCHW", seed=3)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert get_generator(spec, threads=1) is not a
    path.unlink()
    with pytest.raises(ModelError, match="is missing"):
        get_generator(spec, threads=1)


def test_a_pool_runs_several_images_at_once_with_the_same_result(tmp_path):
    spec = ModelSpec(tiny_onnx_generator(tmp_path / "p.onnx", "NHWC"), layout="NHWC")
    pool = get_generator(spec, threads=1, sessions=2)
    assert isinstance(pool, GeneratorPool) and pool.size == 2 and pool.threads == 1
    rgb = photo_like(16, 16).astype(np.float32) / 255
    want = Generator(spec, threads=1).run(rgb)
    out: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: out.append(pool.run(rgb))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 6 and all(np.array_equal(o, want) for o in out)


def test_smallest_side_is_measured_once_per_model(store):
    randv2 = Generator(ModelSpec(store.runtime_path("randv2"), layout="NCHW", size_multiple=4), threads=1)
    need = engine.probe_min_side(randv2)
    assert 4 < need <= engine.MAX_PROBE_SIDE and need % 4 == 0
    randv2.run(np.zeros((need, need, 3), np.float32))  # runs at that side
    with pytest.raises(Exception):  # noqa: B017 - and not one multiple below (whatever ORT raises)
        randv2.run(np.zeros((need - 4, need - 4, 3), np.float32))
    tiny = Generator(ModelSpec(store.runtime_path("tiny"), layout="NHWC", size_multiple=8), threads=1)
    assert engine.probe_min_side(tiny) == 8  # a 1x1 convolution runs at any side


def test_openvino_session_matches_onnxruntime(tmp_path):
    pytest.importorskip("openvino")
    spec = ModelSpec(tiny_onnx_generator(tmp_path / "o.onnx", "NHWC"), layout="NHWC")
    rgb = photo_like(24, 16).astype(np.float32) / 255
    a = Generator(spec, threads=1).run(rgb)
    b = Generator(spec, threads=1, backend="openvino").run(rgb)
    assert np.abs(a - b).max() < 1e-4


def test_stylizing_never_imports_torch_or_the_server(tmp_path):
    """The runtime is torch-free: torch is a bench/test extra (animelite.torch_reference only)."""
    code = ("import sys, numpy as np, animelite\n"
            "animelite.stylize(np.full((40, 60, 3), 128, np.uint8), size=64, faces='off')\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastapi', 'uvicorn'))\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    env = {**os.environ, "ANIMELITE_MODELS": str(tmp_path / "models")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
