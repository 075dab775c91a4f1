"""ResNets under torchvision's detection and segmentation heads (see ``docs/tasks.md``).

Builders for Faster R-CNN, Mask R-CNN, RetinaNet (with a feature pyramid), DeepLabv3 and FCN on any resnetkit
variant, module for module torchvision's own models (their state dicts load strictly, their outputs are equal),
and torchvision's published COCO checkpoints of them, loaded through resnetkit's download/cache/verify path.
"""

from .backbones import FeatureDict, ResNetFPN, feature_dict, set_frozen_eps
from .checkpoints import (
    TASK_WEIGHTS,
    TaskWeights,
    fetch_checkpoint,
    get_task_weights,
    list_task_weights,
    load_torchvision_checkpoint,
)
from .detection import faster_rcnn, mask_rcnn, resnet_fpn, retinanet
from .segmentation import deeplabv3, fcn, segmentation_backbone

__all__ = [
    "TASK_WEIGHTS", "FeatureDict", "ResNetFPN", "TaskWeights", "deeplabv3", "faster_rcnn", "fcn", "feature_dict",
    "fetch_checkpoint", "get_task_weights", "list_task_weights", "load_torchvision_checkpoint", "mask_rcnn",
    "resnet_fpn", "retinanet", "segmentation_backbone", "set_frozen_eps",
]  # fmt: skip
