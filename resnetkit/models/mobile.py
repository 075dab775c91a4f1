"""Residual units for phones: MobileNetV2's inverted residual and ShuffleNetV2's split-shuffle unit.

Both are data: a :class:`MobileConfig` row (stem, stages of ``(channels, units, stride, expansion)``, head) in
:data:`MOBILE_VARIANTS`, built by ``create_model("mobilenet_v2")`` like every ResNet. They get a config of their
own rather than more :class:`~resnetkit.models.config.ResNetConfig` fields: their stages have per-stage expansion
and a 1x1 head convolution, they use ReLU6 or channel shuffles, and none of the ResNet options (shortcut kinds,
pre-activation, dilation, ResNeXt widths) applies; folding them in would make most ResNet fields meaningless here.

Parameter names are torchvision's (``features.N.conv...``, ``classifier.1``; ``conv1``, ``stageN``, ``conv5``,
``fc``), so torchvision's state dicts and checkpoints load with ``strict=True`` and no renaming.

References:
    Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks".
    Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design".
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from ..errors import UnknownNameError, UnknownOptionError
from ..options import parse_enum
from .config import Stem
from .features import FeatureInfo, check_frozen_stages, check_out_indices


class MobileUnit(enum.Enum):
    """The unit every stage of a mobile network repeats."""

    INVERTED_RESIDUAL = "inverted_residual"  # 1x1 expand, 3x3 depthwise, linear 1x1 project; ReLU6 (MobileNetV2)
    SHUFFLE_V2 = "shuffle_v2"  # channel split, 1x1-dw3x3-1x1 on one half, concat, channel shuffle (ShuffleNetV2)


@dataclass(frozen=True)
class MobileStage:
    """``units`` units of ``channels`` outputs; the first strides by ``stride``. ``expansion`` is MobileNetV2's
    ``t`` (hidden width = input width x t); ShuffleNetV2 ignores it."""

    channels: int
    units: int
    stride: int
    expansion: int = 1


@dataclass(frozen=True)
class MobileConfig:
    """Architecture of a mobile residual network: stem convolution (and max-pool), stages, 1x1 head, classifier.

    Args:
        unit: the residual unit of every stage.
        stages: the stages, in order.
        stem_width: channels of the stem's 3x3 convolution.
        head_width: channels of the 1x1 convolution before pooling (MobileNetV2's 1280, ShuffleNetV2's ``conv5``).
        stem_stride: stride of the stem convolution (1 in the CIFAR versions).
        stem_pool: a 3x3/2 max-pool after the stem (ShuffleNetV2 at ImageNet size).
        num_classes: classifier outputs; 0 returns the pooled features.
        in_chans: channels of the input image.
        drop_rate: dropout before the classifier (0.2 in MobileNetV2).
        norm_eps: BatchNorm epsilon.
    """

    unit: MobileUnit
    stages: tuple[MobileStage, ...]
    stem_width: int
    head_width: int
    stem_stride: int = 2
    stem_pool: bool = False
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", parse_enum(MobileUnit, self.unit, "unit"))
        stages = tuple(s if isinstance(s, MobileStage) else MobileStage(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages or min(s.units for s in stages) < 1:
            raise ValueError(f"a mobile network needs stages of at least one unit, got {stages}")
        if self.unit is MobileUnit.SHUFFLE_V2 and any(s.channels % 2 for s in stages):
            raise ValueError("ShuffleNetV2 stages need even channels: each unit splits them in two halves")
        if self.num_classes < 0 or self.in_chans < 1 or not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"need num_classes >= 0, in_chans >= 1, drop_rate in [0, 1); got {self.num_classes}, "
                             f"{self.in_chans}, {self.drop_rate}")  # fmt: skip

    @property
    def stem(self) -> Stem:
        """The ResNet stem this one stands for in size defaults (32 px inputs for stride-1 stems, else 224)."""
        return Stem.CIFAR if self.stem_stride == 1 else Stem.IMAGENET

    @property
    def num_features(self) -> int:
        return self.head_width

    def replace(self, **overrides: Any) -> MobileConfig:
        """A copy with ``overrides`` (field names; ``in_channels`` as an alias of ``in_chans``)."""
        fields = {"in_chans" if k == "in_channels" else k: v for k, v in overrides.items()}
        unknown = set(fields) - _FIELD_NAMES
        if unknown:
            raise UnknownOptionError(f"unknown mobile model option {sorted(unknown)[0]!r}; valid options: "
                                     f"{', '.join(sorted(_FIELD_NAMES))}")  # fmt: skip
        return dataclasses.replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; :meth:`from_dict` reads them back."""
        out = dataclasses.asdict(self)
        out["unit"] = self.unit.value
        out["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MobileConfig:
        return cls(**data)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(MobileConfig))


