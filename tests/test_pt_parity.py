"""The .pt path (torch-free reader + our ONNX builder) against an independent PyTorch generator."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from animelite.convert import build_runtime_model, detect_format

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def saved_generator(tmp_path_factory):
    from animelite.torch_reference import Generator, random_state_dict

    state = random_state_dict(seed=11)
    net = Generator().eval()
    net.load_state_dict(state)
    path = tmp_path_factory.mktemp("pt") / "random_generator.pt"
    torch.save(state, path)
    return net, path


@pytest.mark.parametrize("hw", [(64, 64), (96, 64), (80, 128), (37, 53)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_pt_graph_matches_pytorch(saved_generator, hw):
    net, path = saved_generator
    assert detect_format(path) == "pt"
    model = build_runtime_model(path, "pt")  # variant "pytorch": align_corners=True, eps 1e-5
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, *hw)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x), align_corners=True).numpy()
    got = sess.run(None, {"input": x})[0]
    diff = float(np.abs(expected - got).max())
    print(f".pt parity {hw}: max abs diff {diff:.2e}")
    assert got.shape == expected.shape
    assert diff <= 1e-4


def test_pt_added_as_a_style_stylizes(saved_generator, tmp_path):
    from animelite.pipeline import Stylizer
    from animelite.store import ModelStore

    _, path = saved_generator
    store = ModelStore(tmp_path / "models")
    style = store.add(path, "mypt")
    assert (style.family, style.source_format, style.layout, style.size_multiple) == ("animeganv2", "pt", "NCHW", 4)
    result = Stylizer("mypt", size=64, store=store).stylize(np.full((50, 70, 3), 128, np.uint8))
    assert result.image.shape == (44, 64, 3)


def test_tf_semantics_match_an_independent_pytorch_generator(shared_models):
    # The official TF weights through our TFLite reader + builder ("tf" variant)
    # against the PyTorch reference with TF resize semantics and eps 1e-12.
    from animelite.convert.tflite_reader import read_animeganv2_tflite
    from animelite.torch_reference import from_weights

    weights = read_animeganv2_tflite(shared_models / "animeganv2_hayao_256x256_integer_quant.tflite")
    net = from_weights(weights, "tf")
    model = build_runtime_model(shared_models / "animeganv2_hayao_256x256_integer_quant.tflite", "tflite")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(6).uniform(-1, 1, (1, 3, 96, 160)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(expected - sess.run(None, {"input": x})[0]).max() <= 1e-4
