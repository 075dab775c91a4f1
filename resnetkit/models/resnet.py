"""The one residual network: stem -> stages of residual units -> pooled classifier.

Every variant (ImageNet ResNets v1/v1.5, ResNet-D, ResNeXt, Wide ResNet, SE-ResNet, pre-activation ResNets, plain
baselines and the CIFAR family, and the video ResNets of :mod:`resnetkit.models.video`) is this class with a
different :class:`ResNetConfig`.

References:
    He et al. 2015, "Deep Residual Learning for Image Recognition".
    He et al. 2016, "Identity Mappings in Deep Residual Networks".
    Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural Networks" (ResNeXt).
    Zagoruyko & Komodakis 2016, "Wide Residual Networks".
    He et al. 2019, "Bag of Tricks for Image Classification with Convolutional Neural Networks" (ResNet-D).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
from torch import nn

from .blocks import BLOCKS, ResidualUnit, block_class, make_shortcut
from .config import BlockType, ResNetConfig, Shortcut, Stem
from .layers import NORM_LAYERS, Convs, NormLayer, conv3x3
from .video import VIDEO_NORM_LAYERS, stage_convs, stem_conv, stem_pool


class ResNet(nn.Module):
    """Residual network with the torchvision constructor and timm's model interface.

    ``ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)`` works as in torchvision and textbooks; any other
    :class:`ResNetConfig` field can be given as a keyword (``stem=Stem.CIFAR``, ``shortcut=Shortcut.A``, ...).
    :meth:`from_config` builds from a config, which is what ``create_model`` does.

    Args:
        block: unit class (``BasicBlock``, ``Bottleneck`` or their ``PreAct`` forms) or a :class:`BlockType`.
        layers: number of units per stage.
        num_classes: classifier outputs; 0 leaves no classifier.
        zero_init_residual: start every residual branch at zero.
        groups: ResNeXt cardinality.
        width_per_group: bottleneck width per group.
        replace_stride_with_dilation: one flag per stage after the first, as in torchvision.
        norm_layer: norm callable ``channels -> module``, overriding ``norm``.
        in_channels: channels of the input image.
        **options: any other :class:`ResNetConfig` field.

    Attributes:
        config: the :class:`ResNetConfig` the network was built from.
        feature_info: per stage, ``dict(num_chs, reduction, module)`` as in timm.
    """

    def __init__(
        self,
        block: type[ResidualUnit] | BlockType | str,
        layers: Sequence[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Sequence[bool] | None = None,
        norm_layer: NormLayer | None = None,
        in_channels: int = 3,
        **options: Any,
    ):
        super().__init__()
        block_type, preact = _parse_block(block)
        options.setdefault("preact", preact)
        if "widths" not in options and len(layers) != 4:
            options["widths"] = tuple(64 * 2**i for i in range(len(layers)))
        config = ResNetConfig().replace(
            block=block_type,
            layers=tuple(layers),
            num_classes=num_classes,
            zero_init_residual=zero_init_residual,
            groups=groups,
            width_per_group=width_per_group,
            in_channels=in_channels,
            **options,
        )
        if replace_stride_with_dilation is not None:
            config = config.replace(replace_stride_with_dilation=replace_stride_with_dilation)
        self._build(config, norm_layer)

    @classmethod
    def from_config(cls, config: ResNetConfig, norm_layer: NormLayer | None = None) -> ResNet:
        """Build the network described by ``config``; ``norm_layer`` overrides ``config.norm``."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model._build(config, norm_layer)
        return model

    def _build(self, config: ResNetConfig, norm_layer: NormLayer | None) -> None:
        self.config = config
        norms = VIDEO_NORM_LAYERS if config.is_video else NORM_LAYERS
        norm_layer = norm_layer or functools.partial(norms[config.norm], eps=config.norm_eps)
        self._make_stem(norm_layer)
        self.stage_names: list[str] = []
        for i, stage in enumerate(_make_stages(config, norm_layer)):
            name = f"layer{i + 1}"
            setattr(self, name, stage)
            self.stage_names.append(name)
        self.feature_info = _feature_info(config)
        self._make_head(norm_layer)
        self._init_weights()

    def _make_stem(self, norm_layer: NormLayer) -> None:
        """conv1 (one conv, or three in the deep stem), then bn1/act1/maxpool where the variant has them."""
        c = self.config
        bias = c.conv_bias
        if c.is_video:
            self.conv1 = stem_conv(c, norm_layer)
        elif c.stem is Stem.DEEP:
            mid = c.stem_width // 2
            self.conv1 = nn.Sequential(
                conv3x3(c.in_chans, mid, stride=2, bias=bias), norm_layer(mid), nn.ReLU(inplace=True),
                conv3x3(mid, mid, bias=bias), norm_layer(mid), nn.ReLU(inplace=True),
                conv3x3(mid, c.stem_width, bias=bias),
            )  # fmt: skip
        elif c.stem is Stem.CIFAR:
            self.conv1 = conv3x3(c.in_chans, c.stem_width, bias=bias)
        else:
            self.conv1 = nn.Conv2d(c.in_chans, c.stem_width, 7, stride=2, padding=3, bias=bias)
        # Pre-activation networks leave the stem un-normalised: their first unit starts with norm and ReLU.
        self.bn1 = nn.Identity() if c.preact else norm_layer(c.stem_width)
        self.act1 = nn.Identity() if c.preact else nn.ReLU(inplace=True)
        self.maxpool = _stem_pool(c)

    def _make_head(self, norm_layer: NormLayer) -> None:
        """Final norm and ReLU (pre-activation only), global average pool, dropout, classifier."""
        c = self.config
        self.norm = norm_layer(c.num_features) if c.preact else nn.Identity()
        self.norm_act = nn.ReLU(inplace=True) if c.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool3d(1) if c.is_video else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.drop_rate) if c.drop_rate else nn.Identity()
        self.fc = nn.Linear(c.num_features, c.num_classes) if c.num_classes else nn.Identity()

    def _init_weights(self) -> None:
        """He-normal convolutions (fan-out), unit norms, then optionally zeroed residual branches.

        A unit whose option-A shortcut appends zero channels keeps its branch: zeroed too, those channels would
        start at exactly 0 on both paths, where the ReLU after the addition passes no gradient, and never train.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.zero_init_last:
            for m in self.modules():
                if isinstance(m, ResidualUnit) and not m.pads_channels:
                    m.zero_init_last()

    # -- the model interface shared by every variant ------------------------------------------------------------

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # (B, stem_width, H/2, W/2); H, W for the CIFAR stem
        x = self.bn1(x)
        x = self.act1(x)
        return self.maxpool(x)  # (B, stem_width, H/4, W/4) for ImageNet stems

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, in_chans, H, W) -> last feature map (B, num_features, H/s, W/s), s = output stride; a video
        network reads a clip (B, in_chans, T, H, W) and returns (B, num_features, T', H/s, W/s)."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.norm(x)
        return self.norm_act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes), or the pooled features (B, num_features) with ``pre_logits``."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.forward_head(x)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None, intermediates_only: bool = False
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Multi-scale features: the output of each stage named in ``feature_info``.

        Args:
            x: image batch.
            indices: stage indices into ``feature_info`` (an int ``n`` means the last ``n``); all by default.
            intermediates_only: return only the list, not ``(final_features, list)``.
        """
        wanted = _select_indices(indices, len(self.stage_names))
        x = self.forward_stem(x)
        intermediates = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.norm_act(self.norm(x)), intermediates

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none, return pooled features)."""
        self.config = self.config.replace(num_classes=num_classes)
        self.fc = nn.Linear(self.config.num_features, num_classes) if num_classes else nn.Identity()

    @property
    def num_features(self) -> int:
        return self.config.num_features

    @property
    def num_classes(self) -> int:
        return self.config.num_classes


def _stem_pool(c: ResNetConfig) -> nn.Module:
    """The stem's 3x3/2 max-pool (none in the CIFAR stem); Keras pads it with zeros, PyTorch with -inf."""
    if c.is_video:
        return stem_pool(c)
    if c.stem is Stem.CIFAR:
        return nn.Identity()
    if c.stem_pool_zero_pad:
        return nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(3, stride=2))
    return nn.MaxPool2d(3, stride=2, padding=1)