# -- units -----------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2's unit: 1x1 expansion to ``inp * t`` (none when t = 1), 3x3 depthwise, linear 1x1 projection
    (no activation: a ReLU in the thin layer would destroy information, Sandler et al. Sec. 3.2). The shortcut
    joins the thin layers when the unit keeps shape (stride 1, equal widths); otherwise there is none."""

    def __init__(self, inp: int, oup: int, stride: int, expansion: int, norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        hidden = int(round(inp * expansion))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(Conv2dNormActivation(inp, hidden, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6))
        layers += [
            Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer, activation_layer=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (B, oup, H/s, W/s), linear
        return x + out if self.use_res_connect else out


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: (B, g*n, H, W) -> view (B, g, n) -> (B, n, g) -> flat."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2's unit. At stride 1 the channels are split: one half is the shortcut (identity), the other
    runs 1x1, depthwise 3x3, 1x1; at stride 2 both branches read the whole input (``branch1`` is a depthwise
    3x3/2 then 1x1). The halves are concatenated and shuffled, so the next unit splits mixed channels."""

    def __init__(self, inp: int, oup: int, stride: int, norm_layer: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        half = oup // 2
        if stride == 1 and inp != 2 * half:
            raise ValueError(f"a stride-1 ShuffleNetV2 unit keeps its width, got {inp} -> {oup}")
        self.stride = stride
        self.branch1 = nn.Sequential()  # empty at stride 1: its half is the identity
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), norm_layer(inp),
                nn.Conv2d(inp, half, 1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            )  # fmt: skip
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), norm_layer(half),
            nn.Conv2d(half, half, 1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            shortcut, x2 = x.chunk(2, dim=1)  # two (B, C/2, H, W) halves
            out = torch.cat((shortcut, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)  # (B, oup, H/2, W/2)
        return channel_shuffle(out, 2)


# -- networks --------------------------------------------------------------------------------------------------


class MobileNetwork(nn.Module):
    """The model interface every resnetkit network shares (``forward_features``, ``forward_head``,
    ``reset_classifier``, ``feature_info``, ``config``); subclasses build the layers and name the classifier."""

    config: MobileConfig
    feature_info: list[dict[str, Any]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes), or pooled features (B, head_width) with ``pre_logits``."""
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def feature_modules(self) -> list[tuple[str, nn.Module]]:
        """The modules ``forward_features`` runs, in order, under their state-dict names (``feature_info``'s
        ``module`` names among them)."""
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        return self.config.num_features

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _norm(self) -> functools.partial:
        return functools.partial(nn.BatchNorm2d, eps=self.config.norm_eps)


class MobileNetV2(MobileNetwork):
    """``features`` (stem, inverted residuals, 1x1 head conv, as torchvision numbers them) and ``classifier``
    (dropout, linear)."""

    def __init__(self, config: MobileConfig):
        super().__init__()
        self.config = config
        norm = self._norm()
        relu6 = nn.ReLU6
        layers: list[nn.Module] = [Conv2dNormActivation(config.in_chans, config.stem_width, 3, config.stem_stride,
                                                        norm_layer=norm, activation_layer=relu6)]  # fmt: skip
        self.feature_info, reduction, width = [], config.stem_stride, config.stem_width
        for stage in config.stages:
            if stage.stride > 1 and len(layers) > 1:  # the last unit before a reduction is a feature level
                self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"features.{len(layers) - 1}"))
            for i in range(stage.units):
                stride = stage.stride if i == 0 else 1
                layers.append(InvertedResidual(width, stage.channels, stride, stage.expansion, norm))
                width, reduction = stage.channels, reduction * stride
        layers.append(Conv2dNormActivation(width, config.head_width, 1, norm_layer=norm, activation_layer=relu6))
        self.feature_info.append(dict(num_chs=config.head_width, reduction=reduction, module=f"features.{len(layers) - 1}"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(config.drop_rate), self._linear(config.num_classes))
        self._init_weights()

    def _linear(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        fc = nn.Linear(self.config.head_width, num_classes)
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)
        return fc

    def _init_weights(self) -> None:
        """As torchvision: He-normal (fan-out) convolutions, unit norms."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, head_width, H/32, W/32); H/8 in the CIFAR version

    def feature_modules(self) -> list[tuple[str, nn.Module]]:
        return [(f"features.{i}", m) for i, m in enumerate(self.features)]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.config = self.config.replace(num_classes=num_classes)
        self.classifier[1] = self._linear(num_classes)


class ShuffleNetV2(MobileNetwork):
    """``conv1`` (3x3 stem), ``maxpool``, ``stage2``.. (numbered from 2 as in the paper and torchvision), ``conv5``
    (1x1 head), ``fc``."""

    def __init__(self, config: MobileConfig):
        super().__init__()
        self.config = config
        norm = self._norm()
        self.conv1 = nn.Sequential(nn.Conv2d(config.in_chans, config.stem_width, 3, config.stem_stride, 1, bias=False),
                                   norm(config.stem_width), nn.ReLU(inplace=True))  # fmt: skip
        self.maxpool = nn.MaxPool2d(3, 2, 1) if config.stem_pool else nn.Identity()
        self.stage_names: list[str] = []
        self.feature_info, reduction, width = [], config.stem_stride * (2 if config.stem_pool else 1), config.stem_width
        for index, stage in enumerate(config.stages):
            units = [ShuffleV2Unit(width if i == 0 else stage.channels, stage.channels, stage.stride if i == 0 else 1,
                                   norm) for i in range(stage.units)]  # fmt: skip
            name = f"stage{index + 2}"
            setattr(self, name, nn.Sequential(*units))
            self.stage_names.append(name)
            width, reduction = stage.channels, reduction * stage.stride
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=name))
        self.conv5 = nn.Sequential(nn.Conv2d(width, config.head_width, 1, bias=False), norm(config.head_width),
                                   nn.ReLU(inplace=True))  # fmt: skip
        self.fc = nn.Linear(config.head_width, config.num_classes) if config.num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, stem_width, H/2, W/2)
        x = self.maxpool(x)  # (B, stem_width, H/4, W/4)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.conv5(x)  # (B, head_width, H/32, W/32)

    def feature_modules(self) -> list[tuple[str, nn.Module]]:
        stages = [(name, getattr(self, name)) for name in self.stage_names]
        return [("conv1", self.conv1), ("maxpool", self.maxpool), *stages, ("conv5", self.conv5)]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.config = self.config.replace(num_classes=num_classes)
        self.fc = nn.Linear(self.config.head_width, num_classes) if num_classes else nn.Identity()


