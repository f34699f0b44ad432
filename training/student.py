"""The hayao-lite student network (PyTorch, training only; the runtime runs its ONNX export).

A small U-Net-shaped generator that imitates AnimeGANv2 Hayao:

* encoder: a 3x3 full-resolution stem (3 -> c0, kept as a skip), a stride-2 3x3
  conv to 1/2 resolution, a depthwise-separable conv there (kept as a skip), a
  stride-2 3x3 conv to 1/4 resolution, a depthwise-separable conv and
  inverted residual blocks (1x1 expand x2, depthwise 3x3, 1x1 project,
  residual add) at 1/4 resolution, the block type the teacher uses;
* decoder: bilinear x2 upsamples with depthwise-separable convolutions, the
  channel reduction done *before* each upsample (a 1x1 conv commutes with the
  bilinear resize, so the full-resolution tensors stay narrow), the encoder's
  skips added in, and a 3x3 conv to RGB with tanh.

It is a *local* network: BatchNorm (folded into the convolutions on export, so
it costs nothing at inference) instead of the teacher's per-image layer norm,
and zero padding inside the convolutions instead of separate reflect-pad ops.
The first student (layer norms, reflect pads) spent almost two thirds of its
ONNX Runtime time in those memory-bound ops: 394 ms at 512x512 on one thread
against 181 ms for the same convolutions without them. A local network also
sees the same thing in training (crops) as in use (whole photos), and can be
tiled with no shared statistics. Its ONNX graph is only Conv, LeakyRelu,
Resize (bilinear x2), Add and Tanh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIZE_MULTIPLE = 4
#: the architecture of the shipped model (``Student(**ARCH)``)
ARCH = dict(c0=32, c1=64, c2=128, blocks=5)


class ConvBNAct(nn.Sequential):
    """Conv (zero padding) -> [BatchNorm] -> [LeakyReLU(0.2)]."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 norm: bool = True, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        if act:
            layers.append(nn.LeakyReLU(0.2))
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """Depthwise 3x3 -> pointwise 1x1 -> LeakyReLU (BatchNorm after each conv when ``norm``)."""

    def __init__(self, cin: int, cout: int, norm: bool = True):
        super().__init__(ConvBNAct(cin, cin, 3, groups=cin, norm=norm, act=False), ConvBNAct(cin, cout, 1, norm=norm))


