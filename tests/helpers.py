"""Synthetic models made at test time, so the suite needs no downloaded weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from animelite.convert.animeganv2 import GeneratorWeights, expected_tensors


def random_generator_weights(seed: int = 0, eps: float | None = None) -> GeneratorWeights:
    """AnimeGANv2-shaped weights with He-style random values and non-trivial norm affines."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_tensors().items():
        if name.endswith(".weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            tensors[name] = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        elif name.endswith(".weight"):  # norm gamma
            tensors[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # norm beta, depthwise bias
            tensors[name] = rng.normal(0, 0.1, shape).astype(np.float32)
    return GeneratorWeights(tensors=tensors, layernorm_eps=eps, source=f"random(seed={seed})")


def tiny_onnx_generator(path: Path, layout: str = "NHWC", seed: int = 0) -> Path:
    """A small conv -> tanh image-to-image model in [-1, 1] with dynamic H, W."""
    rng = np.random.default_rng(seed)
    w = (np.eye(3, dtype=np.float32)[:, :, None, None] * 0.9
         + rng.normal(0, 0.05, (3, 3, 1, 1)).astype(np.float32))
    nodes, inits = [], [numpy_helper.from_array(w, "w")]
    x = "input"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["input"], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes.append(helper.make_node("Conv", [x, "w"], ["conv"], kernel_shape=[1, 1]))
    out = "output" if layout == "NCHW" else "y_nchw"
    nodes.append(helper.make_node("Tanh", ["conv"], [out]))
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["y_nchw"], ["output"], perm=[0, 2, 3, 1]))
    shape = ["N", "H", "W", 3] if layout == "NHWC" else ["N", 3, "H", "W"]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_store(root: Path):
    """A models directory holding two synthetic styles: 'tiny' (NHWC ONNX, multiple 8)
    and 'randv2' (an AnimeGANv2 graph with random weights, NCHW, multiple 4)."""
    from animelite.convert.animeganv2 import build_onnx
    from animelite.store import ModelStore

    store = ModelStore(root / "models")
    src = root / "src"
    src.mkdir(exist_ok=True)
    store.add(tiny_onnx_generator(src / "tiny.onnx"), "tiny", description="tiny test model")
    onnx.save(build_onnx(random_generator_weights(7), "tf"), str(src / "randv2.onnx"))
    store.add(src / "randv2.onnx", "randv2", size_multiple=4)
    return store


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with texture, as an (H, W, 3) uint8 RGB array."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1) * 255, yy / max(height - 1, 1) * 255,
                     np.full_like(xx, 128)], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