NETWORKS: dict[MobileUnit, type[MobileNetwork]] = {
    MobileUnit.INVERTED_RESIDUAL: MobileNetV2,
    MobileUnit.SHUFFLE_V2: ShuffleNetV2,
}


def build_mobile(config: MobileConfig) -> MobileNetwork:
    """The network a :class:`MobileConfig` describes."""
    return NETWORKS[config.unit](config)


class MobileFeatureExtractor(nn.Module):
    """A mobile network cut down to its feature maps, as :class:`~resnetkit.models.features.FeatureExtractor` is
    for the ResNets (``create_model("mobilenet_v2", features_only=True)``): forward returns the maps of
    ``out_indices``, indices into the network's ``feature_info`` (MobileNetV2: the last unit before each reduction,
    reductions 2, 4, 8, 16, then the 1x1 head at 32, as torchvision's detection backbones read it; ShuffleNetV2:
    its stages, reductions 8, 16, 32).

    The network's modules are kept (shared) under their own state-dict names up to the last feature asked for, so
    the network's (and torchvision's) weights load into it.

    Args:
        model: the network, weights loaded.
        out_indices: as in ``FeatureExtractor``: all features by default, an int ``n`` the last ``n``.
        frozen_stages: -1 freezes nothing, ``k`` every module up to and including feature ``k``'s (no gradients,
            eval mode even under ``train()``).
    """

    def __init__(self, model: MobileNetwork, out_indices: int | Sequence[int] | None = None, frozen_stages: int = -1):
        super().__init__()
        info = list(model.feature_info)
        self.out_indices = check_out_indices(out_indices, len(info))
        self.frozen_stages = check_frozen_stages(frozen_stages, len(info) - 1)
        self.config: MobileConfig = model.config
        self.feature_info = FeatureInfo(info, self.out_indices)
        if hasattr(model, "record"):
            self.record = model.record
        names = [name for name, _ in model.feature_modules()]
        last = names.index(info[self.out_indices[-1]]["module"])
        self.step_names = names[: last + 1]
        self.returned = {info[i]["module"] for i in self.out_indices}
        for name, module in model.feature_modules()[: last + 1]:
            parent, _, child = name.rpartition(".")
            if parent and not hasattr(self, parent):
                self.add_module(parent, nn.Sequential())
            (self.get_submodule(parent) if parent else self).add_module(child, module)
        self._frozen = self.step_names[: names.index(info[frozen_stages]["module"]) + 1] if frozen_stages >= 0 else []
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image (B, in_chans, H, W) -> one map (B, channels[i], H/reduction[i], W/reduction[i]) per out index."""
        features = []
        for name in self.step_names:
            x = self.get_submodule(name)(x)
            if name in self.returned:
                features.append(x)
        return features

    def frozen_modules(self) -> list[nn.Module]:
        return [self.get_submodule(name) for name in self._frozen]

    def train(self, mode: bool = True) -> MobileFeatureExtractor:
        """As ``nn.Module.train``, but the frozen modules stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self