def _make_stages(c: ResNetConfig, norm_layer: NormLayer) -> list[nn.Sequential]:
    """Build the stages: the first unit of each changes width, the first (or, with ``stride_last_unit``, the
    last) may stride (or dilate); the others keep shape."""
    unit = block_class(c.block, c.preact)
    n_units = sum(c.layers)
    drop_path_rates = [c.drop_path_rate * i / max(n_units - 1, 1) for i in range(n_units)]  # linear decay rule
    in_channels, dilation, unit_index = c.stem_width, 1, 0
    stages = []
    for index, (planes, depth, (stride, new_dilation)) in enumerate(zip(c.widths, c.layers, _strides_and_dilations(c))):
        strided = depth - 1 if c.stride_last_unit else 0
        convs = stage_convs(c, index, norm_layer)
        units = []
        for i in range(depth):
            unit_stride = stride if i == strided else 1
            dilations = _unit_dilations(i, strided, dilation, new_dilation)
            rate = drop_path_rates[unit_index]
            units.append(_make_unit(unit, c, in_channels, planes, unit_stride, dilations, rate, norm_layer, convs))
            in_channels, unit_index = planes * unit.expansion, unit_index + 1
        dilation = new_dilation
        stages.append(nn.Sequential(*units))
    return stages


def _unit_dilations(i: int, strided: int, before: int, after: int) -> tuple[int, int]:
    """(first 3x3, other 3x3s) dilation of unit ``i``: units before the strided one run at the old dilation, the
    strided one's first 3x3 too (as in torchvision), everything after it at the new one."""
    if i < strided:
        return before, before
    return (before if i == strided else after), after


