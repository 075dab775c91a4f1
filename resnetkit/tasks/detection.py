"""Detection and instance segmentation: any resnetkit variant under torchvision's own heads.

``faster_rcnn``, ``mask_rcnn`` and ``retinanet`` build torchvision's ``FasterRCNN``, ``MaskRCNN`` and ``RetinaNet``
on a :class:`~resnetkit.tasks.backbones.ResNetFPN` (torchvision's ``FeaturePyramidNetwork`` over the stages of
``create_model(backbone_name)``), exactly as ``torchvision.models.detection.*_resnet50_fpn`` build theirs: the
same module names (their state dicts load with ``strict=True``), the same pyramid (C2-C5 and a max-pooled level
for the R-CNNs; C3-C5, P6 and P7 from P5 for RetinaNet) and the same defaults: with pretrained weights (backbone or
whole model) frozen BatchNorm and ``frozen_stages=1`` (torchvision's ``trainable_backbone_layers=3``), without them
the variant's own norm and nothing frozen.

``head_norm`` gives the R-CNNs torchvision's v2 heads (``*_resnet50_fpn_v2``, after Li et al. 2021): a two-conv RPN
head, a four-conv one-fc box head, a mask head and pyramid convolutions, each followed by a norm: ``"batch"`` as
torchvision's (state dicts move with ``strict=True``), ``"group"`` for training from scratch with small batches, as
He et al. 2019 ("Rethinking ImageNet Pre-training") normalise the pyramid and heads with GroupNorm.
"""

from __future__ import annotations

from typing import Any

from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, RPNHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..models.config import Norm
from ..models.layers import NORM_LAYERS
from .backbones import ResNetFPN, feature_dict
from .checkpoints import load_torchvision_checkpoint, pretrained_builder_args


def resnet_fpn(
    backbone_name: str = "resnet50",
    returned_layers: tuple[int, ...] = (1, 2, 3, 4),
    extra_blocks: Any = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int | None = None,
    norm: str | None = None,
    out_channels: int = 256,
    trained: bool = False,
    fpn_norm: str | None = None,
    **backbone_options: Any,
) -> ResNetFPN:
    """A resnetkit variant with torchvision's feature pyramid on the stages ``returned_layers``.

    Args:
        backbone_name: any name of ``resnetkit.list_models()``.
        returned_layers: stages feeding the pyramid (1..4 as torchvision counts them).
        extra_blocks: torchvision's ``LastLevelMaxPool()`` (the default) or ``LastLevelP6P7(...)``.
        pretrained_backbone: weights for the variant, as ``create_model(pretrained=...)`` takes them.
        frozen_stages: stem and first stages frozen (``create_model``'s option); ``None``: 1 when pretrained
            (backbone, or ``trained``), else -1, as torchvision.
        norm: the backbone's norm; ``None``: ``"frozen_batch"`` when pretrained, else the variant's own.
        out_channels: channels of each pyramid level.
        trained: the whole model's weights will be loaded (counts as pretrained for the defaults).
        fpn_norm: a norm after the pyramid's convolutions (``"batch"``, ``"group"``); ``None``: none, as v1.
        **backbone_options: further ``create_model`` overrides (``drop_path_rate``, ``stride_in_1x1``, ...).
    """
    pretrained = trained or bool(pretrained_backbone)
    if frozen_stages is None:
        frozen_stages = 1 if pretrained else -1
    if norm is None and pretrained:
        norm = "frozen_batch"
    if norm is not None:
        backbone_options["norm"] = norm
    body = feature_dict(backbone_name, tuple(returned_layers), frozen_stages=frozen_stages,
                        pretrained=pretrained_backbone, **backbone_options)  # fmt: skip
    extra_blocks = extra_blocks if extra_blocks is not None else LastLevelMaxPool()
    return ResNetFPN(body, out_channels, extra_blocks, NORM_LAYERS[Norm(fpn_norm)] if fpn_norm else None)


def v2_heads(head_norm: str, out_channels: int = 256, mask: bool = False, num_anchors: int = 3) -> dict[str, Any]:
    """torchvision's v2 R-CNN heads with ``head_norm`` after every convolution, as ``FasterRCNN``/``MaskRCNN``
    arguments: ``rpn_head``, ``box_head`` and, with ``mask``, ``mask_head``."""
    norm_layer = NORM_LAYERS[Norm(head_norm)]
    box_head = FastRCNNConvFCHead((out_channels, 7, 7), [256] * 4, [1024], norm_layer=norm_layer)
    heads = {"rpn_head": RPNHead(out_channels, num_anchors, conv_depth=2), "box_head": box_head}
    if mask:
        heads["mask_head"] = MaskRCNNHeads(out_channels, [256] * 4, 1, norm_layer=norm_layer)
    return heads