# -- the variant table -----------------------------------------------------------------------------------------


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% down (MobileNet's reference code)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


# MobileNetV2, Sandler et al. 2018, Table 2: expansion t, channels c, units n, stride s of each stage.
MOBILENET_V2_ROWS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))  # fmt: skip
# ShuffleNetV2, Ma et al. 2018, Table 5: output channels of conv1, stages 2-4 and conv5 per width.
SHUFFLENET_V2_WIDTHS = {"x0_5": (24, 48, 96, 192, 1024), "x1_0": (24, 116, 232, 464, 1024),
                        "x1_5": (24, 176, 352, 704, 1024), "x2_0": (24, 244, 488, 976, 2048)}  # fmt: skip
SHUFFLENET_V2_UNITS = (4, 8, 4)


def mobilenet_v2(width_mult: float = 1.0, cifar: bool = False) -> MobileConfig:
    """MobileNetV2 at a width multiplier. The CIFAR version (32x32 inputs, 10 classes) strides 1 in the stem and
    the second stage, so the last features are 4x4, as the usual CIFAR adaptations do."""
    rows = [MobileStage(make_divisible(c * width_mult), n, 1 if cifar and i == 1 else s, t)
            for i, (t, c, n, s) in enumerate(MOBILENET_V2_ROWS)]  # fmt: skip
    return MobileConfig(MobileUnit.INVERTED_RESIDUAL, tuple(rows), make_divisible(32 * width_mult),
                        make_divisible(1280 * max(1.0, width_mult)), stem_stride=1 if cifar else 2,
                        num_classes=10 if cifar else 1000, drop_rate=0.2)  # fmt: skip


