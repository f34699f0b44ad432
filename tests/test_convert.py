"""The AnimeGANv2 graph builder and the TFLite reader."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers import random_generator_weights
from PIL import Image

from animelite.convert import build_runtime_model, detect_format
from animelite.convert.animeganv2 import CONV_LAYERS, build_onnx, weights_from_state_dict
from animelite.convert.tflite_reader import read_animeganv2_tflite
from animelite.errors import ModelError

HAYAO = "animeganv2_hayao_256x256_integer_quant.tflite"
REFERENCE = "reference/animeganv2_hayao_fp32_reference.onnx"


def _session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def test_architecture_has_2_14m_parameters():
    w = random_generator_weights()
    assert len(CONV_LAYERS) == 25
    assert abs(w.parameter_count() - 2.14e6) < 0.01e6


@pytest.mark.parametrize("variant", ["tf", "pytorch"])
@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (96, 36)])
def test_built_graph_runs_any_aspect(variant, hw):
    sess = _session(build_onnx(random_generator_weights(1), variant))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, *hw)).astype(np.float32)
    y = sess.run(None, {"input": x})[0]
    assert y.shape == x.shape
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert y.std() > 1e-3  # not a constant image


def test_pytorch_variant_handles_sides_not_multiple_of_4():
    # align_corners resizes go to the exact encoder sizes, so odd sides work
    sess = _session(build_onnx(random_generator_weights(2), "pytorch"))
    x = np.zeros((1, 3, 37, 53), np.float32)
    assert sess.run(None, {"input": x})[0].shape == (1, 3, 37, 53)


def test_norm_forms_agree():
    w = random_generator_weights(3)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    a = _session(build_onnx(w, "tf", norm="instance")).run(None, {"input": x})[0]
    b = _session(build_onnx(w, "tf", norm="reduce")).run(None, {"input": x})[0]
    assert np.abs(a - b).max() < 1e-4


def test_variants_differ():
    # the two resize semantics really are different graphs
    w = random_generator_weights(4)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    a = _session(build_onnx(w, "tf")).run(None, {"input": x})[0]
    b = _session(build_onnx(w, "pytorch")).run(None, {"input": x})[0]
    assert np.abs(a - b).max() > 1e-3


def test_state_dict_checks():
    w = random_generator_weights(5)
    state = dict(w.tensors)
    assert weights_from_state_dict(state).parameter_count() == w.parameter_count()
    missing = dict(state)
    del missing["block_c.2.layers.1.1.weight"]
    with pytest.raises(ModelError, match="missing"):
        weights_from_state_dict(missing, "x.pt")
    bad = dict(state)
    bad["block_a.0.1.weight"] = np.zeros((32, 3, 3, 3), np.float32)
    with pytest.raises(ModelError, match="block_a.0.1.weight.*shape"):
        weights_from_state_dict(bad, "x.pt")
    extra = dict(state, **{"fc.weight": np.zeros(3, np.float32)})
    with pytest.raises(ModelError, match="unexpected tensor 'fc.weight'"):
        weights_from_state_dict(extra, "x.pt")
    # DataParallel checkpoints prefix every key with "module."
    prefixed = {"module." + k: v for k, v in state.items()}
    assert set(weights_from_state_dict(prefixed).tensors) == set(state)


def test_unknown_variant_and_bad_files(tmp_path):
    with pytest.raises(ModelError, match="variant"):
        build_onnx(random_generator_weights(), "keras")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"hello, this is not a model at all")
    with pytest.raises(ModelError, match="unknown model format"):
        detect_format(junk)
    with pytest.raises(ModelError, match="not a TFLite"):
        read_animeganv2_tflite(junk)
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 12)
    with pytest.raises(ModelError, match="fake.tflite"):
        read_animeganv2_tflite(fake)
    with pytest.raises(ModelError, match="cannot read"):
        detect_format(tmp_path / "absent.onnx")


# -- real weights -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hayao_sessions(shared_models):
    ours = _session(build_runtime_model(shared_models / HAYAO, "tflite"))
    reference = _session(str(shared_models / REFERENCE))
    return ours, reference


def test_tflite_structure(shared_models):
    assert detect_format(shared_models / HAYAO) == "tflite"
    w = read_animeganv2_tflite(shared_models / HAYAO)
    assert w.layernorm_eps == pytest.approx(1e-12, rel=1e-6)
    assert abs(w.parameter_count() - 2.14e6) < 0.01e6
    # only the depthwise convolutions carry a bias in the official weights
    biases = [k for k in w.tensors if k.endswith(".bias") and k.startswith(tuple(l.conv for l in CONV_LAYERS))]
    assert biases == [l.conv + ".bias" for l in CONV_LAYERS if l.depthwise]


# (width, height) of the working image: square, landscape, portrait, odd multiples of 4
PARITY_SIZES = [(256, 256), (512, 384), (288, 512), (500, 332)]


@pytest.mark.parametrize("size", PARITY_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_hayao_parity_with_reference(hayao_sessions, shared_photos, size):
    ours, reference = hayao_sessions
    photos = sorted((shared_photos / "scenes").glob("*"))[:: 12][:2]
    worst = 0.0
    for photo in photos:
        img = Image.open(photo).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        x = (np.asarray(img, np.float32) / 127.5 - 1.0)[None]
        ref = reference.run(None, {reference.get_inputs()[0].name: x})[0]
        got = ours.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0].transpose(0, 2, 3, 1)
        worst = max(worst, float(np.abs(ref - got).max()))
    print(f"parity {size}: max abs diff {worst:.2e}")
    assert worst <= 1e-3
