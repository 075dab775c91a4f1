"""Residual units: y = F(x) + shortcut(x).

Four units cover the family: the basic and bottleneck units of He et al. 2015 ("Deep Residual Learning for Image
Recognition", Fig. 5) and their pre-activation forms (He et al. 2016, "Identity Mappings in Deep Residual
Networks", Fig. 4e). Grouped convolutions (ResNeXt), width (Wide ResNet), squeeze-excitation, stochastic depth,
dropout and dilation are arguments of the same four classes. A unit built with ``residual=False`` is the paper's
"plain" baseline.

Constructor signatures start as torchvision's (``inplanes, planes, stride, downsample, groups, base_width, dilation,
norm_layer``) and parameter names are torchvision's, so their weights and code that builds blocks directly work.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import BlockType, Shortcut
from .layers import CONV2D, Convs, DropPath, NormLayer, SqueezeExcite, ZeroPadShortcut, conv1x1


class ResidualUnit(nn.Module):
    """What every unit shares: the torchvision-compatible signature, the shortcut, squeeze-excitation,
    stochastic depth and the residual addition. Subclasses build the residual branch in ``_make_branch`` and run
    it in :meth:`branch`.

    Args:
        inplanes: input channels.
        planes: width of the unit; it outputs ``planes * expansion`` channels.
        stride: stride of the unit (on its 3x3, or its first 1x1 with ``stride_in_1x1``).
        downsample: the shortcut module, or ``None`` for identity (see :func:`make_shortcut`).
        groups: ResNeXt cardinality (bottlenecks only).
        base_width: ResNeXt width per group at 64 planes (bottlenecks only).
        dilation: dilation of the unit's 3x3 convolutions.
        norm_layer: callable ``channels -> module``; BatchNorm2d by default.
        first_dilation: dilation of the first 3x3 when it differs (first unit of a dilated stage).
        residual: ``False`` drops the shortcut: the plain baseline.
        se_reduction: squeeze-excitation reduction; 0 disables it.
        se_divisor: the squeeze width is rounded to a multiple of this (see :class:`SqueezeExcite`).
        drop_path: stochastic depth rate of this unit.
        drop_rate: dropout inside the branch (Wide ResNet).
        stride_in_1x1: stride on the first 1x1 of a bottleneck (ResNet v1).
        conv_bias: give the branch's convolutions a bias (Keras Applications).
        convs: how the convolutions are made: 2D by default, 3D for clips (see :mod:`resnetkit.models.video`).
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: NormLayer | None = None,
        *,
        first_dilation: int | None = None,
        residual: bool = True,
        se_reduction: int = 0,
        se_divisor: int = 8,
        drop_path: float = 0.0,
        drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
        conv_bias: bool = False,
        convs: Convs | None = None,
    ):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        dilations = (first_dilation or dilation, dilation)
        convs = convs or CONV2D
        self._make_branch(inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, conv_bias,
                          convs)  # fmt: skip
        self.dropout = nn.Dropout(drop_rate) if drop_rate else nn.Identity()
        self.se = SqueezeExcite(planes * self.expansion, se_reduction, se_divisor) if se_reduction else nn.Identity()
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _make_branch(self, inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, bias,
                     convs):  # fmt: skip
        """Create the branch's layers; ``dilations`` are (first 3x3, other 3x3s), ``bias`` the conv bias, ``convs``
        the :class:`~resnetkit.models.layers.Convs` that makes them."""
        raise NotImplementedError

    @property
    def pads_channels(self) -> bool:
        """Whether the shortcut appends zero channels (option A in a unit that widens)."""
        return isinstance(self.downsample, ZeroPadShortcut) and self.downsample.extra_channels > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preactivate(x)
        out = self.add_shortcut(self.branch(pre), x, pre)
        return self.finish(out)

    # The unit in parts, for analysis (lesion studies, path sampling, feature reuse):
    # ``forward(x) == finish(drop_path(branch(preactivate(x))) + shortcut(x))``.

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        """The input the branch reads: ``x`` itself, or ``relu(bn1(x))`` in a pre-activation unit."""
        return x

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        """The residual branch F, from :meth:`preactivate`'s output, up to the addition (SE included)."""
        raise NotImplementedError

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """What follows the addition: the ReLU of a post-activation unit, nothing in a pre-activation one."""
        return out

    def shortcut(self, x: torch.Tensor, projection_input: torch.Tensor | None = None) -> torch.Tensor | None:
        """What the shortcut carries to the addition, or ``None`` in a plain unit (no shortcut).

        It is ``x``, or ``downsample(x)`` for the parameter-free shortcuts (option A, subsampling), which are
        identities: in a pre-activation unit they carry the raw input, not the normalised one (Keras ResNetV2);
        a projection reads ``projection_input`` (``preactivate(x)`` when not given).
        """
        if not self.residual:
            return None
        if self.downsample is None:
            return x
        if isinstance(self.downsample, ZeroPadShortcut):
            return self.downsample(x)
        return self.downsample(self.preactivate(x) if projection_input is None else projection_input)

    def add_shortcut(self, branch: torch.Tensor, x: torch.Tensor, projection_input: torch.Tensor) -> torch.Tensor:
        """Return ``branch + shortcut`` (see :meth:`shortcut`); a plain unit returns the branch."""
        shortcut = self.shortcut(x, projection_input)
        return branch if shortcut is None else self.drop_path(branch) + shortcut