def shufflenet_v2(width: str, cifar: bool = False) -> MobileConfig:
    """ShuffleNetV2 at one of the paper's widths; the CIFAR version drops the stem's stride and max-pool."""
    stem, *stages, head = SHUFFLENET_V2_WIDTHS[width]
    rows = tuple(MobileStage(c, n, 2) for c, n in zip(stages, SHUFFLENET_V2_UNITS))
    return MobileConfig(MobileUnit.SHUFFLE_V2, rows, stem, head, stem_stride=1 if cifar else 2, stem_pool=not cifar,
                        num_classes=10 if cifar else 1000)  # fmt: skip


MOBILE_VARIANTS: dict[str, MobileConfig] = {
    "mobilenet_v2": mobilenet_v2(1.0),
    "mobilenet_v2_050": mobilenet_v2(0.5),
    "mobilenet_v2_075": mobilenet_v2(0.75),
    "mobilenet_v2_140": mobilenet_v2(1.4),
    "cifar_mobilenet_v2": mobilenet_v2(1.0, cifar=True),
    **{f"shufflenet_v2_{w}": shufflenet_v2(w) for w in SHUFFLENET_V2_WIDTHS},
    **{f"cifar_shufflenet_v2_{w}": shufflenet_v2(w, cifar=True) for w in ("x0_5", "x1_0")},
}


# -- torchvision's published checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class MobileWeights:
    """A torchvision checkpoint of a mobile variant: address and the SHA-256 prefix its file name publishes."""

    arch: str
    tag: str
    url: str
    sha256_prefix: str
    top1: float

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"


def _torchvision_weights() -> dict[str, MobileWeights]:
    """Read from torchvision's own weight enums (as resnetkit.weights.registry does for the ResNets)."""
    from torchvision.models import get_model_weights

    tags = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}
    entries = {}
    for arch in ("mobilenet_v2", *(f"shufflenet_v2_{w}" for w in SHUFFLENET_V2_WIDTHS)):
        for w in get_model_weights(arch):
            prefix = w.url.rsplit("-", 1)[-1].split(".")[0]
            e = MobileWeights(arch, tags[w.name], w.url, prefix, w.meta["_metrics"]["ImageNet-1K"]["acc@1"])
            entries[e.name] = e
    return entries


MOBILE_WEIGHTS: dict[str, MobileWeights] = _torchvision_weights()


def mobile_weights(arch: str, tag: bool | str) -> MobileWeights:
    """The entry for ``arch`` and a tag (``True``: the most accurate)."""
    known = [e for e in MOBILE_WEIGHTS.values() if e.arch == arch]
    if tag is True and known:
        return max(known, key=lambda e: e.top1)
    if f"{arch}.{tag}" in MOBILE_WEIGHTS:
        return MOBILE_WEIGHTS[f"{arch}.{tag}"]
    raise UnknownNameError(f"no weights {arch}.{tag}; known: {', '.join(e.name for e in known) or 'none'}")


def create_mobile(name: str, pretrained: bool | str = False, model_dir: str | None = None, **overrides: Any) -> MobileNetwork:
    """Build mobile variant ``name`` with config ``overrides``; ``pretrained`` (``True`` or a tag) downloads
    torchvision's checkpoint into torch's hub cache (or ``model_dir``), checks its published SHA-256 prefix, and
    loads it strictly; a classifier of another size is left fresh."""
    config = MOBILE_VARIANTS[name].replace(**overrides)
    model = build_mobile(config)
    if not pretrained:
        return model
    entry = mobile_weights(name, pretrained)
    state = torch.hub.load_state_dict_from_url(entry.url, model_dir, map_location="cpu", check_hash=True,
                                               weights_only=True)  # fmt: skip
    if config.num_classes != 1000:
        classifier = {k for k in state if k.startswith(("classifier.", "fc."))}
        state = {k: v for k, v in state.items() if k not in classifier} | {
            k: v for k, v in model.state_dict().items() if k in classifier}  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model
