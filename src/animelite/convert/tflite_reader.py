"""Read the AnimeGANv2 generator's weights out of a TFLite flatbuffer.

The published Hayao file is *full-integer*: int8 weights with per-channel
scales, int32 biases, int8 layer-norm gamma/beta, and quantize/dequantize ops
around every float-only op. We do not run that graph. We walk its operators in
order, pick out each convolution (with the reflect padding that feeds it) and
each layer norm's gamma, beta and epsilon, dequantize them to float32, check
the structure against the AnimeGANv2 generator, and hand the weights to the
graph builder under the canonical (PyTorch-port) names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .animeganv2 import CONV_LAYERS, GeneratorWeights

# TFLite enums we rely on (tflite.TensorType / Padding / MirrorPadMode).
_TENSOR_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_PADDING_VALID = 1
_MIRROR_REFLECT = 0


@dataclass
class _Conv:
    weight: np.ndarray  # OIHW float32
    bias: np.ndarray  # [O] float32
    stride: int
    pads: tuple[int, int, int, int]  # top, left, bottom, right (reflect)
    depthwise: bool


def _op_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


class _Reader:
    def __init__(self, path: Path):
        import tflite

        self.path = path
        try:
            self.buf = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(self.buf) < 8 or self.buf[4:8] != b"TFL3":
            raise ModelError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)")
        try:
            self.model = tflite.Model.GetRootAsModel(self.buf, 0)
            self.graph = self.model.Subgraphs(0)
            self.n_ops = self.graph.OperatorsLength()
        except Exception as exc:  # noqa: BLE001 - flatbuffers raise assorted errors on garbage
            raise ModelError(f"{path}: corrupt TFLite flatbuffer ({exc})") from exc
        self.names = _op_names()

    # -- tensors -----------------------------------------------------------
    def tensor(self, index: int):
        return self.graph.Tensors(int(index))

    def constant(self, index: int) -> np.ndarray | None:
        """The tensor's stored data, dequantized to float32; None if not a constant."""
        t = self.tensor(index)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        dtype = _TENSOR_DTYPES.get(t.Type())
        if dtype is None:
            raise ModelError(f"{self.path}: tensor {t.Name().decode()} has unsupported type {t.Type()}")
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        values = np.frombuffer(data.tobytes(), dtype=dtype)
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelError(f"{self.path}: tensor {t.Name().decode()} is truncated")
        values = values.reshape(shape)
        q = t.Quantization()
        if dtype in (np.float32, np.float16) or q is None or q.ScaleLength() == 0:
            return values.astype(np.float32) if dtype in (np.float32, np.float16) else values
        scale = q.ScaleAsNumpy().astype(np.float64)
        zero = q.ZeroPointAsNumpy().astype(np.float64) if q.ZeroPointLength() else np.zeros_like(scale)
        if scale.size > 1:  # per-channel along the quantized dimension
            axis = q.QuantizedDimension()
            bshape = [1] * values.ndim
            bshape[axis] = scale.size
            scale = scale.reshape(bshape)
            zero = zero.reshape(bshape)
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)

    def int_constant(self, index: int) -> np.ndarray:
        t = self.tensor(index)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        return np.frombuffer(data.tobytes(), dtype=_TENSOR_DTYPES[t.Type()])

    # -- operators ---------------------------------------------------------
    def ops(self):
        for k in range(self.n_ops):
            op = self.graph.Operators(k)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            yield self.names.get(builtin, str(builtin)), op

    @staticmethod
    def options(op, cls):
        opts = cls()
        table = op.BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        return opts


