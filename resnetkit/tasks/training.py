"""Detection and segmentation as tasks of the one training engine, and the model files they write.

A recipe whose ``model.head`` names a task head trains that task model with :func:`resnetkit.train.fit`, the same
loop, checkpoints, resume, DDP, AMP, EMA, logs, plots and ``summary.json`` as classification: the task only brings
its data (:mod:`resnetkit.data.segmentation`, :mod:`resnetkit.data.detection`), its model (the builders of this
package), its loss and its metric (:mod:`resnetkit.train.task_metrics`)::

    model: {name: resnet18, head: deeplabv3, head_options: {output_stride: 8, aux: true}}
    data: {dataset: ../shared/data/camvid-trainval.zip, classes: [sky, building, ...], ignore_index: 11}

The files a run writes are ordinary resnetkit model files whose record carries ``task`` (the head and its
arguments) beside the backbone's config; :func:`load_task_model` rebuilds the model from such a file alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from .. import runtime
from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..data.dense import IGNORE
from ..data.transforms import Augment
from ..errors import UserError
from ..models import ModelRecord, Preprocess
from ..train import distributed as D
from ..train.config import TrainConfig
from ..train.data import RunData, train_loader
from ..train.task import Classification, Task, Trainer, options_of, recipe_summary, refuse_classifier_options
from ..train.task_metrics import DetectionMeter, SegmentationMeter
from ..weights import load_checked, read_any
from ..weights.hub import checked_shipped, resolve
from .checkpoints import TASK_WEIGHTS, get_task_weights
from .depth_training import DepthTask, depth_head
from .detection import faster_rcnn, mask_rcnn, retinanet
from .segmentation import deeplabv3, fcn
from .video_training import VideoTask, frame_lstm, tsn, video_classifier

# head -> (task kind, builder)
HEADS: dict[str, tuple[str, Callable[..., nn.Module]]] = {
    "deeplabv3": ("segmentation", deeplabv3),
    "fcn": ("segmentation", fcn),
    "faster_rcnn": ("detection", faster_rcnn),
    "mask_rcnn": ("detection", mask_rcnn),
    "retinanet": ("detection", retinanet),
    "video": ("video", video_classifier),
    "tsn": ("video", tsn),
    "frame_lstm": ("video", frame_lstm),
    "depth": ("depth", depth_head),
}
AUX_WEIGHT = 0.5  # the auxiliary head's share of the segmentation loss (torchvision's reference, PSPNet)
NOT_REBUILT = ("pretrained_backbone", "weights")  # builder arguments that fetch weights: the file has its own


def task_for(cfg: TrainConfig) -> Task:
    """The task a config trains: classification, or the kind of its ``model.head``."""
    if not cfg.model.head:
        return Classification()
    kind = head_kind(cfg.model.head)
    if kind in ("video", "depth"):
        return VideoTask() if kind == "video" else DepthTask()
    return Segmentation() if kind == "segmentation" else Detection()


def head_kind(head: str) -> str:
    if head not in HEADS:
        close = difflib.get_close_matches(head, HEADS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown model.head {head!r}; {hint}known: {', '.join(HEADS)}")
    return HEADS[head][0]


def build_task_model(backbone: str, head: str, num_classes: int, options: dict[str, Any],
                     backbone_options: dict[str, Any]) -> nn.Module:  # fmt: skip
    """``head`` on the variant ``backbone``: the builder of this package with ``options`` (its own arguments) and
    ``backbone_options`` (``create_model`` overrides of the backbone)."""
    kind, builder = HEADS[head][0], HEADS[head][1]
    if kind == "segmentation":
        return builder(backbone, num_classes, **options, **backbone_options)
    return builder(backbone, num_classes, backbone_options=dict(backbone_options), **options)


def backbone_of(model: nn.Module) -> nn.Module:
    """The resnetkit feature extractor inside a task model (``backbone.body`` under a feature pyramid)."""
    return model.backbone.body if hasattr(model.backbone, "body") else model.backbone


def load_task_model(source: str | Path) -> nn.Module:
    """Rebuild a detection or segmentation model from a resnetkit model file alone (a run's ``best.safetensors``,
    ``weights.safetensors``, or a published file), its weights loaded and its record as ``model.record``.

    A name of :data:`~resnetkit.tasks.TASK_WEIGHTS` is loaded too: torchvision's COCO checkpoints
    (``maskrcnn_resnet50_fpn.coco_v1``) are built, downloaded once (cached, SHA-256 prefix checked) and given a
    record, and the models resnetkit ships (``deeplabv3_resnet18.<tag>``) are read from the package after their
    SHA-256 is checked; so ``resnetkit predict``, ``export`` and ``bench`` take a name as they take a file.

    Example:
        >>> model = load_task_model("runs/camvid/best.safetensors")  # doctest: +SKIP
    """
    if str(source) in TASK_WEIGHTS:
        entry = get_task_weights(str(source))
        if entry.url is not None:
            return published_task_model(entry.name)
        source = checked_shipped(entry)
    state, record = read_any(resolve(source))
    if not record.task:
        raise UserError(f"{source} is a {record.arch} classifier, not a task model: load it with resnetkit.load_model")
    task = record.task
    model = build_task_model(record.arch, task["head"], task["num_classes"], task["options"], backbone_options(record))
    load_checked(model, state, source=f"weights {source}")
    model.record = record
    return model.eval()


# torchvision's segmentation references train and evaluate VOC/COCO at a shorter side of 520 pixels
PUBLISHED_SEGMENTATION_SIZE = 520


def published_task_model(name: str) -> nn.Module:
    """torchvision's checkpoint ``name`` on its resnetkit model, with a record: the categories, torchvision's
    preprocessing (ImageNet statistics; segmenters at a shorter side of 520, detectors resize inside) and the task."""
    entry = get_task_weights(name)
    kind, builder = HEADS[entry.builder]
    model = builder(entry.backbone, entry.num_classes, weights=entry.name)
    size = PUBLISHED_SEGMENTATION_SIZE if kind == "segmentation" else Preprocess().crop_size
    task = {"head": entry.builder, "num_classes": entry.num_classes, "options": {"aux": True} if entry.aux else {},
            "base_size": size if kind == "segmentation" else None}  # fmt: skip
    model.record = ModelRecord(entry.backbone, backbone_of(model).config, Preprocess(size, size), entry.categories,
                               recipe=entry.recipe, source=entry.url, extra={"metrics": entry.metrics}, task=task)  # fmt: skip
    return model.eval()


def backbone_options(record: ModelRecord) -> dict[str, Any]:
    """The ``create_model`` overrides that turn the record's variant into its backbone config (less those the
    head's own arguments set, such as ``output_stride``)."""
    return options_of(record, skip=record.task.get("options", {}))