class InvertedResidual(nn.Module):
    def __init__(self, ch: int, expansion: int = 2):
        super().__init__()
        mid = ch * expansion
        self.body = nn.Sequential(ConvBNAct(ch, mid, 1), ConvBNAct(mid, mid, 3, groups=mid),
                                  ConvBNAct(mid, ch, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Context(nn.Module):
    """Whole-image context: a tiny CNN on the photo average-pooled 4x4, mean and std pooled over
    the image, and an MLP giving per-channel (scale, shift) pairs for the main network (FiLM).

    The teacher normalises every layer over the whole image, so its output for a patch depends
    on the rest of the photo: run with the *average* statistics of the training photos instead
    of each photo's own, the teacher itself is only 25.8 dB (median) from its true output on the
    held-out photos. A purely local student cannot do better than that; this branch gives it the
    global information at a negligible cost (it works at 1/4 to 1/16 resolution).
    """

    def __init__(self, out_dims: int, width: int = 64):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(32, width, 3, 2, 1), nn.LeakyReLU(0.2),
        )
        self.mlp = nn.Sequential(nn.Linear(2 * width, 64), nn.LeakyReLU(0.2), nn.Linear(64, out_dims))
        nn.init.zeros_(self.mlp[-1].weight)  # starts as the identity modulation
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = self.convs(pooled)
        mean = h.mean(dim=(2, 3))
        std = (h.pow(2).mean(dim=(2, 3)) - mean.pow(2)).clamp_min(1e-6).sqrt()
        return self.mlp(torch.cat([mean, std], dim=1))


def film(h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """h * (1 + scale) + shift, with p = [scale | shift] per channel."""
    c = h.shape[1]
    return h * (1 + p[:, :c, None, None]) + p[:, c:, None, None]


class Student(nn.Module):
    def __init__(self, c0: int = 32, c1: int = 64, c2: int = 128, blocks: int = 5):
        super().__init__()
        # FiLM points: after enc2, after the second and the last body block (c2 each), and the two
        # channel reductions before the upsamples (c1 at 1/4, c0 at 1/2 resolution: an affine map
        # per channel commutes with the bilinear upsample, so it is applied before it, where it is cheap)
        self.film_channels = [c2, c2, c2, c1, c0]
        self.context = Context(2 * sum(self.film_channels))
        self.stem = ConvBNAct(3, c0, 3, norm=False)  # full res, skip
        self.down1 = ConvBNAct(c0, c1, 3, stride=2)  # 1/2
        self.enc1 = SepConv(c1, c1)  # 1/2, skip
        self.down2 = ConvBNAct(c1, c2, 3, stride=2)  # 1/4
        self.enc2 = SepConv(c2, c2)
        self.blocks = nn.Sequential(*[InvertedResidual(c2) for _ in range(blocks)])
        self.reduce2 = nn.Conv2d(c2, c1, 1)  # before the upsample to 1/2
        self.dec1 = nn.Sequential(SepConv(c1, c1), SepConv(c1, c1))
        self.reduce1 = nn.Conv2d(c1, c0, 1)  # before the upsample to full res
        self.dec0 = nn.Sequential(SepConv(c0, c0, norm=False), SepConv(c0, c0, norm=False))
        self.out = nn.Conv2d(c0, 3, 3, 1, 1)

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``pooled``: the whole photo average-pooled 4x4 (training passes it for crops, as a list
        when the photos differ in size; by default it is pooled from ``x``, which at inference is
        the whole photo)."""
        if pooled is None:
            pooled = F.avg_pool2d(x, 4)
        if isinstance(pooled, (list, tuple)):
            ctx = torch.cat([self.context(p[None]) for p in pooled])
        else:
            ctx = self.context(pooled)
        params = torch.split(ctx, [2 * c for c in self.film_channels], dim=1)
        s0 = self.stem(x)
        s1 = self.enc1(self.down1(s0))
        h = film(self.enc2(self.down2(s1)), params[0])
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == 1:
                h = film(h, params[1])
            elif i == last:
                h = film(h, params[2])
        h = self.dec1(self.up(film(self.reduce2(h), params[3])) + s1)
        h = self.dec0(self.up(film(self.reduce1(h), params[4])) + s0)
        return torch.tanh(self.out(h))


def export_onnx(model: Student, path, opset: int = 17, fp16_weights: bool = True) -> None:
    """NCHW float32 [-1, 1] in and out, dynamic batch, height and width; BatchNorm folded into the convs.

    ``fp16_weights``: store the weights as float16, each followed by a Cast to float32 (the
    runtimes fold the casts when they load the model, so it computes in float32 as before); this
    halves the file. The rounding moves outputs by about 1e-3 of a level at most (see the model card).
    """
    import io
    import os

    import onnx

    model = model.eval()
    dummy = torch.zeros(1, 3, 64, 64)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model, dummy, buf, input_names=["input"], output_names=["output"], opset_version=opset,
            dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "H", 3: "W"}},
            dynamo=False, do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    if fp16_weights:
        weights_to_fp16(proto)
    onnx.checker.check_model(proto)
    tmp = str(path) + ".tmp"
    onnx.save(proto, tmp)
    os.replace(tmp, path)


def weights_to_fp16(proto, min_elements: int = 16) -> None:
    """Store float32 initializers of ``min_elements`` or more as float16 + a Cast back to float32."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts = []
    for i, init in enumerate(list(graph.initializer)):
        if init.data_type != TensorProto.FLOAT:
            continue
        arr, name = numpy_helper.to_array(init), init.name
        if arr.size < min_elements:
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), name + "_fp16")
        graph.initializer[i].CopyFrom(half)  # (``init`` is this same message: read its name first)
        casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT, name=f"cast_{name}"))
    for node in reversed(casts):
        graph.node.insert(0, node)