def read_animeganv2_tflite(path: str | Path) -> GeneratorWeights:
    """Dequantized AnimeGANv2 generator weights from a (quantized or float) TFLite file."""
    import tflite

    path = Path(path)
    r = _Reader(path)
    mirror_pads: dict[int, tuple[int, int, int, int]] = {}  # output tensor -> pads
    convs: list[_Conv] = []
    gammas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    epsilons: list[float] = []
    resize_modes: set[tuple[bool, bool]] = set()

    for name, op in r.ops():
        ins = [int(i) for i in op.InputsAsNumpy()]
        outs = [int(i) for i in op.OutputsAsNumpy()]
        if name == "MIRROR_PAD":
            mode = r.options(op, tflite.MirrorPadOptions).Mode()
            if mode != _MIRROR_REFLECT:
                raise ModelError(f"{path}: MIRROR_PAD in SYMMETRIC mode is not part of AnimeGANv2")
            p = r.int_constant(ins[1]).reshape(-1, 2)  # NHWC
            mirror_pads[outs[0]] = (int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1]))
        elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            o = r.options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            if o.Padding() != _PADDING_VALID or o.FusedActivationFunction() != 0:
                raise ModelError(f"{path}: convolution #{len(convs)} uses SAME padding or a fused "
                                 "activation, which the AnimeGANv2 generator does not")
            if o.StrideH() != o.StrideW():
                raise ModelError(f"{path}: convolution #{len(convs)} has unequal strides")
            w = r.constant(ins[1])
            b = r.constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            if w is None:
                raise ModelError(f"{path}: convolution #{len(convs)} has no constant weights")
            # TFLite: conv OHWI, depthwise 1HWC -> ONNX OIHW (depthwise: C,1,H,W)
            w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
            if b is None:
                b = np.zeros(w.shape[0], np.float32)
            convs.append(_Conv(np.ascontiguousarray(w), b.astype(np.float32), int(o.StrideH()),
                               mirror_pads.get(ins[0], (0, 0, 0, 0)), depthwise))
        elif name == "MUL":
            # batchnorm/mul = rsqrt(var + eps) * gamma: gamma is the rank-1 constant
            for i in ins:
                c = r.constant(i)
                if c is not None and c.ndim == 1 and c.size > 1:
                    gammas.append(c)
        elif name == "SUB":
            # batchnorm/sub = beta - mean * scale: beta is the constant first operand
            c = r.constant(ins[0])
            if c is not None and c.ndim == 1:
                betas.append(c)
        elif name == "ADD":
            c = r.constant(ins[1])
            if c is not None and c.size == 1:
                epsilons.append(float(c.reshape(())))
        elif name == "RESIZE_BILINEAR":
            o = r.options(op, tflite.ResizeBilinearOptions)
            resize_modes.add((bool(o.AlignCorners()), bool(o.HalfPixelCenters())))

    _check_structure(path, convs, gammas, betas, epsilons, resize_modes)
    weights = GeneratorWeights(tensors={}, layernorm_eps=_round_eps(epsilons[0]), source=str(path))
    norm_iter = iter(zip(gammas, betas))
    for layer, conv in zip(CONV_LAYERS, convs):
        weights.tensors[layer.conv + ".weight"] = conv.weight
        if layer.depthwise or np.any(conv.bias != 0):
            weights.tensors[layer.conv + ".bias"] = conv.bias
        if layer.norm:
            gamma, beta = next(norm_iter)
            weights.tensors[layer.norm + ".weight"] = gamma
            weights.tensors[layer.norm + ".bias"] = beta
    return weights


def _round_eps(eps: float) -> float:
    """The int8 epsilon constant dequantizes to 1e-12 within float32 rounding; keep the clean value."""
    return float(np.float32(float(f"{eps:.6g}")))


def _check_structure(path, convs, gammas, betas, epsilons, resize_modes) -> None:
    def fail(why: str):
        raise ModelError(f"{path}: not an AnimeGANv2 generator ({why})")

    if len(convs) != len(CONV_LAYERS):
        fail(f"{len(convs)} convolutions, expected {len(CONV_LAYERS)}")
    for k, (layer, conv) in enumerate(zip(CONV_LAYERS, convs)):
        if conv.weight.shape != layer.weight_shape:
            fail(f"convolution #{k} ({layer.conv}) has weights {conv.weight.shape}, expected {layer.weight_shape}")
        if conv.stride != layer.stride or conv.pads != layer.pads or conv.depthwise != layer.depthwise:
            fail(f"convolution #{k} ({layer.conv}) has stride {conv.stride} and reflect pads {conv.pads}, "
                 f"expected {layer.stride} and {layer.pads}")
    n_norms = sum(1 for layer in CONV_LAYERS if layer.norm)
    if len(gammas) != n_norms or len(betas) != n_norms:
        fail(f"{len(gammas)} layer-norm scales and {len(betas)} offsets, expected {n_norms}")
    if len(set(round(e, 20) for e in epsilons)) != 1:
        fail(f"layer norms use different epsilons {sorted(set(epsilons))}")
    # TF1 resize_bilinear(align_corners=False, half_pixel_centers=False) is what
    # the builder's "tf" variant reproduces (ONNX coordinate mode "asymmetric").
    if resize_modes != {(False, False)}:
        fail(f"bilinear resizes use (align_corners, half_pixel_centers) = {sorted(resize_modes)}, "
             "expected only (False, False)")
