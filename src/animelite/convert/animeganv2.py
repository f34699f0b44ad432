"""The AnimeGANv2 generator as an ONNX graph, built from a weights dict.

One builder serves every AnimeGANv2 source (TFLite, PyTorch state dicts).
Weights use the canonical names of the public PyTorch port
(``block_a.0.1.weight`` ...), the layout is ONNX's OIHW, and the graph accepts
any height and width (NCHW float32 in [-1, 1] in and out).

Architecture (2.14 M parameters): reflect-padded convolutions, each followed by
a layer norm over (C, H, W) with a per-channel affine and LeakyReLU(0.2); four
inverted residual blocks with depthwise 3x3 convolutions at 1/4 resolution;
two bilinear x2 upsamples; a 1x1 convolution to RGB and tanh.

Two upstream semantics, picked by ``variant``:

``"tf"``  (the official TensorFlow weights, e.g. the Hayao TFLite release)
    layer-norm epsilon 1e-12; ``tf.image.resize_bilinear`` with
    ``align_corners=False, half_pixel_centers=False`` to twice the size. In
    ONNX that is ``Resize(mode="linear",
    coordinate_transformation_mode="asymmetric")`` with scales (1, 1, 2, 2):
    output pixel x samples input x / 2.
``"pytorch"``  (the public PyTorch port's state dicts)
    GroupNorm(1) epsilon 1e-5; ``F.interpolate(..., align_corners=True)`` to
    the exact size of the matching encoder feature map, i.e. ONNX
    ``coordinate_transformation_mode="align_corners"`` with explicit sizes.

The layer norm is written as Reshape -> InstanceNormalization -> Reshape ->
per-channel Mul/Add: InstanceNormalization over a (N, 1, C*H*W) view computes
exactly the (C, H, W) statistics in one kernel instead of a ReduceMean/Sub/
Mul/ReduceMean/Add/Sqrt/Div chain. It is a small win: 1.71 s vs 1.78 s median
at 512x512 on one thread of the 2-core EPYC (ONNX Runtime 1.32, five runs
interleaved), with outputs equal to 2.5e-6. ``norm="reduce"`` builds the chain
for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError

OPSET = 17
VARIANTS = {
    "tf": {"eps": 1e-12, "resize": "asymmetric"},
    "pytorch": {"eps": 1e-5, "resize": "align_corners"},
}


@dataclass(frozen=True)
class ConvLayer:
    conv: str  # canonical prefix of the convolution's weight (".weight"/".bias")
    norm: str | None  # canonical prefix of the following norm, None for the output conv
    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    pads: tuple[int, int, int, int] = (1, 1, 1, 1)  # reflect: top, left, bottom, right
    depthwise: bool = False
    act: bool = True  # LeakyReLU(0.2) after the norm

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_ch, 1 if self.depthwise else self.in_ch, self.kernel, self.kernel)


def _cnl(prefix, cin, cout, k=3, stride=1, pads=None, depthwise=False) -> ConvLayer:
    if pads is None:
        p = k // 2
        pads = (p, p, p, p)
    return ConvLayer(f"{prefix}.1", f"{prefix}.2", cin, cout, k, stride, pads, depthwise)


def _irb(prefix, cin, cout) -> list[ConvLayer]:
    mid = cin * 2
    return [
        _cnl(f"{prefix}.layers.0", cin, mid, k=1),
        _cnl(f"{prefix}.layers.1", mid, mid, depthwise=True),
        ConvLayer(f"{prefix}.layers.2", f"{prefix}.layers.3", mid, cout, 1, pads=(0, 0, 0, 0), act=False),
    ]


_DOWN = (0, 0, 1, 1)  # stride-2 convs reflect-pad one row/column at the bottom/right
BLOCK_A = [_cnl("block_a.0", 3, 32, k=7), _cnl("block_a.1", 32, 64, stride=2, pads=_DOWN), _cnl("block_a.2", 64, 64)]
BLOCK_B = [_cnl("block_b.0", 64, 128, stride=2, pads=_DOWN), _cnl("block_b.1", 128, 128)]
IRBS = [_irb("block_c.1", 128, 256), _irb("block_c.2", 256, 256), _irb("block_c.3", 256, 256),
        _irb("block_c.4", 256, 256)]
BLOCK_C_IN, BLOCK_C_OUT = _cnl("block_c.0", 128, 128), _cnl("block_c.5", 256, 128)
BLOCK_D = [_cnl("block_d.0", 128, 128), _cnl("block_d.1", 128, 128)]
BLOCK_E = [_cnl("block_e.0", 128, 64), _cnl("block_e.1", 64, 64), _cnl("block_e.2", 64, 32, k=7)]
OUT_LAYER = ConvLayer("out_layer.0", None, 32, 3, 1, pads=(0, 0, 0, 0), act=False)

#: Every convolution in execution order (the order TFLite stores them in).
CONV_LAYERS: list[ConvLayer] = (
    BLOCK_A + BLOCK_B + [BLOCK_C_IN] + [layer for irb in IRBS for layer in irb] + [BLOCK_C_OUT]
    + BLOCK_D + BLOCK_E + [OUT_LAYER]
)
#: The convolutions followed by a layer norm, in execution order: row i of ``norm_stats``.
NORM_LAYERS: list[ConvLayer] = [layer for layer in CONV_LAYERS if layer.norm]
NUM_NORMS = len(NORM_LAYERS)  # 24


@dataclass
class GeneratorWeights:
    """Float32 tensors under canonical names, plus what the source says of its norms."""

    tensors: dict[str, np.ndarray]
    layernorm_eps: float | None = None  # None: use the variant's default
    source: str = ""
    extra: dict = field(default_factory=dict)

    def parameter_count(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))


def expected_tensors() -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every tensor the generator needs (optional conv biases excluded)."""
    out: dict[str, tuple[int, ...]] = {}
    for layer in CONV_LAYERS:
        out[layer.conv + ".weight"] = layer.weight_shape
        if layer.depthwise:
            out[layer.conv + ".bias"] = (layer.out_ch,)
        if layer.norm:
            out[layer.norm + ".weight"] = (layer.out_ch,)
            out[layer.norm + ".bias"] = (layer.out_ch,)
    return out


