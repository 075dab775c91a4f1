"""Monocular depth as a task of the one training engine: :func:`~resnetkit.tasks.depth.depth_net` on RGB + depth pairs.

::

    model: {name: resnet18, head: depth, head_options: {max_depth: 10.0, loss: silog}}
    data: {dataset: nyu.zip, base_size: 240, input_size: 224}

``model.name`` is the encoder; ``head_options`` holds :func:`depth_net`'s arguments (``min_depth``, ``max_depth``,
``num_scales``, ``decoder_widths``, ``pretrained_backbone``, ``frozen_stages``) and the task's own of
:data:`DEPTH_OPTIONS`: ``loss`` (``silog`` or ``l1_gradient``), ``median_scaling`` (in evaluation),
``depth_scale`` (PNG values per metre) and ``eval_max_depth`` (the evaluation's cap; default the model's
``max_depth``). The data is a :class:`~resnetkit.data.depth.DepthPairs` folder or zip (``train/`` and ``val/``).
Validation reports AbsRel, SqRel, RMSE, RMSE log and delta < 1.25^k (:mod:`resnetkit.train.depth_metrics`);
delta < 1.25 picks ``best.safetensors``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import runtime
from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..data.depth import DepthPairs, depth_collate, depth_transform
from ..errors import UserError
from ..models import ModelRecord, Preprocess
from ..train import distributed as D
from ..train.config import TrainConfig
from ..train.data import RunData, train_loader
from ..train.depth_metrics import DepthMeter
from ..train.task import Task, Trainer, recipe_summary, refuse_classifier_options
from .depth import DepthLoss, DepthNet, depth_net, multi_scale_loss

DEPTH_OPTIONS = {"loss": "silog", "median_scaling": False, "depth_scale": 1000.0, "eval_max_depth": None}
NOT_REBUILT = ("pretrained_backbone",)  # fetches weights: the file has its own
EVAL_MIN_DEPTH = 1e-3  # ground truth at or below this is "no measurement"


def depth_head(backbone_name: str, num_classes: int = 1, *, backbone_options: dict[str, Any] | None = None,
               **options: Any) -> DepthNet:  # fmt: skip
    """:func:`depth_net` as the task heads are built (one output: ``num_classes`` must be 1)."""
    if num_classes != 1:
        raise ValueError(f"a depth network predicts one value per pixel, not {num_classes}")
    return depth_net(backbone_name, **options, **(backbone_options or {}))


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``head_options`` as (the task's options with their defaults filled in, :func:`depth_net`'s arguments)."""
    task = {k: options.get(k, v) for k, v in DEPTH_OPTIONS.items()}
    task["loss"] = DepthLoss(task["loss"]).value
    return task, {k: v for k, v in options.items() if k not in DEPTH_OPTIONS}


def options_of(cfg: TrainConfig) -> dict[str, Any]:
    """The task's options of a config (:data:`DEPTH_OPTIONS`)."""
    return split_options(dict(cfg.model.head_options))[0]


def _augmentation(d) -> str:
    """``depth_transform``'s training augmentation in words."""
    base = f" of shorter side {d.base_size}" if d.base_size else ""
    return f"random {d.input_size}-pixel crops{base}{', flips' if d.flip else ''}"


class DepthTask(Task):
    """Supervised depth: the multi-scale ``loss`` over valid pixels; the standard depth metrics in validation."""

    name = "depth"
    metric = "delta1"  # higher is better, as the engine's best-checkpoint rule needs

    def check(self, cfg: TrainConfig) -> None:
        refuse_classifier_options(cfg, "depth")
        try:
            split_options(dict(cfg.model.head_options))
        except ValueError as err:
            raise UserError(f"model.head_options: {err} (loss is silog or l1_gradient)") from None

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        d, scale = cfg.data, options_of(cfg)["depth_scale"]
        mean, std, base = IMAGENET_MEAN, IMAGENET_STD, d.base_size or None
        train_set = DepthPairs(d.dataset, "train", depth_transform(True, d.input_size, mean, std, base, d.flip),
                               depth_scale=scale, skip_broken=d.skip_broken)  # fmt: skip
        val_set = DepthPairs(d.dataset, "val", depth_transform(False, d.input_size, mean, std, base),
                             depth_scale=scale, skip_broken=d.skip_broken)  # fmt: skip
        train = train_loader(train_set, d, world, cfg.seed, depth_collate)
        val = DataLoader(val_set, batch_size=d.eval_batch_size, num_workers=d.workers, collate_fn=depth_collate,
                         persistent_workers=d.workers > 0)  # fmt: skip
        return RunData(train, {"val": val}, ["depth"], mean, std, device, world)

    def build_model(self, cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, nn.Module]:
        _, options = split_options(dict(cfg.model.head_options))
        return cfg, depth_head(cfg.model.name, backbone_options=dict(cfg.model.options), **options)

    def train_loss(self, t: Trainer, images: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, None]:
        return multi_scale_loss(t.net(images), depths, options_of(t.cfg)["loss"], EVAL_MIN_DEPTH), None

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> DepthMeter:
        model.eval()
        options = options_of(cfg)
        max_depth = options["eval_max_depth"] or getattr(model, "max_depth", None)
        meter = DepthMeter(EVAL_MIN_DEPTH, max_depth, options["median_scaling"])
        for images, depths in batches:
            with runtime.autocast(data.device, cfg.precision):
                pred = model(images)
            loss = multi_scale_loss(pred.float(), depths, options["loss"], EVAL_MIN_DEPTH).item()
            meter.update(pred.float(), depths, loss)
        return meter

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model_config": model.encoder.config.to_dict(), "edits": []}

    def record(self, t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
        """The encoder's config and the task (head, builder arguments, loss and evaluation options),
        preprocessing, the validation metrics of this epoch (in ``extra["val"]``) and the training config."""
        cfg, d = t.cfg, t.cfg.data
        task_options, options = split_options(dict(cfg.model.head_options))
        options = {k: v for k, v in options.items() if k not in NOT_REBUILT}
        options["frozen_stages"] = t.model.encoder.frozen_stages
        task = {"head": cfg.model.head, "num_classes": 1, "options": options, "depth": task_options,
                "base_size": d.base_size}  # fmt: skip
        val = {k.removeprefix("val_"): v for k, v in epoch_record.items() if k.startswith("val_")}
        size = d.base_size or d.input_size
        return ModelRecord(
            cfg.model.name, t.model.encoder.config, Preprocess(size, size, mean=t.data.mean, std=t.data.std),
            ("depth",), (), recipe_summary(cfg, _augmentation(cfg.data)), source=f"resnetkit training run {t.out}",
            extra={"epoch": t.epoch, "step": t.step, "ema": t.ema is not None, "dataset": d.dataset,
                   "split": "val", "val": val},
            train_config=cfg.to_dict(), task=task,
        )  # fmt: skip
