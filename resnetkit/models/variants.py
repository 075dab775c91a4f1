"""The model zoo as data: every named variant is a :class:`ResNetConfig` plus its default input size and, where
a paper publishes one, the figure it gives (used by ``resnetkit models`` to check our counts).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from .config import BlockType, Conv, ResNetConfig, Shortcut, Stem

BASIC, BOTTLENECK = BlockType.BASIC, BlockType.BOTTLENECK
IMAGENET_DEPTHS = {18: (BASIC, (2, 2, 2, 2)), 34: (BASIC, (3, 4, 6, 3)), 50: (BOTTLENECK, (3, 4, 6, 3)),
                   101: (BOTTLENECK, (3, 4, 23, 3)), 152: (BOTTLENECK, (3, 8, 36, 3)), 200: (BOTTLENECK, (3, 24, 36, 3))}  # fmt: skip


class PaperMetric(enum.Enum):
    MACS = "MACs"
    PARAMS = "params"


@dataclass(frozen=True)
class PaperFigure:
    """A published figure for a variant, measured in ``setting`` (config overrides, e.g. v1 stride placement)."""

    metric: PaperMetric
    value: float
    source: str
    setting: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    config: ResNetConfig
    input_size: int = 224
    paper: PaperFigure | None = None


def imagenet(depth: int, **options: Any) -> ResNetConfig:
    """ImageNet layout (He et al. 2015, Table 1): 7x7 stem, four stages of 64..512 planes, 1000 classes."""
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNetConfig(block=block, layers=layers, **options)


def cifar(depth: int, block: BlockType = BASIC, widths: tuple[int, ...] = (16, 32, 64), **options: Any) -> ResNetConfig:
    """CIFAR layout (He et al. 2015, Sec. 4.2): 3x3 stem, three stages, depth 6n+2 (9n+2 for bottlenecks)."""
    per_unit = 3 if block is BOTTLENECK else 2
    n, rest = divmod(depth - 2, 3 * per_unit)
    if rest:
        raise ValueError(f"a CIFAR ResNet of {block.value} units has depth {3 * per_unit}n+2, not {depth}")
    options = {"stem": Stem.CIFAR, "stem_width": 16, "shortcut": Shortcut.A, "num_classes": 10} | options
    return ResNetConfig(block=block, layers=(n, n, n), widths=widths, **options)


def se_cifar(depth: int) -> ResNetConfig:
    """SE-ResNet for CIFAR (Hu et al. 2018, Sec. 6.1 and Table 5): the CIFAR ResNet with squeeze-and-excitation in
    every unit at reduction 16 and the paper's squeeze width (``channels // 16``: 1, 2, 4 over the three stages)."""
    return cifar(depth, se_reduction=16, se_divisor=1)


def resnext_cifar(cardinality: int, group_width: int) -> ResNetConfig:
    """ResNeXt-29 for CIFAR (Xie et al. 2017, Sec. 5.3): 64-channel 3x3 stem, three stages of three bottleneck units
    with 256, 512 and 1024 outputs, ``cardinality`` groups of ``group_width`` channels in the first stage's 3x3
    (doubling per stage, as torchvision's ``width_per_group``), projection shortcuts."""
    return cifar(29, BOTTLENECK, widths=(64, 128, 256), stem_width=64, groups=cardinality, width_per_group=group_width,
                 shortcut=Shortcut.B)  # fmt: skip


def wide_cifar(depth: int, k: int) -> ResNetConfig:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation basic units, 16k/32k/64k channels, depth 6n+4."""
    return cifar(depth - 2, widths=(16 * k, 32 * k, 64 * k), preact=True, shortcut=Shortcut.B)


def video(depth: int, conv: Conv, **options: Any) -> ResNetConfig:
    """torchvision's video ResNets (Tran et al. 2018): the ImageNet rows with the video stem, Kinetics-400's 400
    classes; clips of 16 frames of 112x112 in torchvision's training."""
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNetConfig(block=block, layers=layers, conv=conv, stem=Stem.VIDEO, num_classes=400, **options)


def table1(macs: float) -> PaperFigure:
    """He et al. 2015, Table 1: multiply-adds at 224x224 with the paper's v1 stride placement."""
    return PaperFigure(PaperMetric.MACS, macs, "He et al. 2015, Table 1", {"stride_in_1x1": True})


def params(millions: float, source: str) -> PaperFigure:
    return PaperFigure(PaperMetric.PARAMS, millions * 1e6, source)


TABLE6 = "He et al. 2015, Table 6"
IDENTITY = "He et al. 2016, Table 3"  # "Identity Mappings in Deep Residual Networks"
WRN = "Zagoruyko & Komodakis 2016, Table 5"
RESNEXT = "Xie et al. 2017, Table 1"
RESNEXT_CIFAR = "Xie et al. 2017, Table 7"
SENET = "Hu et al. 2018, Table 2"
RESNET_D = {"stem": Stem.DEEP, "avg_down": True}

