"""Independent PyTorch implementation of the AnimeGANv2 generator (tests only).

The module layout, and so the state-dict keys, follow the public PyTorch port
of AnimeGANv2 (``block_a.0.1.weight``, ``block_c.1.layers.1.1.bias``, ...), so
its published weights load with ``Generator().load_state_dict(...)``. It is a
reference to check the torch-free converter and ONNX graph against, and the
PyTorch row of ``animelite bench --compare``. The runtime never imports it
(``tests/test_engine.py`` checks that stylizing loads no torch); importing it
without torch says which extra to install.
"""

from __future__ import annotations

from collections import OrderedDict

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # a bench/test module: say which extra brings torch
    raise ImportError("animelite.torch_reference needs PyTorch, a bench/test extra only: "
                      "pip install 'animelite[torch]' (or torch==2.13.0)") from exc

__all__ = ["ConvNormLReLU", "InvertedResBlock", "Generator", "random_state_dict"]

Padding = int | tuple[int, int, int, int]


class ConvNormLReLU(nn.Sequential):
    """Reflection pad -> conv (no implicit padding) -> GroupNorm(1 group) -> LeakyReLU(0.2).

    *padding* is one int for all sides or ``(left, right, top, bottom)``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Padding = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=0, groups=groups, bias=bias),
            nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True),
            nn.LeakyReLU(0.2),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, expansion: float = 2) -> None:
        super().__init__()
        self.use_residual = in_ch == out_ch
        bottleneck = int(round(in_ch * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormLReLU(in_ch, bottleneck, kernel_size=1, padding=0))
        layers += [
            ConvNormLReLU(bottleneck, bottleneck, groups=bottleneck, bias=True),
            nn.Conv2d(bottleneck, out_ch, kernel_size=1, bias=False),
            nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_residual else out


class Generator(nn.Module):
    """AnimeGANv2 generator: NCHW float input in [-1, 1] -> same-sized output in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        down = (0, 1, 0, 1)  # pad right and bottom only before each stride-2 conv
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=down),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(64, 128, stride=2, padding=down),
            ConvNormLReLU(128, 128),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256, 2),
            InvertedResBlock(256, 256, 2),
            InvertedResBlock(256, 256, 2),
            InvertedResBlock(256, 256, 2),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(128, 128), ConvNormLReLU(128, 128))
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(nn.Conv2d(32, 3, kernel_size=1, bias=False), nn.Tanh())

    #: "tf": TF1 resize_bilinear semantics (align_corners=False, half_pixel_centers=False, x2),
    #: used for the official TensorFlow weights; None: as the ``align_corners`` argument says.
    resize_mode: str | None = None

    def forward(self, x: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
        out = self.block_a(x)
        half_size = out.shape[-2:]
        out = self.block_c(self.block_b(out))
        out = self._upsample(out, half_size, align_corners)
        out = self.block_d(out)
        out = self._upsample(out, x.shape[-2:], align_corners)
        return self.out_layer(self.block_e(out))

    def _upsample(self, x: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
        if self.resize_mode == "tf":
            return tf_upsample2x(x)
        if align_corners:
            return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def tf_upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 with TF1's default coordinates: output pixel i samples input i / 2 (edge clamped)."""

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.size(dim)
        nxt = torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)
        return torch.stack([t, (t + nxt) * 0.5], dim=dim + 1).flatten(dim, dim + 1)

    return along(along(x, 2), 3)


def from_weights(weights, variant: str = "tf") -> Generator:
    """A :class:`Generator` holding ``animelite`` GeneratorWeights, with the variant's semantics.

    ``variant="tf"`` reproduces the official TensorFlow weights (layer-norm
    epsilon from the weights, TF resize); ``"pytorch"`` the public port.
    """
    net = Generator()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.tensors.items()}, strict=True)
    if variant == "tf":
        net.resize_mode = "tf"
        eps = weights.layernorm_eps if weights.layernorm_eps is not None else 1e-12
        for module in net.modules():
            if isinstance(module, nn.GroupNorm):
                module.eps = eps
    return net.eval()


def random_state_dict(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """State dict of a :class:`Generator` with random but realistic weights.

    Convolutions keep PyTorch's default init; GroupNorm scales/shifts and the
    depthwise biases are perturbed so they are not all 1 / 0 and a converter
    that drops or swaps them produces visibly different output.
    """
    torch.manual_seed(seed)
    model = Generator()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1.0 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model.state_dict()