def weights_from_state_dict(state: dict[str, np.ndarray], source: str = "") -> GeneratorWeights:
    """Check a PyTorch-port state dict against the architecture and wrap it."""
    expected = expected_tensors()
    cleaned = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    missing = [k for k in expected if k not in cleaned]
    if missing:
        raise ModelError(
            f"{source or 'state dict'}: not an AnimeGANv2 generator state dict "
            f"({len(missing)} tensors missing, e.g. {', '.join(missing[:3])})"
        )
    optional_bias = {layer.conv + ".bias": (layer.out_ch,) for layer in CONV_LAYERS}
    tensors = {}
    for key, value in cleaned.items():
        shape = expected.get(key) or optional_bias.get(key)
        if shape is None:
            raise ModelError(f"{source or 'state dict'}: unexpected tensor {key!r} for an AnimeGANv2 generator")
        arr = np.asarray(value, dtype=np.float32)
        if arr.shape != shape:
            raise ModelError(f"{source or 'state dict'}: tensor {key!r} has shape {arr.shape}, expected {shape}")
        tensors[key] = arr
    return GeneratorWeights(tensors=tensors, source=source)


class _Graph:
    """Tiny helper around onnx.helper that names nodes and collects initializers."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def build_onnx(weights: GeneratorWeights, variant: str = "tf", norm: str = "instance",
               norm_stats: str | None = None):
    """Return an ``onnx.ModelProto`` of the generator: NCHW float32 [-1, 1] -> same.

    ``norm`` picks how the (C, H, W) layer norm is written: "instance" (fused
    InstanceNormalization over a flat view, the default) or "reduce" (explicit
    ReduceMean chain, kept to measure the choice against).

    ``norm_stats`` builds one of the two graphs that tiled inference uses
    (:mod:`animelite.tiling`); None, the default, builds the plain generator:

    ``"output"`` (the *stats* graph)
        the generator (explicit ReduceMean layer norms) with a second output
        ``norm_stats``, float32 [L, 2]: the mean and (biased) variance that
        each of the :data:`NUM_NORMS` layer norms computed, in execution order.
        Statistics are over (C, H, W) of one image: run it with N = 1.
    ``"input"`` (the *tile* graph)
        takes a second input ``norm_stats`` [L, 2] and normalises every layer
        with those statistics instead of its own: ``x * (gamma / sqrt(var +
        eps)) + (beta - mean * gamma / sqrt(var + eps))``, a per-channel scale
        and shift (two elementwise ops; no reductions, so it is also faster).
        With the statistics fixed the network is a purely local operator,
        translation-equivariant for shifts that are multiples of 4, so tiles
        cut at multiples of 4 agree with each other away from their borders. A
        batch of N tiles shares the one set of statistics. The bilinear x2
        upsamples are translation-equivariant in both variants: "tf" keeps its
        own (asymmetric); "pytorch" uses half-pixel sampling at scale 2, the
        closest shift-invariant match of align_corners on a large image (within
        0.25 px of the 1/4- and 1/2-resolution grids), because align_corners
        maps each tile's corners onto each other and would shift every tile's
        features by up to half a pixel against its neighbour's.
    """
    import onnx
    from onnx import TensorProto, helper

    if variant not in VARIANTS:
        raise ModelError(f"unknown AnimeGANv2 variant {variant!r}; expected one of {sorted(VARIANTS)}")
    cfg = VARIANTS[variant]
    eps = weights.layernorm_eps if weights.layernorm_eps is not None else cfg["eps"]
    t = weights.tensors
    missing = [k for k in expected_tensors() if k not in t]
    if missing:
        raise ModelError(f"{weights.source or 'weights'}: missing tensors {', '.join(missing[:3])}")

    if norm_stats not in (None, "output", "input"):
        raise ModelError(f"unknown norm_stats {norm_stats!r}; expected None, 'output' or 'input'")
    if norm_stats == "output":
        norm = "reduce"  # the explicit chain has the mean and variance at hand

    g = _Graph()
    stats_rows: list[str] = []  # "output": one [1, 2] (mean, variance) row per layer norm
    if norm_stats == "input":
        stats_in = "norm_stats"
        eps_const = g.const("eps", np.array(eps, np.float32))
        col = g.const("stats_col", np.array([0], np.int64)), g.const("stats_col1", np.array([1], np.int64))
        means = g.op("Gather", [stats_in, col[0]], hint="means", axis=1)  # [L, 1]
        inv_std = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [g.op("Gather", [stats_in, col[1]], axis=1),
                                                                   eps_const])])], hint="inv_std")  # [L, 1]
        row_shape = g.const("stats_row_shape", np.array([1, 1, 1], np.int64))
    elif norm == "instance":
        ones1 = g.const("one_scale", np.ones(1, np.float32))
        zeros1 = g.const("zero_bias", np.zeros(1, np.float32))
        flat_shape = g.const("flat_shape", np.array([0, 1, -1], np.int64))
    elif norm == "reduce":
        eps_const = g.const("eps", np.array(eps, np.float32))
    else:
        raise ModelError(f"unknown layer-norm form {norm!r}; expected 'instance' or 'reduce'")

    def conv_block(x: str, layer: ConvLayer) -> str:
        if any(layer.pads):
            top, left, bottom, right = layer.pads
            pads = g.const(g.name("pads"), np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
            x = g.op("Pad", [x, pads], mode="reflect")
        inputs = [x, g.const(layer.conv + ".weight", t[layer.conv + ".weight"])]
        if layer.conv + ".bias" in t:
            inputs.append(g.const(layer.conv + ".bias", t[layer.conv + ".bias"]))
        x = g.op("Conv", inputs, hint=layer.conv.replace(".", "_"), kernel_shape=[layer.kernel] * 2,
                 strides=[layer.stride] * 2, group=layer.out_ch if layer.depthwise else 1)
        if layer.norm is None:
            return x
        x = layer_norm(x, layer)
        if layer.act:
            x = g.op("LeakyRelu", [x], alpha=0.2)
        return x

    def layer_norm(x: str, layer: ConvLayer) -> str:
        """Layer norm over (C, H, W) followed by the per-channel affine."""
        gamma_v = t[layer.norm + ".weight"]
        beta_v = t[layer.norm + ".bias"]
        if norm_stats == "input":  # fixed statistics: one per-channel scale and shift
            i = g.const(g.name("norm_index"), np.array([layer_index(layer)], np.int64))
            mean = g.op("Reshape", [g.op("Gather", [means, i], axis=0), row_shape])  # [1, 1, 1]
            scale = g.op("Mul", [g.const(layer.norm + ".weight", gamma_v.reshape(-1, 1, 1)),
                                 g.op("Reshape", [g.op("Gather", [inv_std, i], axis=0), row_shape])])  # [C, 1, 1]
            shift = g.op("Sub", [g.const(layer.norm + ".bias", beta_v.reshape(-1, 1, 1)),
                                 g.op("Mul", [mean, scale])])
            return g.op("Add", [g.op("Mul", [x, scale]), shift])
        if norm == "instance":  # instance norm of the (N, 1, C*H*W) view
            shape = g.op("Shape", [x])
            flat = g.op("Reshape", [x, flat_shape])
            normed = g.op("InstanceNormalization", [flat, ones1, zeros1], epsilon=float(eps))
            x = g.op("Reshape", [normed, shape])
        else:
            mean = g.op("ReduceMean", [x], axes=[1, 2, 3], keepdims=1)
            centred = g.op("Sub", [x, mean])
            var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=[1, 2, 3], keepdims=1)
            x = g.op("Div", [centred, g.op("Sqrt", [g.op("Add", [var, eps_const])])])
            if norm_stats == "output":
                pair = g.op("Concat", [mean, var], axis=3)  # [N, 1, 1, 2]
                stats_rows.append(g.op("Reshape", [pair, g.const(g.name("pair_shape"), np.array([1, 2], np.int64))]))
        gamma = g.const(layer.norm + ".weight", gamma_v.reshape(-1, 1, 1))
        beta = g.const(layer.norm + ".bias", beta_v.reshape(-1, 1, 1))
        return g.op("Add", [g.op("Mul", [x, gamma]), beta])

    def layer_index(layer: ConvLayer) -> int:
        return NORM_LAYERS.index(layer)

    def upsample(x: str, like: str) -> str:
        if norm_stats == "input" and cfg["resize"] == "align_corners":
            # tiles: the shift-invariant half-pixel x2 (see the docstring), not corner-to-corner
            scales = g.const(g.name("scales"), np.array([1, 1, 2, 2], np.float32))
            return g.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="half_pixel")
        if cfg["resize"] == "asymmetric":
            scales = g.const(g.name("scales"), np.array([1, 1, 2, 2], np.float32))
            return g.op("Resize", [x, "", scales], mode="linear", coordinate_transformation_mode="asymmetric")
        # align_corners=True to the exact spatial size of `like`
        x_shape = g.op("Shape", [x])
        like_shape = g.op("Shape", [like])
        nc = g.op("Slice", [x_shape, g.const(g.name("s0"), np.array([0], np.int64)),
                            g.const(g.name("s2"), np.array([2], np.int64))])
        hw = g.op("Slice", [like_shape, g.const(g.name("s2b"), np.array([2], np.int64)),
                            g.const(g.name("s4"), np.array([4], np.int64))])
        sizes = g.op("Concat", [nc, hw], axis=0)
        return g.op("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode="align_corners")

    x = "input"
    for layer in BLOCK_A:
        x = conv_block(x, layer)
    half = x
    for layer in BLOCK_B:
        x = conv_block(x, layer)
    x = conv_block(x, BLOCK_C_IN)
    for irb in IRBS:
        y = x
        for layer in irb:
            y = conv_block(y, layer)
        x = g.op("Add", [x, y]) if irb[0].in_ch == irb[-1].out_ch else y
    x = conv_block(x, BLOCK_C_OUT)
    x = upsample(x, half)
    for layer in BLOCK_D:
        x = conv_block(x, layer)
    x = upsample(x, "input")
    for layer in BLOCK_E:
        x = conv_block(x, layer)
    x = conv_block(x, OUT_LAYER)
    g.nodes.append(helper.make_node("Tanh", [x], ["output"], name="tanh_out"))

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    if norm_stats == "input":
        inputs.append(helper.make_tensor_value_info("norm_stats", TensorProto.FLOAT, [NUM_NORMS, 2]))
    elif norm_stats == "output":
        assert len(stats_rows) == NUM_NORMS
        g.nodes.append(helper.make_node("Concat", stats_rows, ["norm_stats"], name="norm_stats", axis=0))
        outputs.append(helper.make_tensor_value_info("norm_stats", TensorProto.FLOAT, [NUM_NORMS, 2]))
    graph = helper.make_graph(
        g.nodes, "animeganv2_generator" + {None: "", "output": "_stats", "input": "_tile"}[norm_stats],
        inputs, outputs, initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="animelite", doc_string=f"AnimeGANv2 generator ({variant} semantics)")
    model.ir_version = 8
    props = {"animelite.family": "animeganv2", "animelite.variant": variant,
             "animelite.layout": "NCHW", "animelite.source": weights.source}
    if norm_stats is not None:
        props["animelite.norm_stats"] = norm_stats
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model
