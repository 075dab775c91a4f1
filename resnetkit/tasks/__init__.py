"""ResNets under torchvision's detection and segmentation heads (see ``docs/tasks.md``).

Builders for Faster R-CNN, Mask R-CNN, RetinaNet (with a feature pyramid), DeepLabv3 and FCN on any resnetkit
variant, module for module torchvision's own models (their state dicts load strictly, their outputs are equal),
and torchvision's published COCO checkpoints of them, loaded through resnetkit's download/cache/verify path.
Training through the one engine (:mod:`.training`), pictures (:mod:`.draw`, :mod:`.predict`) and ONNX export
(:mod:`.export`).
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
from .draw import draw_detections, draw_segmentation, save_image
from .export import SegmentationLogits, export_detector_onnx
from .predict import TaskPredictor
from .segmentation import deeplabv3, fcn, segmentation_backbone
from .training import HEADS, Detection, Segmentation, build_task_model, load_task_model, task_for

__all__ = [
    "HEADS", "TASK_WEIGHTS", "Detection", "FeatureDict", "ResNetFPN", "Segmentation", "SegmentationLogits",
    "TaskPredictor", "TaskWeights", "build_task_model", "deeplabv3", "draw_detections", "draw_segmentation",
    "export_detector_onnx", "faster_rcnn", "fcn", "feature_dict", "fetch_checkpoint", "get_task_weights",
    "list_task_weights", "load_task_model", "load_torchvision_checkpoint", "mask_rcnn", "resnet_fpn", "retinanet",
    "save_image", "segmentation_backbone", "set_frozen_eps", "task_for",
]  # fmt: skip
