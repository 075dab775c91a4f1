"""Semantic segmentation: DeepLabv3 and FCN, torchvision's own heads, on any resnetkit variant.

``deeplabv3`` and ``fcn`` build torchvision's ``DeepLabV3`` (ASPP, ``DeepLabHead``) and ``FCN`` (``FCNHead``) on
a :class:`~resnetkit.tasks.backbones.FeatureDict` giving ``{"aux": stage 3, "out": stage 4}`` at output stride 8
or 16 (dilation; BasicBlock variants too; CIFAR layouts at their own strides, 4 or less), as ``torchvision.models.segmentation.deeplabv3_resnet50`` and
``fcn_resnet50`` build theirs: same module names, so their state dicts load with ``strict=True``.
"""

from __future__ import annotations

from typing import Any

from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCN, FCNHead

from .backbones import FeatureDict, feature_dict
from .checkpoints import load_torchvision_checkpoint, pretrained_builder_args


def segmentation_backbone(
    backbone_name: str = "resnet50",
    aux: bool = False,
    output_stride: int = 8,
    pretrained_backbone: bool | str = False,
    frozen_stages: int = -1,
    **backbone_options: Any,
) -> FeatureDict:
    """The last stage as ``"out"`` (and the one before as ``"aux"`` when ``aux``), at ``output_stride`` 8 or 16.

    Args:
        backbone_name: any name of ``resnetkit.list_models()`` with four stages or fewer (the last two are read).
        aux: also return the stage before the last, for the auxiliary head.
        output_stride: 8 (dilated last two stages, torchvision's choice) or 16 (dilated last stage) for ImageNet
            layouts; any stride the variant allows (``create_model`` says which), e.g. 4 or 2 for CIFAR ones.
        pretrained_backbone: classification weights, as ``create_model(pretrained=...)`` takes them.
        frozen_stages: stem and first stages frozen (``create_model``'s option).
        **backbone_options: further ``create_model`` overrides (``norm``, ``drop_path_rate``, ...).
    """
    indices, names = ((-2, -1), ("aux", "out")) if aux else ((-1,), ("out",))
    return feature_dict(backbone_name, indices, names, frozen_stages=frozen_stages, pretrained=pretrained_backbone,
                        output_stride=output_stride, **backbone_options)  # fmt: skip


def _build(kind: str, backbone_name: str, num_classes: int, aux: bool | None, weights: str | None,
           backbone: dict) -> Any:  # fmt: skip
    entry = None
    if weights is not None:
        entry, fixed = pretrained_builder_args(weights, kind, backbone_name)
        num_classes, aux = fixed["num_classes"], True
    body = segmentation_backbone(backbone_name, aux=bool(aux), **backbone)
    channels = dict(zip(body.names, body.feature_info.channels()))
    aux_classifier = FCNHead(channels["aux"], num_classes) if aux else None
    if kind == "deeplabv3":
        model = DeepLabV3(body, DeepLabHead(channels["out"], num_classes), aux_classifier)
    else:
        model = FCN(body, FCNHead(channels["out"], num_classes), aux_classifier)
    if entry is not None:
        load_torchvision_checkpoint(model, entry)
    return model


def deeplabv3(
    backbone_name: str = "resnet50",
    num_classes: int = 21,
    *,
    output_stride: int = 8,
    aux: bool | None = None,
    weights: str | None = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int = -1,
    **backbone_options: Any,
) -> DeepLabV3:
    """torchvision's DeepLabv3 (ASPP head) on any resnetkit variant; ``deeplabv3_resnet50`` for ``"resnet50"``.

    Args:
        backbone_name: any name of ``resnetkit.list_models()``, BasicBlock variants included.
        num_classes: classes including the background (21 for the VOC labels).
        output_stride: 8 (torchvision's) or 16; 4, 2 or 1 for CIFAR layouts.
        aux: add the auxiliary ``FCNHead`` on the stage before the last (its output is ``"aux"``).
        weights: a checkpoint of the whole model (``"deeplabv3_resnet50.coco_voc_v1"``; see
            ``resnetkit.tasks.list_task_weights()``), downloaded, verified and loaded; fixes ``num_classes`` and
            ``aux``.
        pretrained_backbone: classification weights for the backbone.
        frozen_stages: stem and first stages frozen.
        **backbone_options: ``create_model`` overrides for the backbone (``norm``, ``drop_path_rate``, ...).

    Example:
        >>> import torch
        >>> model = deeplabv3("resnet18", num_classes=4, output_stride=16, aux=True).eval()
        >>> {k: tuple(v.shape) for k, v in model(torch.randn(1, 3, 64, 64)).items()}
        {'out': (1, 4, 64, 64), 'aux': (1, 4, 64, 64)}
    """
    backbone = dict(output_stride=output_stride, pretrained_backbone=pretrained_backbone,
                    frozen_stages=frozen_stages, **backbone_options)  # fmt: skip
    return _build("deeplabv3", backbone_name, num_classes, aux, weights, backbone)


def fcn(
    backbone_name: str = "resnet50",
    num_classes: int = 21,
    *,
    output_stride: int = 8,
    aux: bool | None = None,
    weights: str | None = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int = -1,
    **backbone_options: Any,
) -> FCN:
    """torchvision's FCN (``FCNHead``) on any resnetkit variant; ``fcn_resnet50`` for ``"resnet50"``. Arguments as
    :func:`deeplabv3`; ``weights`` e.g. ``"fcn_resnet50.coco_voc_v1"``."""
    backbone = dict(output_stride=output_stride, pretrained_backbone=pretrained_backbone,
                    frozen_stages=frozen_stages, **backbone_options)  # fmt: skip
    return _build("fcn", backbone_name, num_classes, aux, weights, backbone)