class _DenseTask(Task):
    """What segmentation and detection share: datasets with their own train and val folders, per-sample
    transforms in DataLoader workers, a task model from ``model.head``, and records that carry the task."""

    def augmentation(self, cfg: TrainConfig) -> str:
        """The training augmentation in words, for the record's recipe line."""
        raise NotImplementedError

    def check(self, cfg: TrainConfig) -> None:
        refuse_classifier_options(cfg, self.name)
        head_kind(cfg.model.head)

    def loaders(self, cfg: TrainConfig, train_set, val_set, collate, world: D.World) -> tuple[DataLoader, DataLoader]:
        d = cfg.data
        train = train_loader(train_set, d, world, cfg.seed, collate)
        val = DataLoader(val_set, batch_size=d.eval_batch_size, num_workers=d.workers, collate_fn=collate,
                         persistent_workers=d.workers > 0)  # fmt: skip
        return train, val

    def build_model(self, cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, nn.Module]:
        if cfg.model.head == "deeplabv3" and cfg.data.batch_size // world.size < 2:
            raise UserError(f"DeepLabv3's image-pooling BatchNorm needs at least 2 images per process in training; "
                            f"data.batch_size={cfg.data.batch_size} over {world.size} process(es) gives "
                            f"{cfg.data.batch_size // world.size}")  # fmt: skip
        model = build_task_model(cfg.model.name, cfg.model.head, data.num_classes, dict(cfg.model.head_options),
                                 dict(cfg.model.options))  # fmt: skip
        return cfg, model

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model_config": backbone_of(model).config.to_dict(), "edits": []}

    def record(self, t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
        """The backbone's config and the task (head, classes, builder arguments), preprocessing, the validation
        metrics of this epoch (in ``extra["val"]``) and the training config."""
        cfg, d = t.cfg, t.cfg.data
        options = {k: v for k, v in cfg.model.head_options.items() if k not in NOT_REBUILT}
        options["frozen_stages"] = backbone_of(t.model).frozen_stages
        task = {"head": cfg.model.head, "num_classes": t.data.num_classes, "options": options,
                "base_size": d.base_size}  # fmt: skip
        val = {k.removeprefix("val_"): v for k, v in epoch_record.items() if k.startswith("val_")}
        size = d.base_size or d.input_size
        return ModelRecord(
            cfg.model.name, backbone_of(t.model).config, Preprocess(size, size, mean=t.data.mean, std=t.data.std),
            tuple(t.data.classes), (), recipe_summary(cfg, self.augmentation(cfg)),
            source=f"resnetkit training run {t.out}",
            extra={"epoch": t.epoch, "step": t.step, "ema": t.ema is not None, "dataset": d.dataset,
                   "split": "val", "val": val},
            train_config=cfg.to_dict(), task=task,
        )  # fmt: skip


class Segmentation(_DenseTask):
    """Semantic segmentation: per-pixel cross-entropy (ignored pixels left out; the auxiliary head's loss weighted
    :data:`AUX_WEIGHT`), mean IoU over the classes from a confusion matrix."""

    name = "segmentation"
    metric = "miou"

    def augmentation(self, cfg: TrainConfig) -> str:
        d, (low, high) = cfg.data, cfg.data.scale_range
        base = f" of shorter side {d.base_size}" if d.base_size else ""
        return f"random scale {low}-{high}x{base}, {d.input_size}-pixel crops{', flips' if d.flip else ''}"

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        from ..data.segmentation import SegmentationDataset, segmentation_collate, segmentation_transform

        d = cfg.data
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        base = d.base_size or None
        common = {"ignore_index": d.ignore_index if d.ignore_index >= 0 else None,
                  "num_classes": len(d.classes) or None, "skip_broken": d.skip_broken}  # fmt: skip
        train_tf = segmentation_transform(True, d.input_size, mean, std, scale_range=tuple(d.scale_range), flip=d.flip,
                                          base_size=base)  # fmt: skip
        train_set = SegmentationDataset(d.dataset, "train", train_tf, **common)
        # validation at the labels' own resolution: the model sees the image at base_size, its logits are resized back
        val_set = SegmentationDataset(d.dataset, "val", segmentation_transform(False, d.input_size, mean, std),
                                      **common)  # fmt: skip
        classes = list(d.classes) or train_set.classes
        if not classes:
            raise UserError(f"{d.dataset} names no classes (no classes.txt): give data.classes=[...]")
        train, val = self.loaders(cfg, train_set, val_set, segmentation_collate, world)
        return RunData(train, {"val": val}, classes, mean, std, device, world)

    def __init__(self) -> None:
        self.class_weights: torch.Tensor | None = None

    def setup(self, t: Trainer) -> None:
        if t.cfg.optim.class_balance:
            self.class_weights = median_frequency_weights(t.data.train.dataset, t.data.num_classes).to(t.device)
            if t.world.is_main and t.cfg.progress:
                shown = ", ".join(f"{c} {w:.2f}" for c, w in zip(t.data.classes, self.class_weights.tolist()))
                print(f"class weights (median frequency balancing): {shown}")

    def train_loss(self, t: Trainer, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, None]:
        return segmentation_loss(t.net(images), masks, self.class_weights), None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> SegmentationMeter:
        model.eval()
        meter = SegmentationMeter(data.num_classes, IGNORE, list(data.classes))
        for images, masks in batches:
            with runtime.autocast(data.device, cfg.precision):
                logits = segment(model, images, cfg.data.base_size)
            meter.update(logits, masks, F.cross_entropy(logits, masks, ignore_index=IGNORE).item())
        return meter


def segment(model: nn.Module, images: torch.Tensor, base_size: int = 0) -> torch.Tensor:
    """Float32 logits ``(B, K, H, W)`` for normalised ``images`` ``(B, 3, H, W)``: the model sees them with the
    shorter side resized to ``base_size`` (its training scale; 0: as they are), and its logits are resized back, so
    every pixel of the original is labelled (as mmseg's and torchvision's references evaluate)."""
    size = images.shape[-2:]
    if base_size and min(size) != base_size:
        images = TF.resize(images, [base_size], antialias=True)
    logits = model(images)["out"].float()
    return logits if logits.shape[-2:] == size else F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(outputs: dict[str, torch.Tensor], masks: torch.Tensor,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of ``outputs["out"]`` plus :data:`AUX_WEIGHT` times that of ``outputs["aux"]`` if present,
    each class weighted by ``class_weights`` if given."""
    loss = F.cross_entropy(outputs["out"].float(), masks, class_weights, ignore_index=IGNORE)
    if "aux" in outputs:
        loss = loss + AUX_WEIGHT * F.cross_entropy(outputs["aux"].float(), masks, class_weights, ignore_index=IGNORE)
    return loss


def median_frequency_weights(dataset, num_classes: int) -> torch.Tensor:
    """Median frequency balancing (Eigen and Fergus 2015; SegNet's CamVid weights): a class's frequency is its
    pixels over the pixels of the training images it appears in; its weight is the median frequency over its own,
    so rare classes (poles, signs) count more. Read from the untransformed training masks."""
    pixels = torch.zeros(num_classes, dtype=torch.float64)
    present_in = torch.zeros(num_classes, dtype=torch.float64)  # pixels of the images each class appears in
    for i in range(len(dataset)):
        _, mask = dataset.load(i)
        counts = torch.bincount(mask[mask != IGNORE].flatten(), minlength=num_classes)[:num_classes].double()
        pixels += counts
        present_in += (counts > 0).double() * counts.sum()
    frequency = pixels / present_in.clamp(min=1)
    weights = frequency[frequency > 0].median() / frequency
    return torch.where(frequency > 0, weights, torch.zeros_like(weights)).float()


class Detection(_DenseTask):
    """Object detection and instance segmentation: torchvision's detectors compute their own losses (RPN,
    box head, mask head; focal loss for RetinaNet) in train mode; COCO box AP50 (and mask AP) in eval mode."""

    name = "detection"
    metric = "bbox_map50"

    def augmentation(self, cfg: TrainConfig) -> str:
        sizes = cfg.model.head_options.get("min_size", 800)  # torchvision's default shorter side
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        shown = f"{min(sizes)}-{max(sizes)} px (one drawn per image)" if len(sizes) > 1 else f"{sizes[0]} px"
        text = f"shorter side {shown}{', flips' if cfg.data.flip else ''}"
        if cfg.data.augment is not Augment.LSJ:
            return text
        low, high = cfg.data.scale_range
        return f"large-scale jitter {low:g}-{high:g}x, {cfg.data.input_size}-pixel crops, then {text}"

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        from ..data.detection import CocoDetection, detection_collate, detection_transform

        d, masks = cfg.data, cfg.model.head == "mask_rcnn"
        category = d.classes[0] if len(d.classes) == 1 else None
        jitter = d.input_size if d.augment is Augment.LSJ else 0
        train_tf = detection_transform(True, flip=d.flip, jitter_size=jitter, scale_range=tuple(d.scale_range))
        train_set = CocoDetection(d.dataset, "train", train_tf, masks=masks,
                                  skip_broken=d.skip_broken, category=category)  # fmt: skip
        val_set = CocoDetection(d.dataset, "val", detection_transform(False), masks=masks, skip_broken=d.skip_broken,
                                category=category)  # fmt: skip
        train, val = self.loaders(cfg, train_set, val_set, detection_collate, world)
        return RunData(train, {"val": val}, list(train_set.classes), IMAGENET_MEAN, IMAGENET_STD, device, world)

    def train_loss(self, t: Trainer, images: list[torch.Tensor], targets: list[dict]) -> tuple[torch.Tensor, None]:
        losses = t.net(images, targets)
        return sum(losses.values()), None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> DetectionMeter:
        """COCO AP of ``model`` in float32 whatever ``cfg.precision`` (as torchvision's detection reference
        evaluates): under bf16 autocast torchvision decodes the boxes in bfloat16, whose 8-bit significand rounds a
        corner in a 1024-2048 px photo to a multiple of 8 px."""
        model.eval()
        meter = DetectionMeter(list(data.classes), masks=isinstance(getattr(model, "roi_heads", None), nn.Module)
                               and model.roi_heads.has_mask())  # fmt: skip
        for images, targets in batches:  # float32 even after bf16 training: see the docstring
            meter.update(model(images), targets)
        return meter

