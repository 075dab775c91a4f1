"""What a task supplies to the one training engine: its data, its model, its loss and its metric.

:func:`resnetkit.train.fit` runs every task with the same loop, checkpoints, resume, DDP, AMP, EMA, progress bars,
logs, plots and ``summary.json``; a :class:`Task` is only what differs between classification, detection and
segmentation. :class:`Classification` is the default and lives here; detection and segmentation, which need
torchvision's task heads, are in :mod:`resnetkit.tasks.training` (a higher layer), and the CLI picks one from the
recipe with :func:`resnetkit.tasks.task_for`.

A task's ``evaluate`` returns a meter with ``summary()`` (a dict of floats with ``"loss"`` and the task's
``metric``) and ``details()`` (per-class results for ``summary.json``); the validation value of ``metric`` picks
``best.safetensors``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import runtime
from ..errors import UserError
from ..models import Metric, ModelRecord, Preprocess, ResNet, create_model, get_variant
from ..models.surgery import surgery_of
from ..weights import load_model
from . import distributed as D
from .config import ModelSection, TrainConfig
from .data import RunData, build_data
from .losses import LossFn, check_classes, load_teacher, make_loss_fn
from .metrics import ClassificationMeter

Trainer = Any  # the engine's Trainer (cfg, data, model, net, device, ...), not imported: the engine imports this module


class Task:
    """The interface; see :class:`Classification` for what each method does."""

    name = "task"
    metric = "top1"  # the summary key whose validation value picks best.safetensors

    def check(self, cfg: TrainConfig) -> None:
        """Refuse, before any data is read, settings the task cannot use."""

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        raise NotImplementedError

    def build_model(self, cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, nn.Module]:
        raise NotImplementedError

    def setup(self, t: Trainer) -> None:
        """Anything built once the model is on its device (a teacher, a loss function)."""

    def train_loss(self, t: Trainer, inputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's loss through ``t.net`` (in train mode, under autocast), and the number of correctly
        predicted samples when the task counts them (else ``None``)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> Any:
        """A meter over ``batches`` (no augmentation) of ``model`` in eval mode, on ``data.device``."""
        raise NotImplementedError

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        """The architecture, JSON-ready, for the run's ``config.json``."""
        raise NotImplementedError

    def record(self, t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
        raise NotImplementedError


class Classification(Task):
    """Image classification: cross-entropy (or knowledge distillation), top-1/top-5 and a confusion matrix."""

    name = "classification"
    metric = "top1"

    def __init__(self) -> None:
        self.loss_fn: LossFn | None = None
        self.teacher: dict[str, Any] | None = None  # distillation: the teacher's checkpoint, name and val top-1

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        return build_data(cfg, device, world)

    def build_model(self, cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, ResNet]:
        return initial_model(cfg, data, world)

    def setup(self, t: Trainer) -> None:
        teacher = None
        if t.cfg.distill.teacher:
            teacher, self.teacher = load_teacher(t.cfg.distill.teacher, t.data.classes, t.device, memory_format(t.cfg))
            if t.world.is_main:
                self.teacher["val_top1"] = evaluate(
                    teacher, t.data.val_batches(), t.data.num_classes, t.device, t.cfg
                ).top1
                _print_teacher(t.cfg, self.teacher)
        self.loss_fn = make_loss_fn(t.cfg, teacher)

    def train_loss(self, t: Trainer, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = t.net(images)
        loss = self.loss_fn(logits, targets, images)
        hard = targets.argmax(1) if targets.ndim == 2 else targets  # MixUp/CutMix: the dominant class
        return loss, (logits.detach().argmax(1) == hard).sum()

    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> ClassificationMeter:
        return evaluate(model, batches, data.num_classes, data.device, cfg)

    def model_config(self, model: ResNet) -> dict[str, Any]:
        return {"model_config": model.config.to_dict(), "edits": surgery_of(model)}

    def record(self, t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
        """What the run's weights are: architecture and edits, data preprocessing, classes, this epoch's validation
        accuracy on the run's own split, and the training config that rebuilds that split."""
        d = t.cfg.data
        metrics = ()
        if "val_top1" in epoch_record:
            top5 = 100 * epoch_record["val_top5"] if "val_top5" in epoch_record else None
            metrics = (Metric(d.dataset, split_name(t.cfg), 100 * epoch_record["val_top1"], top5),)
        return ModelRecord(
            t.cfg.model.name, t.model.config, Preprocess.square(d.input_size, t.data.mean, t.data.std),
            tuple(t.data.classes), metrics, recipe_summary(t.cfg), source=f"resnetkit training run {t.out}",
            extra={"epoch": t.epoch, "step": t.step, "ema": t.ema is not None}, edits=tuple(surgery_of(t.model)),
            train_config=t.cfg.to_dict(),
        )  # fmt: skip


def refuse_classifier_options(cfg: TrainConfig, task: str, **more: bool) -> None:
    """A one-line error naming the set options that only classification uses (``qat``, ``distill.teacher``,
    ``init_from``, ``data.mix``) and any of ``more`` that are true, before any data is read."""
    used = {"qat": cfg.qat, "distill.teacher": cfg.distill.teacher, "init_from": cfg.init_from,
            "data.mix": cfg.data.mix.value != "none", **more}  # fmt: skip
    refused = [key for key, value in used.items() if value]
    if refused:
        raise UserError(f"{', '.join(refused)}: not available for {task} (model.head={cfg.model.head}) yet")


def _print_teacher(cfg: TrainConfig, info: dict[str, Any]) -> None:
    if cfg.progress:
        d = cfg.distill
        print(f"distilling from {info['checkpoint']} ({info['model_name']}, val top-1 "
              f"{100 * info['val_top1']:.2f}%), T={d.temperature:g}, alpha={d.alpha:g}")  # fmt: skip


def initial_model(cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, ResNet]:
    """A fresh ``cfg.model`` variant, or with ``init_from`` that model file's network and weights.

    The file decides the architecture (variant, options and surgery edits): the returned config's model section is
    the file's, replacing the recipe's (a note is printed when they differ).
    """
    if not cfg.init_from:
        return cfg, create_model(cfg.model.name, num_classes=data.num_classes, in_chans=data.in_chans,
                                 **cfg.model.options)  # fmt: skip
    model = load_model(cfg.init_from)
    check_classes(list(model.record.classes), data.classes, f"init_from {cfg.init_from}")
    section = ModelSection(model.record.arch, options_of(model.record))
    if section != cfg.model and world.is_main:
        print(f"init_from: the architecture is {cfg.init_from}'s ({section.name}, {len(model.record.edits)} "
              f"surgery edits); the config's model section ({cfg.model.name}) is not used")  # fmt: skip
    return dataclasses.replace(cfg, model=section), model


def options_of(record: ModelRecord, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The model options that turn the record's variant into its config (what ``model.options`` would say), less
    the classes, the input channels and ``skip``."""
    ours, default = record.config.to_dict(), get_variant(record.arch).config.to_dict()
    skip = {"num_classes", "in_chans", *skip}
    return {k: v for k, v in ours.items() if v != default.get(k) and k not in skip}


@torch.no_grad()
def evaluate(
    model: nn.Module, batches, num_classes: int, device: torch.device, cfg: TrainConfig
) -> ClassificationMeter:
    """Loss, top-1/top-5 and confusion matrix of ``model`` (a module, put in eval mode, or any function from
    images to logits) over ``batches`` (no augmentation)."""
    if isinstance(model, nn.Module):
        model.eval()
    meter = ClassificationMeter(num_classes)
    for images, labels in batches:
        with runtime.autocast(device, cfg.precision):
            logits = model(images)
        meter.update(logits, labels, F.cross_entropy(logits.float(), labels).item())
    return meter


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.preserve_format


def split_name(cfg: TrainConfig) -> str:
    """The validation split in words: ``val (5000 held out, split_seed 0)``."""
    d = cfg.data
    return f"val ({int(d.val_size) if d.val_size >= 1 else f'{d.val_size:.0%}'} held out, split_seed {d.split_seed})"


def recipe_summary(cfg: TrainConfig, augmentation: str | None = None) -> str:
    """The recipe in one line: optimizer, schedule, batch, length, augmentation, precision. ``augmentation``: the
    task's own in words, where it does not follow ``data.augment`` (segmentation, detection, depth)."""
    o, d = cfg.optim, cfg.data
    length = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs"
    text = (f"SGD lr {o.lr} ({o.schedule.value}), momentum {o.momentum}, wd {o.weight_decay}, batch {d.batch_size}, "
            f"{length}, {augmentation or f'{d.augment.value} augmentation'}")  # fmt: skip
    return text if cfg.precision.value == "fp32" else f"{text}, {cfg.precision.value} autocast"