VARIANTS: dict[str, Variant] = {
    # ImageNet ResNets, v1.5 (stride on the 3x3); pass stride_in_1x1=True for the paper's v1.
    "resnet18": Variant(imagenet(18), paper=table1(1.8e9)),
    "resnet34": Variant(imagenet(34), paper=table1(3.6e9)),
    "resnet50": Variant(imagenet(50), paper=table1(3.8e9)),
    "resnet101": Variant(imagenet(101), paper=table1(7.6e9)),
    "resnet152": Variant(imagenet(152), paper=table1(11.3e9)),
    "resnet200": Variant(imagenet(200)),
    "resnet50d": Variant(imagenet(50, **RESNET_D)),
    "resnext50_32x4d": Variant(imagenet(50, groups=32, width_per_group=4), paper=params(25.0, RESNEXT)),
    "resnext101_32x8d": Variant(imagenet(101, groups=32, width_per_group=8)),
    "resnext101_64x4d": Variant(imagenet(101, groups=64, width_per_group=4)),
    "wide_resnet50_2": Variant(imagenet(50, width_per_group=128)),
    "wide_resnet101_2": Variant(imagenet(101, width_per_group=128)),
    "seresnet50": Variant(imagenet(50, se_reduction=16), paper=PaperFigure(PaperMetric.MACS, 3.87e9, SENET, {"stride_in_1x1": True})),
    "seresnext50_32x4d": Variant(imagenet(50, groups=32, width_per_group=4, se_reduction=16)),
    "preact_resnet18": Variant(imagenet(18, preact=True)),
    "preact_resnet34": Variant(imagenet(34, preact=True)),
    "preact_resnet50": Variant(imagenet(50, preact=True)),
    "preact_resnet101": Variant(imagenet(101, preact=True)),
    "preact_resnet152": Variant(imagenet(152, preact=True)),
    # Plain baselines: the same layers with no shortcut (the paper's Table 1 gives them the ResNets' FLOPs).
    "plain18": Variant(imagenet(18, shortcut=Shortcut.NONE), paper=table1(1.8e9)),
    "plain34": Variant(imagenet(34, shortcut=Shortcut.NONE), paper=table1(3.6e9)),
    # CIFAR-10 (He et al. 2015, Sec. 4.2), shortcut option A.
    "cifar_resnet20": Variant(cifar(20), 32, params(0.27, TABLE6)),
    "cifar_resnet32": Variant(cifar(32), 32, params(0.46, TABLE6)),
    "cifar_resnet44": Variant(cifar(44), 32, params(0.66, TABLE6)),
    "cifar_resnet56": Variant(cifar(56), 32, params(0.85, TABLE6)),
    "cifar_resnet110": Variant(cifar(110), 32, params(1.7, TABLE6)),
    "cifar_resnet1202": Variant(cifar(1202), 32, params(19.4, TABLE6)),
    "cifar_plain20": Variant(cifar(20, shortcut=Shortcut.NONE), 32),
    "cifar_plain32": Variant(cifar(32, shortcut=Shortcut.NONE), 32),
    "cifar_plain44": Variant(cifar(44, shortcut=Shortcut.NONE), 32),
    "cifar_plain56": Variant(cifar(56, shortcut=Shortcut.NONE), 32),
    "cifar_plain110": Variant(cifar(110, shortcut=Shortcut.NONE), 32),
    # Pre-activation CIFAR ResNets (He et al. 2016), projection shortcuts.
    "cifar_preact_resnet110": Variant(cifar(110, preact=True, shortcut=Shortcut.B), 32, params(1.7, IDENTITY)),
    "cifar_preact_resnet164": Variant(cifar(164, BOTTLENECK, preact=True, shortcut=Shortcut.B), 32, params(1.7, IDENTITY)),
    "cifar_preact_resnet1001": Variant(cifar(1001, BOTTLENECK, preact=True, shortcut=Shortcut.B), 32, params(10.2, IDENTITY)),
    # SE-ResNets and ResNeXt-29 for CIFAR.
    "cifar_se_resnet20": Variant(se_cifar(20), 32),
    "cifar_se_resnet56": Variant(se_cifar(56), 32),
    "cifar_se_resnet110": Variant(se_cifar(110), 32),
    "cifar_resnext29_32x4d": Variant(resnext_cifar(32, 4), 32),
    "cifar_resnext29_8x64d": Variant(resnext_cifar(8, 64), 32, params(34.4, RESNEXT_CIFAR)),
    "cifar_resnext29_16x64d": Variant(resnext_cifar(16, 64), 32, params(68.1, RESNEXT_CIFAR)),
    # Wide ResNets; add block_drop_rate=0.3 for the paper's dropout.
    "cifar_wrn16_2": Variant(wide_cifar(16, 2), 32),
    "cifar_wrn16_4": Variant(wide_cifar(16, 4), 32),
    "cifar_wrn16_8": Variant(wide_cifar(16, 8), 32, params(11.0, WRN)),
    "cifar_wrn28_10": Variant(wide_cifar(28, 10), 32, params(36.5, WRN)),
}


# Video ResNets read clips (B, C, T, H, W): a table of their own, so that everything written for images over
# `list_models()` keeps meeting images; `list_models(video=True)` lists these.
VIDEO_VARIANTS: dict[str, Variant] = {
    "r3d_18": Variant(video(18, Conv.D3), 112),
    "r3d_34": Variant(video(34, Conv.D3), 112),
    "r3d_50": Variant(video(50, Conv.D3), 112),
    "mc3_18": Variant(video(18, Conv.MC), 112),
    "r2plus1d_18": Variant(video(18, Conv.R2PLUS1D), 112),
    "r2plus1d_34": Variant(video(34, Conv.R2PLUS1D), 112),
}


def paper_config(variant: Variant) -> ResNetConfig:
    """The variant in the setting its paper figure was measured in."""
    setting = variant.paper.setting if variant.paper else {}
    return dataclasses.replace(variant.config, **setting)
