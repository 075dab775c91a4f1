"""Video ResNets: the same units and the same ResNet, with 3D convolutions, reading clips ``(B, C, T, H, W)``.

A config's ``conv`` picks the convolutions (Tran et al. 2018): ``"3d"`` makes every 3x3 a ``t x 3 x 3`` (R3D),
``"mc"`` does so in the stem and the first stage only and uses ``1 x 3 x 3`` after it (mixed convolutions, MC3),
``"r2plus1d"`` factorises every ``t x 3 x 3`` into a spatial ``1 x 3 x 3``, a norm, a ReLU and a temporal
``t x 1 x 1``, with the inner width that keeps the parameter count of the full 3D convolution. A unit that strides
with 3D convolutions strides time too; one with ``1 x 3 x 3`` convolutions strides space only (torchvision). The
video stem is torchvision's: ``t x 7 x 7`` at stride ``(1, 2, 2)`` (``(2+1)D``-factorised for R(2+1)D), no pool.

Parameter names follow resnetkit's image networks (``conv1``/``bn1``, ``layer1.0.conv1``), not torchvision's video
modules (``stem.0``, ``layer1.0.conv1.0``); :func:`from_torchvision_video` renames torchvision's state dicts.

:func:`resnetkit.models.inflate.inflate` turns a 2D network into a 3D one (Carreira & Zisserman 2017, I3D).

References:
    Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition" (R3D, MC, R(2+1)D).
    Hara et al. 2018, "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?".
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .config import Conv, Norm, ResNetConfig, Stem, TimePad
from .layers import CONV2D, Convs, GroupNorm2d, NormLayer

VIDEO_NORM_LAYERS: dict[Norm, NormLayer] = {Norm.BATCH: nn.BatchNorm3d, Norm.GROUP: GroupNorm2d}
R2PLUS1D_STEM_MID = 45  # the inner width of torchvision's R(2+1)D stem for a 64-channel stem (not the formula's)


class TimePaddedConv3d(nn.Conv3d):
    """A Conv3d that pads time by repeating the first and last frames, and space with zeros as usual."""

    def __init__(self, *args, time_padding: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.time_padding = time_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.time_padding
        return super().forward(F.pad(x, (0, 0, 0, 0, p, p), mode="replicate"))  # pad (W, H, T)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, time_padding={self.time_padding} (replicate)"


def conv3d(
    in_planes: int,
    out_planes: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    time_pad: TimePad = TimePad.ZEROS,
) -> nn.Conv3d:
    """A ``kernel = (t, k, k)`` convolution that keeps the size at stride 1; time is padded as ``time_pad`` says."""
    t_pad, s_pad = kernel[0] // 2, dilation * (kernel[1] // 2)
    options = dict(stride=stride, dilation=(1, dilation, dilation), groups=groups, bias=bias)
    if time_pad is TimePad.REPLICATE and t_pad:
        return TimePaddedConv3d(in_planes, out_planes, kernel, padding=(0, s_pad, s_pad), time_padding=t_pad, **options)
    return nn.Conv3d(in_planes, out_planes, kernel, padding=(t_pad, s_pad, s_pad), **options)


def r2plus1d_midplanes(in_planes: int, out_planes: int, time_kernel: int = 3, size: int = 3) -> int:
    """Inner width of a (2+1)D convolution with the parameters of the full ``t x k x k`` one (Tran et al. 2018,
    Sec. 3.5): ``t k^2 N_in N_out / (k^2 N_in + t N_out)``, rounded down as torchvision does."""
    return (in_planes * out_planes * time_kernel * size * size) // (in_planes * size * size + time_kernel * out_planes)


class VideoConvs(Convs):
    """The convolutions of a video stage.

    Args:
        time_kernel: temporal size of the 3x3s; 1 makes ``1 x 3 x 3`` convolutions, which stride space only.
        factorised: (2+1)D: spatial ``1 x 3 x 3``, norm, ReLU, temporal ``t x 1 x 1``.
        norm_layer: the norm between the two halves of a factorised convolution.
        time_pad: how time is padded.
    """

    def __init__(self, time_kernel: int, factorised: bool, norm_layer: NormLayer, time_pad: TimePad):
        self.time_kernel = time_kernel
        self.factorised = factorised
        self.norm_layer = norm_layer
        self.time_pad = time_pad

    def stride(self, stride: int) -> tuple[int, int, int]:
        """A unit's stride over (T, H, W): time strides with space where the convolutions see time."""
        return (stride if self.time_kernel > 1 else 1, stride, stride)

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
        t, (st, s, _) = self.time_kernel, self.stride(stride)
        if not self.factorised:
            return conv3d(in_planes, out_planes, (t, 3, 3), (st, s, s), dilation, groups, bias, self.time_pad)
        midplanes = midplanes or r2plus1d_midplanes(in_planes, out_planes, t)
        return nn.Sequential(
            conv3d(in_planes, midplanes, (1, 3, 3), (1, s, s), dilation, groups),
            self.norm_layer(midplanes),
            nn.ReLU(inplace=True),
            conv3d(midplanes, out_planes, (t, 1, 1), (st, 1, 1), bias=bias, time_pad=self.time_pad),
        )

    def conv1x1(self, in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Module:
        return nn.Conv3d(in_planes, out_planes, 1, stride=self.stride(stride), bias=bias)

    def midplanes(self, in_planes: int, planes: int) -> int:
        return r2plus1d_midplanes(in_planes, planes, self.time_kernel) if self.factorised else 0


def stage_convs(c: ResNetConfig, stage: int, norm_layer: NormLayer) -> Convs:
    """The convolutions of stage ``stage`` (0-based): 2D for images; for MC, 3D in the first stage only."""
    if not c.is_video:
        return CONV2D
    temporal = c.conv is not Conv.MC or stage == 0
    return VideoConvs(c.time_kernel if temporal else 1, c.conv is Conv.R2PLUS1D, norm_layer, c.time_pad)


def stem_conv(c: ResNetConfig, norm_layer: NormLayer) -> nn.Module:
    """The stem's ``t x 7 x 7`` convolution at stride ``(1, 2, 2)``; for R(2+1)D a ``1 x 7 x 7`` to 45 channels
    (for a 64-channel stem), a norm, a ReLU and a ``t x 1 x 1`` (torchvision's ``R2Plus1dStem``)."""
    t, stride = c.time_kernel, (1, 2, 2)
    if c.conv is not Conv.R2PLUS1D:
        return conv3d(c.in_chans, c.stem_width, (t, 7, 7), stride, bias=c.conv_bias, time_pad=c.time_pad)
    mid = R2PLUS1D_STEM_MID * c.stem_width // 64
    return nn.Sequential(
        conv3d(c.in_chans, mid, (1, 7, 7), stride),
        norm_layer(mid),
        nn.ReLU(inplace=True),
        conv3d(mid, c.stem_width, (t, 1, 1), bias=c.conv_bias, time_pad=c.time_pad),
    )


def stem_pool(c: ResNetConfig) -> nn.Module:
    """The ImageNet stem's 3x3/2 max-pool over each frame; the video stem has none."""
    if c.stem is Stem.VIDEO:
        return nn.Identity()
    return nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))


