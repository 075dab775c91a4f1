"""torchvision's published COCO checkpoints of its ResNet detectors and segmenters, the ones resnetkit trained
and ships in the package (``weights/files/task_manifest.json``, written by ``resnetkit.weights.publish``), and
loading them.

The entries are read from torchvision's own weight enums (address, categories, published metrics, recipe), so
they cannot drift from what torchvision serves. torchvision publishes the first 8 hex digits of each file's SHA-256
in its name and verifies those; so do we, through resnetkit's download path (``resnetkit.io.download_url``: https
only, resumable, checked before the file gets its final name) into resnetkit's weights cache.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import detection, segmentation

from ..errors import UnknownNameError
from ..io import checksum_mismatch, download_url
from ..weights.hub import cache_dir, torch_home
from ..weights.registry import TASK_MANIFEST, hash_prefix, render_table
from .backbones import set_frozen_eps


@dataclass(frozen=True)
class TaskWeights:
    """One published checkpoint of a whole detector or segmenter.

    Args:
        name: ``model.tag`` (``fasterrcnn_resnet50_fpn.coco_v1``).
        builder: the ``resnetkit.tasks`` builder that makes the model (``faster_rcnn``, ``deeplabv3``, ...).
        backbone: the resnetkit variant under the head.
        url: download address; ``None`` for weights shipped inside the package.
        filename: file name in the cache (or in the package's ``weights/files``).
        sha256: the published prefix of the file's SHA-256 (the whole of it for shipped weights).
        categories: class names, background first.
        metrics: published metrics (``{"COCO-val2017": {"box_map": 37.0}}``).
        num_params: parameter count.
        file_mb: file size in MB.
        recipe: how they were trained.
        frozen_eps: the ``eps`` of the frozen BatchNorms the weights were trained with (0 for torchvision's
            COCO_V1 detectors), ``None`` when the model has ordinary BatchNorm.
        aux: the segmenter has its auxiliary head.
    """

    name: str
    builder: str
    backbone: str
    url: str | None
    filename: str
    sha256: str
    categories: tuple[str, ...]
    metrics: dict
    num_params: int
    file_mb: float
    recipe: str
    frozen_eps: float | None = None
    aux: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def source(self) -> str:
        return self.url or f"resnetkit (shipped: weights/files/{self.filename})"


# (torchvision weights enum member, resnetkit builder, backbone, our tag)
_SOURCES = [
    (detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1, "faster_rcnn", "resnet50", "coco_v1"),
    (detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1, "mask_rcnn", "resnet50", "coco_v1"),
    (detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1, "retinanet", "resnet50", "coco_v1"),
    (segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, "deeplabv3", "resnet50", "coco_voc_v1"),
    (segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, "deeplabv3", "resnet101", "coco_voc_v1"),
    (segmentation.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, "fcn", "resnet50", "coco_voc_v1"),
    (segmentation.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, "fcn", "resnet101", "coco_voc_v1"),
]
_TV_MODEL = {"faster_rcnn": "fasterrcnn_{}_fpn", "mask_rcnn": "maskrcnn_{}_fpn", "retinanet": "retinanet_{}_fpn",
             "deeplabv3": "deeplabv3_{}", "fcn": "fcn_{}"}  # fmt: skip


def _entries() -> dict[str, TaskWeights]:
    entries = {}
    for weights, builder, backbone, tag in _SOURCES:
        filename = weights.url.rsplit("/", 1)[-1]
        detector = builder in ("faster_rcnn", "mask_rcnn", "retinanet")
        entry = TaskWeights(
            f"{_TV_MODEL[builder].format(backbone)}.{tag}", builder, backbone, weights.url, filename,
            hash_prefix(filename), tuple(weights.meta["categories"]), dict(weights.meta["_metrics"]),
            weights.meta["num_params"], weights.meta["_file_size"], weights.meta["recipe"],
            frozen_eps=0.0 if detector else None, aux=not detector,
        )  # fmt: skip
        entries[entry.name] = entry
    return entries


def shipped_entries(manifest: Path = TASK_MANIFEST) -> dict[str, TaskWeights]:
    """The task models resnetkit ships, from their manifest (see :func:`resnetkit.weights.publish.publish_run`)."""
    records = json.loads(manifest.read_text()) if manifest.is_file() else []
    entries = [TaskWeights(r["name"], r["builder"], r["backbone"], None, r["filename"], r["sha256"],
                           tuple(r["categories"]), r["metrics"], r["num_params"], r["file_mb"], r["recipe"],
                           aux=r["aux"]) for r in records]  # fmt: skip
    return {e.name: e for e in entries}


TASK_WEIGHTS: dict[str, TaskWeights] = {**_entries(), **shipped_entries()}


def list_task_weights(pattern: str = "*") -> list[str]:
    """Names of the known detector and segmenter checkpoints matching a shell-style pattern."""
    return sorted(n for n in TASK_WEIGHTS if fnmatch.fnmatchcase(n, pattern))


def task_weights_table(pattern: str = "*", markdown: bool = False) -> str:
    """The detector and segmenter checkpoints as a table: name, builder, classes, published metrics, size, source."""
    header = ["weights", "model", "classes", "published metrics", "params", "size", "source"]
    rows = []
    for name in list_task_weights(pattern):
        e = TASK_WEIGHTS[name]
        metrics = "; ".join(f"{data}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                            for data, values in e.metrics.items())  # fmt: skip
        rows.append([name, f"{e.builder}({e.backbone})", str(e.num_classes), metrics, f"{e.num_params / 1e6:.2f}M",
                     f"{e.file_mb:.1f} MB", e.source])  # fmt: skip
    return render_table(header, rows, markdown)


def get_task_weights(name: str) -> TaskWeights:
    """The entry called ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return TASK_WEIGHTS[name]
    except KeyError:
        raise UnknownNameError(f"unknown task weights {name!r}; known: {', '.join(list_task_weights())}") from None


def fetch_checkpoint(entry: TaskWeights, cache: str | Path | None = None, progress: bool = True) -> Path:
    """The local file of ``entry``: torchvision's own cached copy when whole, else downloaded into resnetkit's cache
    and checked against the published SHA-256 prefix."""
    original = torch_home() / "hub" / "checkpoints" / entry.filename
    if original.is_file() and checksum_mismatch(original, sha256=entry.sha256) is None:
        return original
    return download_url(entry.url, cache_dir(cache) / entry.filename, sha256=entry.sha256, progress=progress)


def load_torchvision_checkpoint(
    model: nn.Module, entry: TaskWeights | str, cache: str | Path | None = None, progress: bool = True
) -> nn.Module:
    """Load a published checkpoint into ``model`` (built to match: same backbone, classes and aux head) strictly,
    after the download, cache and checksum path of classification weights; returns ``model``.

    Example:
        >>> from resnetkit.tasks import get_task_weights
        >>> entry = get_task_weights("fcn_resnet50.coco_voc_v1")
        >>> entry.num_classes, entry.sha256
        (21, '1167a1af')
    """
    if isinstance(entry, str):
        entry = get_task_weights(entry)
    path = fetch_checkpoint(entry, cache, progress)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if entry.frozen_eps is not None:
        set_frozen_eps(model, entry.frozen_eps)
    return model


def pretrained_builder_args(weights: str, builder: str, backbone_name: str) -> tuple[TaskWeights, dict]:
    """The entry for ``weights`` and the builder arguments it fixes; a checkpoint of another model is an error."""
    entry = get_task_weights(weights)
    if entry.builder != builder or entry.backbone != backbone_name:
        raise ValueError(f"weights {weights} are of {entry.builder}({entry.backbone!r}), "
                         f"not {builder}({backbone_name!r})")  # fmt: skip
    return entry, {"num_classes": entry.num_classes}