def _build(head: type, builder: str, backbone_name: str, num_classes: int, weights: str | None, fpn: dict,
           backbone: dict, kwargs: dict) -> Any:  # fmt: skip
    entry = None
    if weights is not None:
        entry, fixed = pretrained_builder_args(weights, builder, backbone_name)
        num_classes = fixed["num_classes"]
    backbone = dict(backbone)
    for key in ("norm", "frozen_stages"):  # given with the backbone's options: the same as the builder's argument
        if key in backbone and fpn.get(key) is None:
            fpn[key] = backbone.pop(key)
    head_norm = kwargs.pop("head_norm", None)
    if head_norm is not None:
        if head is RetinaNet:
            raise ValueError("head_norm (torchvision's v2 heads) is for faster_rcnn and mask_rcnn, not retinanet")
        anchors = kwargs.get("rpn_anchor_generator")
        num_anchors = anchors.num_anchors_per_location()[0] if anchors else 3
        kwargs = {**v2_heads(head_norm, mask=head is MaskRCNN, num_anchors=num_anchors), **kwargs}
    model = head(resnet_fpn(backbone_name, trained=entry is not None, fpn_norm=head_norm, **fpn, **backbone),
                 num_classes, **kwargs)  # fmt: skip
    if entry is not None:
        load_torchvision_checkpoint(model, entry)
    return model


def faster_rcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights: str | None = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int | None = None,
    norm: str | None = None,
    backbone_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's Faster R-CNN with a feature pyramid on any resnetkit variant.

    With ``backbone_name="resnet50"`` it is ``torchvision.models.detection.fasterrcnn_resnet50_fpn``: the same
    modules and defaults, so state dicts move between them with ``strict=True``.

    Args:
        backbone_name: any name of ``resnetkit.list_models()``.
        num_classes: classes including the background (91 for COCO).
        weights: a checkpoint of the whole detector (``"fasterrcnn_resnet50_fpn.coco_v1"``; see
            ``resnetkit.tasks.list_task_weights()``), downloaded, verified and loaded; fixes ``num_classes``.
        pretrained_backbone: classification weights for the backbone (``True``, a tag, a registry name or a file).
        frozen_stages: stem and first stages frozen; ``None`` follows torchvision (1 when pretrained, else -1).
        norm: the backbone's norm; ``None`` follows torchvision (``"frozen_batch"`` when pretrained).
        backbone_options: further ``create_model`` overrides for the backbone.
        **kwargs: options of torchvision's ``FasterRCNN`` (``min_size``, ``box_score_thresh``, ...), and
            ``head_norm`` (``"batch"`` or ``"group"``): torchvision's v2 heads with that norm (see the module).

    Example:
        >>> model = faster_rcnn("resnet18", num_classes=3, min_size=64, max_size=64).eval()
        >>> type(model).__name__, model.backbone.body.feature_info.channels()
        ('FasterRCNN', [64, 128, 256, 512])
    """
    fpn = {"pretrained_backbone": pretrained_backbone, "frozen_stages": frozen_stages, "norm": norm}
    return _build(FasterRCNN, "faster_rcnn", backbone_name, num_classes, weights, fpn, backbone_options or {}, kwargs)


def mask_rcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights: str | None = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int | None = None,
    norm: str | None = None,
    backbone_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    """torchvision's Mask R-CNN with a feature pyramid on any resnetkit variant
    (``maskrcnn_resnet50_fpn`` for ``"resnet50"``). Arguments as :func:`faster_rcnn`; ``**kwargs`` go to
    torchvision's ``MaskRCNN``; ``weights`` e.g. ``"maskrcnn_resnet50_fpn.coco_v1"``."""
    fpn = {"pretrained_backbone": pretrained_backbone, "frozen_stages": frozen_stages, "norm": norm}
    return _build(MaskRCNN, "mask_rcnn", backbone_name, num_classes, weights, fpn, backbone_options or {}, kwargs)


def retinanet(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights: str | None = None,
    pretrained_backbone: bool | str = False,
    frozen_stages: int | None = None,
    norm: str | None = None,
    backbone_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RetinaNet:
    """torchvision's RetinaNet on any resnetkit variant (``retinanet_resnet50_fpn`` for ``"resnet50"``): the
    pyramid reads stages 2-4 (C3-C5) and adds P6 and P7 computed from P5 (``LastLevelP6P7(256, 256)``), as
    torchvision's v1 model does. Arguments as :func:`faster_rcnn`; ``**kwargs`` go to torchvision's
    ``RetinaNet``; ``weights`` e.g. ``"retinanet_resnet50_fpn.coco_v1"``."""
    fpn = {"pretrained_backbone": pretrained_backbone, "frozen_stages": frozen_stages, "norm": norm,
           "returned_layers": (2, 3, 4), "extra_blocks": LastLevelP6P7(256, 256)}  # fmt: skip
    return _build(RetinaNet, "retinanet", backbone_name, num_classes, weights, fpn, backbone_options or {}, kwargs)