# -- torchvision's video ResNets ----------------------------------------------------------------------------------

_TV_UNIT = re.compile(r"^(layer\d+\.\d+\.)conv(\d)\.([01])\.")  # torchvision's conv1.0 (conv), conv1.1 (norm)


_TV_STEM = {"0": "conv1", "1": "bn1"}
_TV_FACTORISED_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "bn1"}


def from_torchvision_video(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of ``torchvision.models.video``'s ``VideoResNet`` under resnetkit's parameter names.

    torchvision wraps each unit's convolution and norm in a Sequential (``conv1.0``, ``conv1.1``) and names the stem
    ``stem``; resnetkit names them as in its image networks (``conv1``, ``bn1``). A factorised convolution keeps its
    inner indices (``conv1.0.3`` -> ``conv1.3``); the R(2+1)D stem's layers 0, 1, 3 go into ``conv1`` and its last
    norm (4) is ``bn1``.
    """
    stem = _TV_FACTORISED_STEM if "stem.3.weight" in state else _TV_STEM
    out = {}
    for key, value in state.items():
        if key.startswith("stem."):
            index, _, rest = key[len("stem.") :].partition(".")
            key = f"{stem[index]}.{rest}"
        else:
            key = _TV_UNIT.sub(lambda m: f"{m[1]}{'conv' if m[3] == '0' else 'bn'}{m[2]}.", key)
        out[key] = value
    return out
