"""The hayao-lite student network (PyTorch, training only; the runtime runs its ONNX export).

A small U-Net-shaped generator that imitates AnimeGANv2 Hayao:

* encoder: a 3x3 full-resolution stem (3 -> 24, kept as a skip), a stride-2 3x3
  conv to 1/2 resolution, a depthwise-separable conv there (kept as a skip), a
  stride-2 3x3 conv to 1/4 resolution, a depthwise-separable conv and five inverted residual blocks
  (1x1 expand x2, depthwise 3x3, 1x1 project, residual add) at 1/4 resolution,
  the same block type the teacher uses;
* decoder: bilinear x2 upsamples with depthwise-separable convolutions, the
  channel reduction done *before* each upsample (a 1x1 conv commutes with the
  bilinear resize, so the full-resolution tensors stay narrow), the encoder's
  skips added in, and a 3x3 conv to RGB with tanh.

Norms: a layer norm over (C, H, W) (GroupNorm with one group, like the
teacher's) at 1/2 and 1/4 resolution only; the full-resolution layers have none
(memory-bound ops on wide full-resolution tensors cost more than the convs).
Every op exports to plain ONNX (opset 17): Conv, Pad(reflect),
InstanceNormalization (GroupNorm), LeakyRelu, Resize, Add, Tanh.
"""

from __future__ import annotations

import torch
from torch import nn

SIZE_MULTIPLE = 4


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, norm: bool = True, groups: int = 1):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=k // 2, padding_mode="reflect",
                                             groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.GroupNorm(1, cout))
        layers.append(_act())
        super().__init__(*layers)


class SepConv(nn.Sequential):
    """Depthwise 3x3 (reflect pad) -> pointwise 1x1 -> [layer norm] -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, norm: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cin, 3, 1, padding=1, padding_mode="reflect", groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=not norm),
        ]
        if norm:
            layers.append(nn.GroupNorm(1, cout))
        layers.append(_act())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, ch: int, expansion: int = 2):
        super().__init__()
        mid = ch * expansion
        self.body = nn.Sequential(
            nn.Conv2d(ch, mid, 1, bias=False), nn.GroupNorm(1, mid), _act(),
            nn.Conv2d(mid, mid, 3, 1, padding=1, padding_mode="reflect", groups=mid, bias=False),
            nn.GroupNorm(1, mid), _act(),
            nn.Conv2d(mid, ch, 1, bias=False), nn.GroupNorm(1, ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Student(nn.Module):
    def __init__(self, c0: int = 24, c1: int = 48, c2: int = 128, blocks: int = 5):
        super().__init__()
        self.stem = ConvNormAct(3, c0, 3, norm=False)  # full res, skip
        self.down1 = ConvNormAct(c0, c1, 3, stride=2)  # 1/2
        self.enc1 = SepConv(c1, c1)  # 1/2, skip
        self.down2 = ConvNormAct(c1, c2, 3, stride=2)  # 1/4
        self.enc2 = SepConv(c2, c2)
        self.blocks = nn.Sequential(*[InvertedResidual(c2) for _ in range(blocks)])
        self.reduce2 = nn.Conv2d(c2, c1, 1)  # before the upsample to 1/2
        self.dec1 = nn.Sequential(SepConv(c1, c1), SepConv(c1, c1))
        self.reduce1 = nn.Conv2d(c1, c0, 1)  # before the upsample to full res
        self.dec0 = nn.Sequential(SepConv(c0, c0, norm=False), SepConv(c0, c0, norm=False))
        self.out = nn.Conv2d(c0, 3, 3, 1, padding=1, padding_mode="reflect")
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.enc1(self.down1(s0))
        h = self.blocks(self.enc2(self.down2(s1)))
        h = self.dec1(self.up(self.reduce2(h)) + s1)
        h = self.dec0(self.up(self.reduce1(h)) + s0)
        return torch.tanh(self.out(h))


def export_onnx(model: Student, path, opset: int = 17) -> None:
    """NCHW float32 [-1, 1] in and out, dynamic batch, height and width."""
    model = model.eval()
    dummy = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        torch.onnx.export(
            model, dummy, str(path), input_names=["input"], output_names=["output"], opset_version=opset,
            dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "H", 3: "W"}},
            dynamo=False,
        )
