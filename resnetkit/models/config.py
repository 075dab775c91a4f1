"""The typed description of a residual network: every variant in resnetkit is one ``ResNetConfig``.

Options are enums, never free strings; strings coming from a CLI, a YAML recipe or a checkpoint are parsed
once, here, by :meth:`ResNetConfig.replace` and :meth:`ResNetConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from ..errors import UnknownOptionError
from ..options import parse_enum


class BlockType(enum.Enum):
    """The residual unit of every stage (He et al. 2015, Fig. 5)."""

    BASIC = "basic"  # two 3x3 convolutions, expansion 1
    BOTTLENECK = "bottleneck"  # 1x1 reduce, 3x3, 1x1 expand (x4)


class Stem(enum.Enum):
    """The layers before the first stage."""

    IMAGENET = "imagenet"  # 7x7/2 convolution, norm, ReLU, 3x3/2 max-pool: stride 4
    DEEP = "deep"  # three 3x3 convolutions (ResNet-C/D, He et al. 2019 "Bag of Tricks"), max-pool: stride 4
    CIFAR = "cifar"  # one 3x3/1 convolution, norm, ReLU: stride 1 (He et al. 2015, Sec. 4.2)
    VIDEO = "video"  # torchvision's video stem: one t x 7 x 7 convolution at stride (1, 2, 2), norm, ReLU, no pool


class Conv(enum.Enum):
    """The convolutions of the units: 2D for images (B, C, H, W), or 3D for clips (B, C, T, H, W) (Tran et al.
    2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition"; see resnetkit.models.video)."""

    D2 = "2d"  # images
    D3 = "3d"  # t x 3 x 3 everywhere (R3D; I3D when inflated from 2D weights)
    MC = "mc"  # t x 3 x 3 in the stem and the first stage, 1 x 3 x 3 after it (mixed convolutions, MC3)
    R2PLUS1D = "r2plus1d"  # every t x 3 x 3 factorised: 1 x 3 x 3, norm, ReLU, t x 1 x 1 ((2+1)D)


class TimePad(enum.Enum):
    """How 3D convolutions pad the time axis (space is always zero-padded)."""

    ZEROS = "zeros"  # as torchvision's video models
    REPLICATE = "replicate"  # repeat the first and last frames: a clip of identical frames stays one (inflation)


class Shortcut(enum.Enum):
    """How the identity path crosses a change of shape (He et al. 2015, Sec. 3.3 and Table 3)."""

    A = "A"  # identity; subsample and zero-pad the new channels where the shape changes (no parameters)
    B = "B"  # identity; 1x1 projection only where the shape changes
    C = "C"  # 1x1 projection in every block
    NONE = "none"  # no shortcut at all: the "plain" baselines


class Norm(enum.Enum):
    """Normalisation layer used throughout the network."""

    BATCH = "batch"
    GROUP = "group"  # GroupNorm with 32 groups (Wu & He 2018), fewer where the channels do not allow it
    FROZEN_BATCH = "frozen_batch"  # fixed statistics and affine terms, for fine-tuning detectors


# Keyword names other libraries use for the same fields, accepted wherever overrides are.
ALIASES = {
    "zero_init_residual": "zero_init_last",  # torchvision
    "in_channels": "in_chans",  # torchvision-style code, Keras
    "cardinality": "groups",  # timm
    "base_width": "width_per_group",  # timm
}


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of a residual network: stem, stages of blocks, head.

    Args:
        block: residual unit of every stage.
        layers: number of blocks in each stage.
        widths: ``planes`` of each stage; a stage outputs ``planes * expansion`` channels.
        stem: layers before the first stage.
        stem_width: channels the stem outputs (the deep stem runs at half of it inside).
        stem_pool_zero_pad: pad the stem's 3x3/2 max-pool with zeros instead of -inf (Keras' ``ZeroPadding2D``
            before ``MaxPooling2D``). The same after a ReLU; it differs in pre-activation stems, whose pool sees
            the raw convolution.
        preact: pre-activation units (norm and ReLU before each convolution, He et al. 2016).
        shortcut: identity/projection option A, B, C, or none for plain networks.
        avg_down: downsample shortcuts by 2x2 average pooling, then a stride-1 1x1 projection (ResNet-D).
        groups: grouped 3x3 convolutions in bottlenecks (ResNeXt cardinality).
        width_per_group: bottleneck width per group at 64 planes (ResNeXt "d"; 128 gives Wide ResNet-50-2).
        stride_in_1x1: put the stride on the first 1x1 of a bottleneck (the paper's v1, Caffe and Keras)
            instead of on the 3x3 (v1.5, torchvision and timm).
        stride_last_unit: put each stage's stride on its last unit instead of its first, as in TF-slim's and
            Keras' ResNetV2; under option B that unit's shortcut is the identity subsampled by the stride (no
            parameters). The stages then stride (2, ..., 2, 1): the first stage's output is at reduction 8.
        conv_bias: give every convolution a bias (Keras Applications ResNets have them on most convolutions).
        se_reduction: squeeze-and-excitation after the last convolution of every block, with this channel
            reduction (Hu et al. 2018); 0 disables it.
        se_divisor: round the squeeze width ``channels / se_reduction`` to a multiple of this (8, at least 8, as
            timm's SE-ResNets); 1 gives the paper's ``channels / se_reduction`` (Hu et al.'s CIFAR nets, pytorchcv).
        num_classes: outputs of the classifier; 0 removes it and the model returns pooled features.
        in_chans: channels of the input image.
        norm: normalisation layer.
        norm_eps: epsilon added to the variance by every norm (Keras Applications use 1.001e-5); applies to the
            ``norm`` of the config, not to a ``norm_layer`` callable given to the model.
        zero_init_last: start every residual branch at zero (the last norm's scale, Goyal et al. 2017), except
            where an option-A shortcut appends zero channels (those would start dead behind the ReLU).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth (Huang et al. 2016), rising linearly to this rate in the last block.
        block_drop_rate: dropout between the two convolutions of a block (Wide ResNet, Zagoruyko & Komodakis).
        output_stride: total stride of the features, e.g. 8 or 16 to replace the last strides by dilation;
            ``None`` keeps every stride (32 for ImageNet layouts, 4 for CIFAR ones).
        conv: 2D convolutions for images, or one of the video kinds (input ``(B, C, T, H, W)``); see
            :mod:`resnetkit.models.video`.
        time_kernel: temporal size of the video convolutions (``t`` above; odd).
        time_pad: how the video convolutions pad time.
    """

    block: BlockType = BlockType.BASIC
    layers: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: Stem = Stem.IMAGENET
    stem_width: int = 64
    stem_pool_zero_pad: bool = False
    preact: bool = False
    shortcut: Shortcut = Shortcut.B
    avg_down: bool = False
    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = False
    stride_last_unit: bool = False
    conv_bias: bool = False
    se_reduction: int = 0
    se_divisor: int = 8
    num_classes: int = 1000
    in_chans: int = 3
    norm: Norm = Norm.BATCH
    norm_eps: float = 1e-5
    zero_init_last: bool = False
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    block_drop_rate: float = 0.0
    output_stride: int | None = None
    conv: Conv = Conv.D2
    time_kernel: int = 3
    time_pad: TimePad = TimePad.ZEROS

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS.items():
            object.__setattr__(self, name, parse_enum(kind, getattr(self, name), name))
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "norm_eps", float(self.norm_eps))  # YAML reads "1e-5" as a string
        self._validate()

    def _validate(self) -> None:
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(f"layers {self.layers} and widths {self.widths} must name the same, non-zero number of stages")
        if min(self.layers) < 1:
            raise ValueError(f"every stage needs at least one block, got layers={self.layers}")
        if self.output_stride is not None and self.output_stride not in self.valid_output_strides:
            raise ValueError(f"output_stride={self.output_stride} is not possible here; choose one of {self.valid_output_strides}")
        if self.groups > 1 and self.block is not BlockType.BOTTLENECK:
            raise ValueError("groups > 1 (ResNeXt) needs the bottleneck block")
        for name in ("drop_rate", "drop_path_rate", "block_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.shortcut is Shortcut.NONE and (self.zero_init_last or self.drop_path_rate):
            option = "zero_init_last" if self.zero_init_last else "drop_path_rate"
            raise ValueError(f"{option} needs shortcuts: a plain network's residual branch is its only path")
        if self.se_reduction < 0 or self.se_divisor < 1:
            raise ValueError(f"need se_reduction >= 0 and se_divisor >= 1, got {self.se_reduction} and {self.se_divisor}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, got {self.norm_eps}")
        if self.stem_pool_zero_pad and self.stem is Stem.CIFAR:
            raise ValueError("stem_pool_zero_pad needs a stem with a max-pool; the CIFAR stem has none")
        if self.num_classes < 0 or self.in_chans < 1:
            raise ValueError(f"num_classes must be >= 0 and in_chans >= 1, got {self.num_classes} and {self.in_chans}")
        self._validate_video()

    def _validate_video(self) -> None:
        if self.time_kernel < 1 or self.time_kernel % 2 == 0:
            raise ValueError(f"time_kernel must be odd and positive, got {self.time_kernel}")
        if not self.is_video:
            if self.stem is Stem.VIDEO:
                raise ValueError("stem='video' needs video convolutions: conv='3d', 'mc' or 'r2plus1d'")
            return
        unsupported = {"se_reduction": self.se_reduction, "shortcut='A'": self.shortcut is Shortcut.A,
                       "avg_down": self.avg_down, "stride_last_unit": self.stride_last_unit,
                       "output_stride": self.output_stride is not None, "stem_pool_zero_pad": self.stem_pool_zero_pad,
                       "norm='frozen_batch'": self.norm is Norm.FROZEN_BATCH,
                       f"stem={self.stem.value!r}": self.stem not in (Stem.IMAGENET, Stem.VIDEO)}  # fmt: skip
        for option, used in unsupported.items():
            if used:
                raise ValueError(f"conv={self.conv.value!r} does not support {option} (video networks have the "
                                 "ImageNet or video stem, shortcut B, C or none, no SE, no dilation)")  # fmt: skip

    @property
    def is_video(self) -> bool:
        """Whether the network reads clips ``(B, C, T, H, W)``."""
        return self.conv is not Conv.D2

    @property
    def stem_stride(self) -> int:
        """Spatial stride of the stem (the video stem has no max-pool)."""
        return {Stem.CIFAR: 1, Stem.VIDEO: 2}.get(self.stem, 4)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """The stride each stage would have without dilation: 1 for the first, 2 for the others; with
        ``stride_last_unit``, 2 for all but the last, which strides at its end (Keras ResNetV2)."""
        if self.stride_last_unit:
            return (2,) * (len(self.layers) - 1) + (1,)
        return (1,) + (2,) * (len(self.layers) - 1)

    @property
    def valid_output_strides(self) -> tuple[int, ...]:
        """Output strides reachable by dilating the last stages, largest (no dilation) first."""
        total = self.stem_stride
        strides = {total}
        for s in self.stage_strides:
            total *= s
            strides.add(total)
        return tuple(sorted(strides, reverse=True))

    @property
    def expansion(self) -> int:
        return 4 if self.block is BlockType.BOTTLENECK else 1

    @property
    def num_features(self) -> int:
        """Channels of the last stage, the classifier's input."""
        return self.widths[-1] * self.expansion

    def replace(self, **overrides: Any) -> ResNetConfig:
        """Return a copy with ``overrides`` applied.

        Accepts the field names, the aliases of torchvision and timm (``zero_init_residual``, ``in_channels``,
        ``cardinality``, ``base_width``), torchvision's ``replace_stride_with_dilation`` and enum values given
        as strings; rejects anything else with the list of valid names.
        """
        fields = {}
        for key, value in overrides.items():
            if key == "replace_stride_with_dilation":
                fields["output_stride"] = self._output_stride_from_dilation(value)
                continue
            name = ALIASES.get(key, key)
            if name not in _FIELD_NAMES:
                raise UnknownOptionError(f"unknown model option {key!r}; valid options: {', '.join(sorted(_FIELD_NAMES))}")
            fields[name] = value
        return dataclasses.replace(self, **fields)

    def _output_stride_from_dilation(self, flags: Any) -> int | None:
        """Translate torchvision's per-stage ``replace_stride_with_dilation`` into an output stride."""
        if flags is None:
            return None
        flags = [bool(f) for f in flags]
        if len(flags) != len(self.layers) - 1:
            raise ValueError(f"replace_stride_with_dilation needs {len(self.layers) - 1} values, got {flags}")
        n = sum(flags)
        if flags != [False] * (len(flags) - n) + [True] * n:
            raise ValueError(f"only the last stages can be dilated (output_stride 16 or 8), got {flags}")
        return self.valid_output_strides[n] if n else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (enums by value, tuples as lists). The video fields are written only where they
        differ from their defaults, so the records of image networks stay as they were before those fields."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _VIDEO_FIELDS and value == f.default:
                continue
            out[f.name] = value.value if isinstance(value, enum.Enum) else list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        return cls().replace(**data)


_ENUM_FIELDS = {"block": BlockType, "stem": Stem, "shortcut": Shortcut, "norm": Norm, "conv": Conv, "time_pad": TimePad}
_VIDEO_FIELDS = ("conv", "time_kernel", "time_pad")
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(ResNetConfig))