class BasicBlock(ResidualUnit):
    """Two 3x3 convolutions, each followed by a norm; ReLU after the first and after the addition."""

    expansion = 1

    def _make_branch(self, inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, bias,
                     convs):  # fmt: skip
        _require_plain_width(self, groups, base_width)
        mid = convs.midplanes(inplanes, planes)  # both (2+1)D convolutions use the first's (torchvision)
        self.conv1 = convs.conv3x3(inplanes, planes, stride, dilation=dilations[0], bias=bias, midplanes=mid)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = convs.conv3x3(planes, planes, dilation=dilations[1], bias=bias, midplanes=mid)
        self.bn2 = norm_layer(planes)

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(pre)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.dropout(out)
        out = self.conv2(out)
        out = self.bn2(out)
        return self.se(out)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return self.relu(out)

    def zero_init_last(self) -> None:
        _zero_(self.bn2.weight)


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4; a norm after each, ReLU after all but the last.

    The stride sits on the 3x3 (ResNet v1.5, torchvision and timm), or on the first 1x1 with ``stride_in_1x1``
    (the paper's v1, as in the original Caffe models and Keras Applications).
    """

    expansion = 4

    def _make_branch(self, inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, bias,
                     convs):  # fmt: skip
        width = bottleneck_width(planes, groups, base_width)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = convs.conv1x1(inplanes, width, stride_1x1, bias)
        self.bn1 = norm_layer(width)
        mid = convs.midplanes(inplanes, planes)  # torchvision's video bottleneck: from the unit's widths
        self.conv2 = convs.conv3x3(width, width, stride_3x3, groups, dilations[0], bias, midplanes=mid)
        self.bn2 = norm_layer(width)
        self.conv3 = convs.conv1x1(width, planes * self.expansion, bias=bias)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(pre)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.dropout(out)
        out = self.conv3(out)
        out = self.bn3(out)
        return self.se(out)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return self.relu(out)

    def zero_init_last(self) -> None:
        _zero_(self.bn3.weight)


class PreActBasicBlock(ResidualUnit):
    """Pre-activation basic unit: (norm, ReLU, 3x3) twice, then the plain addition, no ReLU after it.

    A projection shortcut reads the normalised input, as in the authors' code and in Wide ResNet.
    """

    expansion = 1

    def _make_branch(self, inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, bias,
                     convs):  # fmt: skip
        _require_plain_width(self, groups, base_width)
        self.bn1 = norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=True)
        mid = convs.midplanes(inplanes, planes)
        self.conv1 = convs.conv3x3(inplanes, planes, stride, dilation=dilations[0], bias=bias, midplanes=mid)
        self.bn2 = norm_layer(planes)
        self.conv2 = convs.conv3x3(planes, planes, dilation=dilations[1], bias=bias, midplanes=mid)

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(x))

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.dropout(out)
        out = self.conv2(out)
        return self.se(out)

    def zero_init_last(self) -> None:
        _zero_(self.conv2.weight)  # the branch ends in a convolution, not a norm


class PreActBottleneck(ResidualUnit):
    """Pre-activation bottleneck: (norm, ReLU, conv) for the 1x1, the 3x3 and the expanding 1x1."""

    expansion = 4

    def _make_branch(self, inplanes, planes, stride, groups, base_width, dilations, norm_layer, stride_in_1x1, bias,
                     convs):  # fmt: skip
        width = bottleneck_width(planes, groups, base_width)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = norm_layer(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = convs.conv1x1(inplanes, width, stride_1x1, bias)
        self.bn2 = norm_layer(width)
        mid = convs.midplanes(inplanes, planes)  # torchvision's video bottleneck: from the unit's widths
        self.conv2 = convs.conv3x3(width, width, stride_3x3, groups, dilations[0], bias, midplanes=mid)
        self.bn3 = norm_layer(width)
        self.conv3 = convs.conv1x1(width, planes * self.expansion, bias=bias)

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(x))

    def branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(pre)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)
        out = self.dropout(out)
        out = self.conv3(out)
        return self.se(out)

    def zero_init_last(self) -> None:
        _zero_(self.conv3.weight)


BLOCKS: dict[tuple[BlockType, bool], type[ResidualUnit]] = {
    (BlockType.BASIC, False): BasicBlock,
    (BlockType.BOTTLENECK, False): Bottleneck,
    (BlockType.BASIC, True): PreActBasicBlock,
    (BlockType.BOTTLENECK, True): PreActBottleneck,
}


def block_class(block: BlockType, preact: bool) -> type[ResidualUnit]:
    """The unit class for a block type, in post- or pre-activation form."""
    return BLOCKS[(block, preact)]


def bottleneck_width(planes: int, groups: int, base_width: int) -> int:
    """Channels of a bottleneck's 3x3: ``planes * base_width / 64`` per group (ResNeXt's "32x4d" is 32 groups of 4)."""
    return int(planes * (base_width / 64.0)) * groups


def make_shortcut(
    kind: Shortcut,
    in_channels: int,
    out_channels: int,
    stride: int,
    norm_layer: NormLayer,
    *,
    preact: bool = False,
    avg_down: bool = False,
    subsample_identity: bool = False,
    bias: bool = False,
    convs: Convs | None = None,
) -> nn.Module | None:
    """Build a unit's shortcut; ``None`` means identity (or, with ``Shortcut.NONE``, no shortcut at all).

    Projections are ``downsample.0`` conv + ``downsample.1`` norm as in torchvision; with ``avg_down`` (ResNet-D)
    a 2x2 average pool comes first and the 1x1 runs at stride 1, as in timm. Pre-activation projections have no
    norm: they read an input that was just normalised. With ``subsample_identity`` a strided unit that keeps its
    channels gets a parameter-free subsampling under option B (Keras ResNetV2) instead of a projection; ``bias``
    gives the projection a bias; ``convs`` makes its convolution (3D in video networks).
    """
    same_channels = in_channels == out_channels
    if kind is Shortcut.NONE or (stride == 1 and same_channels and kind is not Shortcut.C):
        return None
    if kind is Shortcut.A or (kind is Shortcut.B and same_channels and subsample_identity):
        if out_channels < in_channels:
            raise ValueError(f"shortcut option A can only add channels, not go from {in_channels} to {out_channels}")
        return ZeroPadShortcut(stride, out_channels - in_channels)
    layers: list[nn.Module] = []
    if avg_down:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        layers += [pool, conv1x1(in_channels, out_channels, bias=bias)]
    else:
        layers.append((convs or CONV2D).conv1x1(in_channels, out_channels, stride, bias))
    if not preact:
        layers.append(norm_layer(out_channels))
    return nn.Sequential(*layers)


def _require_plain_width(unit: nn.Module, groups: int, base_width: int) -> None:
    if groups != 1 or base_width != 64:
        raise ValueError(f"{type(unit).__name__} only supports groups=1 and base_width=64; use a bottleneck for ResNeXt and Wide ResNet")


def _zero_(weight: torch.Tensor | None) -> None:
    if weight is not None:
        with torch.no_grad():
            weight.zero_()
