"""resnetkit backbones in the shapes torchvision's task heads read: named feature maps, and a feature pyramid."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from ..models import create_model
from ..models.features import FeatureExtractor
from ..models.resnet import ResNet


class FeatureDict(FeatureExtractor):
    """A :class:`~resnetkit.models.features.FeatureExtractor` whose forward gives an ordered dict of named maps, the
    contract of torchvision's ``IntermediateLayerGetter`` (``{"aux": layer3, "out": layer4}`` for the segmentation
    models, ``{"0": ..., "3": ...}`` for a feature pyramid). Its modules keep their names (``conv1``, ``layer1``,
    ...), so its state dict is torchvision's.

    Args:
        model: the network, weights loaded.
        out_indices: the features returned, as in ``FeatureExtractor`` (0 the stem, ``i`` stage ``i``).
        frozen_stages: as in ``FeatureExtractor`` (-1 nothing, ``k`` the stem and stages 1..k).
        names: one name per out index; ``"0"``, ``"1"``, ... by default.
    """

    def __init__(
        self,
        model: ResNet,
        out_indices: Sequence[int],
        frozen_stages: int = -1,
        names: Sequence[str] | None = None,
    ):
        super().__init__(model, out_indices, frozen_stages)
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(len(self.out_indices)))
        if len(self.names) != len(self.out_indices):
            raise ValueError(f"names {self.names} do not match out_indices {self.out_indices} one to one")

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:  # type: ignore[override]
        """Image (B, C, H, W) -> ordered dict name -> feature map."""
        return OrderedDict(zip(self.names, super().forward(x)))


def feature_dict(
    backbone_name: str,
    out_indices: Sequence[int],
    names: Sequence[str] | None = None,
    frozen_stages: int = -1,
    pretrained: bool | str = False,
    **overrides: Any,
) -> FeatureDict:
    """A :class:`FeatureDict` of a named variant, built by ``create_model`` (weights, ``norm``, ``output_stride``
    and any other config override pass through)."""
    model = create_model(backbone_name, pretrained=pretrained, **overrides)
    return FeatureDict(model, out_indices, frozen_stages, names)


class ResNetFPN(nn.Module):
    """torchvision's ``BackboneWithFPN`` with a resnetkit body: ``body`` gives the stage maps, ``fpn`` (torchvision's
    ``FeaturePyramidNetwork``) the pyramid. Same attribute names, so the same state-dict keys
    (``body.layer1.0.conv1.weight``, ``fpn.inner_blocks.0.0.weight``, ...).

    Args:
        body: the backbone, returning ``{"0": C_first, ..., str(n-1): C_last}``.
        out_channels: channels of every pyramid level (256 in torchvision).
        extra_blocks: torchvision's ``LastLevelMaxPool`` or ``LastLevelP6P7``.
        norm_layer: a norm for the FPN's convolutions (none in torchvision's v1 models).

    Attributes:
        out_channels: what torchvision's detection heads read.
    """

    def __init__(
        self,
        body: FeatureDict,
        out_channels: int = 256,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Any = None,
    ):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks, norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image (B, C, H, W) -> ordered dict of pyramid levels, finest first."""
        return self.fpn(self.body(x))


def set_frozen_eps(model: nn.Module, eps: float) -> nn.Module:
    """Set ``eps`` of every ``FrozenBatchNorm2d`` (torchvision's ``overwrite_eps``: its COCO_V1 detectors were
    trained with 0)."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps
    return model