def _make_unit(
    unit: type[ResidualUnit],
    c: ResNetConfig,
    in_channels: int,
    planes: int,
    stride: int,
    dilations: tuple[int, int],
    drop_path: float,
    norm_layer: NormLayer,
    convs: Convs,
) -> ResidualUnit:
    """One residual unit with its shortcut; ``dilations`` are (first 3x3, other 3x3s), ``convs`` makes them."""
    downsample = make_shortcut(
        c.shortcut, in_channels, planes * unit.expansion, stride, norm_layer,
        preact=c.preact, avg_down=c.avg_down, subsample_identity=c.stride_last_unit, bias=c.conv_bias, convs=convs,
    )  # fmt: skip
    return unit(
        in_channels,
        planes,
        stride=stride,
        downsample=downsample,
        groups=c.groups,
        base_width=c.width_per_group,
        dilation=dilations[1],
        norm_layer=norm_layer,
        first_dilation=dilations[0],
        residual=c.shortcut is not Shortcut.NONE,
        se_reduction=c.se_reduction,
        se_divisor=c.se_divisor,
        drop_path=drop_path,
        drop_rate=c.block_drop_rate,
        stride_in_1x1=c.stride_in_1x1,
        conv_bias=c.conv_bias,
        convs=convs,
    )


def _strides_and_dilations(c: ResNetConfig) -> list[tuple[int, int]]:
    """Per stage (stride, dilation): once the total stride reaches ``output_stride``, strides become dilation."""
    total, dilation, out = c.stem_stride, 1, []
    for stride in c.stage_strides:
        if c.output_stride is not None and total * stride > c.output_stride:
            dilation *= stride
            stride = 1
        total *= stride
        out.append((stride, dilation))
    return out


def _feature_info(c: ResNetConfig) -> list[dict[str, Any]]:
    info, total = [], c.stem_stride
    for i, (planes, (stride, _)) in enumerate(zip(c.widths, _strides_and_dilations(c))):
        total *= stride
        info.append(dict(num_chs=planes * c.expansion, reduction=total, module=f"layer{i + 1}"))
    return info


def _parse_block(block: type[ResidualUnit] | BlockType | str) -> tuple[BlockType, bool]:
    """Block type and pre-activation flag from a unit class, a BlockType or its name."""
    for (block_type, preact), cls in BLOCKS.items():
        if block is cls:
            return block_type, preact
    return BlockType(block.value if isinstance(block, BlockType) else block), False


def _select_indices(indices: int | Sequence[int] | None, n: int) -> set[int]:
    if indices is None:
        return set(range(n))
    if isinstance(indices, int):
        return set(range(n - indices, n))
    return {i % n for i in indices}
