"""Small building layers shared by every block: convolutions, norms, squeeze-excitation, stochastic depth.

References:
    Hu et al. 2018, "Squeeze-and-Excitation Networks".
    Huang et al. 2016, "Deep Networks with Stochastic Depth".
    Wu & He 2018, "Group Normalization".
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .config import Norm

NormLayer = Callable[[int], nn.Module]


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1, bias: bool = False
) -> nn.Conv2d:
    """3x3 convolution with padding that keeps the size (at stride 1); no bias by default: a norm follows."""
    padding = dilation
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=padding, groups=groups, dilation=dilation, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution; no bias by default."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=bias)


class Convs:
    """How a residual unit makes its convolutions: this one makes the 2D convolutions of image networks.

    :mod:`resnetkit.models.video` makes 3D, mixed and (2+1)D ones through the same two methods, so the units are
    the same classes for images and clips. ``midplanes`` is the inner width of a factorised (2+1)D convolution,
    which a unit computes once from its own widths (:meth:`midplanes`) and which 2D and 3D convolutions ignore.
    """

    def conv3x3(
        self,
        in_planes: int,
        out_planes: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        bias: bool = False,
        midplanes: int = 0,
    ) -> nn.Module:
        return conv3x3(in_planes, out_planes, stride, groups, dilation, bias)

    def conv1x1(self, in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Module:
        return conv1x1(in_planes, out_planes, stride, bias)

    def midplanes(self, in_planes: int, planes: int) -> int:
        return 0


CONV2D = Convs()


class GroupNorm2d(nn.GroupNorm):
    """GroupNorm that takes the channel count first, like BatchNorm2d, so it can stand in as ``norm_layer``.

    Uses ``num_groups`` groups, or the largest divisor of the channels below it (16 channels get 16 groups).
    """

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5):
        super().__init__(math.gcd(num_groups, num_channels), num_channels, eps=eps)


NORM_LAYERS: dict[Norm, NormLayer] = {
    Norm.BATCH: nn.BatchNorm2d,
    Norm.GROUP: GroupNorm2d,
    Norm.FROZEN_BATCH: FrozenBatchNorm2d,
}


class SqueezeExcite(nn.Module):
    """Channel attention: global average, bottleneck MLP (as 1x1 convolutions), sigmoid gate.

    The parameter names (``fc1``, ``fc2``) follow timm. The reduced width is ``channels / reduction`` rounded to a
    multiple of ``divisor`` (at least ``divisor``): 8, as timm, so its SE-ResNet checkpoints load unchanged; 1 gives
    the paper's width, e.g. 1 channel of 16 in Hu et al.'s CIFAR nets.
    """

    def __init__(self, channels: int, reduction: int = 16, divisor: int = 8):
        super().__init__()
        reduced = max(divisor, int(channels / reduction + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * scale.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch for a random subset of samples.

    Surviving samples are scaled by ``1 / (1 - p)`` so the expected output is unchanged; at eval it is the identity.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"


class ZeroPadShortcut(nn.Module):
    """Shortcut option A (He et al. 2015, Sec. 3.3): subsample by ``stride`` and append zero channels.

    Has no parameters, so a CIFAR ResNet has exactly the parameter count of its plain twin. With no extra
    channels it is a pure subsampling: the strided identity of Keras' ResNetV2 (a 1x1 max-pool with stride).
    """

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # pad (W, H, C): new channels at the end

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"
