"""Action recognition as a task of the one training engine: a video ResNet, TSN or a frame LSTM on a clip folder.

A recipe's ``model.head`` picks the model, ``model.name`` the network in it::

    model: {name: r2plus1d_18, head: video, head_options: {frames: 16, sampling: dense, clips: 5, crops: 3}}
    model: {name: resnet18, head: tsn, head_options: {frames: 8, sampling: uniform, consensus: avg}}
    model: {name: resnet18, head: frame_lstm, head_options: {hidden: 256, cell: lstm, frames: 16}}

``video`` trains the 3D / MC / (2+1)D network ``model.name`` itself (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, any
overrides in ``model.options``); ``tsn`` and ``frame_lstm`` wrap a 2D variant (:mod:`resnetkit.tasks.video`). The
clip options of :data:`CLIP_OPTIONS` ride in ``head_options`` beside the builder's arguments: ``frames`` (T),
``sampling`` (``uniform`` or ``dense``), ``frame_stride``, ``clips`` and ``crops`` (views per video in evaluation).
The data is a :class:`~resnetkit.data.video.VideoFolder` (``train/`` and ``val/``); training takes one random clip
per video with ``data.augment`` ``imagenet`` (random resized crop, ``data.flip``) or ``none`` (resize and centre
crop); evaluation averages the softmax scores of every clip and crop of a video (Wang et al. 2016; Feichtenhofer et
al. 2019), and reports top-1/top-5 of those video-level scores, and the loss of their log.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import runtime
from ..data.transforms import Augment
from ..data.video import Sampling, VideoFolder, clip_transform, read_clip_frames
from ..errors import UserError
from ..models import ModelRecord, Preprocess, ResNet, create_model
from ..train import distributed as D
from ..train.config import TrainConfig
from ..train.data import RunData, train_loader
from ..train.metrics import ClassificationMeter
from ..train.task import Task, Trainer, recipe_summary, refuse_classifier_options
from .video import Cell, Consensus, FrameLSTM, TemporalSegmentNetwork

KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)  # torchvision's video models
CLIP_OPTIONS = {"frames": 8, "sampling": "dense", "frame_stride": 1, "clips": 1, "crops": 1}
NOT_REBUILT = ("pretrained", "pretrained_backbone")  # builder arguments that fetch weights: the file has its own


def video_classifier(backbone_name: str, num_classes: int, *, backbone_options: dict[str, Any] | None = None) -> ResNet:
    """The video ResNet ``backbone_name`` (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ...) with ``num_classes``."""
    model = create_model(backbone_name, num_classes=num_classes, **(backbone_options or {}))
    if not model.config.is_video:
        raise UserError(f"model.head=video needs a video variant (r3d_18, mc3_18, r2plus1d_18, ...), got the 2D "
                        f"{backbone_name}: use model.head=tsn or frame_lstm for a 2D network")  # fmt: skip
    return model


def tsn(backbone_name: str, num_classes: int, *, consensus: Consensus | str = Consensus.AVG,
        backbone_options: dict[str, Any] | None = None) -> TemporalSegmentNetwork:  # fmt: skip
    """:class:`~resnetkit.tasks.video.TemporalSegmentNetwork` on the 2D variant ``backbone_name``."""
    return TemporalSegmentNetwork(backbone_name, num_classes, consensus, **(backbone_options or {}))


def frame_lstm(backbone_name: str, num_classes: int, *, hidden: int = 256, cell: Cell | str = Cell.LSTM,
               num_layers: int = 1, dropout: float = 0.0,
               backbone_options: dict[str, Any] | None = None) -> FrameLSTM:  # fmt: skip
    """:class:`~resnetkit.tasks.video.FrameLSTM` on the 2D variant ``backbone_name``."""
    return FrameLSTM(backbone_name, hidden, num_classes, cell, num_layers, dropout, **(backbone_options or {}))


BUILDERS = {"video": video_classifier, "tsn": tsn, "frame_lstm": frame_lstm}  # model.head -> builder


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``head_options`` as (clip options with their defaults filled in, the builder's own arguments)."""
    clip = {k: options.get(k, v) for k, v in CLIP_OPTIONS.items()}
    clip["sampling"] = Sampling(clip["sampling"]).value
    return clip, {k: v for k, v in options.items() if k not in CLIP_OPTIONS}


def network_of(model: nn.Module) -> ResNet:
    """The resnetkit network inside a video model (itself for a 3D network)."""
    return model.backbone if isinstance(model, (TemporalSegmentNetwork, FrameLSTM)) else model


class VideoTask(Task):
    """Clip classification: cross-entropy on one clip per video; top-1/top-5 over all clips and crops of a video."""

    name = "video"
    metric = "top1"

    def check(self, cfg: TrainConfig) -> None:
        # 5D weights have no NHWC layout
        refuse_classifier_options(cfg, "video", channels_last=cfg.channels_last and cfg.model.head == "video")
        try:
            split_options(dict(cfg.model.head_options))
        except ValueError as err:
            raise UserError(f"model.head_options: {err} (sampling is uniform or dense)") from None

    def build_data(self, cfg: TrainConfig, device: torch.device, world: D.World) -> RunData:
        d, (clip, _) = cfg.data, split_options(dict(cfg.model.head_options))
        mean, std = KINETICS_MEAN, KINETICS_STD
        common = {"frames": clip["frames"], "sampling": clip["sampling"], "frame_stride": clip["frame_stride"],
                  "skip_broken": d.skip_broken}  # fmt: skip
        augment = d.augment is Augment.IMAGENET
        train_tf = clip_transform(augment, d.input_size, mean, std, flip=d.flip) if augment else \
            _first_view(clip_transform(False, d.input_size, mean, std))  # fmt: skip
        train_set = VideoFolder(d.dataset, "train", train=True, transform=train_tf, **common,
                                classes=list(d.classes) or None)  # fmt: skip
        val_set = VideoFolder(d.dataset, "val", train=False, clips=clip["clips"], classes=train_set.classes,
                              transform=clip_transform(False, d.input_size, mean, std, crops=clip["crops"]), **common)  # fmt: skip
        train = train_loader(train_set, d, world, cfg.seed)
        val = DataLoader(val_set, batch_size=d.eval_batch_size, num_workers=d.workers, persistent_workers=d.workers > 0)
        return RunData(train, {"val": val}, train_set.classes, mean, std, device, world)

    def build_model(self, cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, nn.Module]:
        _, options = split_options(dict(cfg.model.head_options))
        builder = BUILDERS[cfg.model.head]
        return cfg, builder(cfg.model.name, data.num_classes, backbone_options=dict(cfg.model.options), **options)

    def train_loss(self, t: Trainer, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = t.net(clips)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=t.cfg.optim.label_smoothing)
        return loss, (logits.detach().argmax(1) == labels).sum()

    def evaluate(self, model: nn.Module, batches: Iterable, data: RunData, cfg: TrainConfig) -> ClassificationMeter:
        return evaluate_views(model, batches, data.num_classes, data.device, cfg)

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        return {"model_config": network_of(model).config.to_dict(), "edits": []}

    def record(self, t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
        """The network's config and the task (head, classes, builder arguments, clip options), preprocessing, the
        validation metrics of this epoch (in ``extra["val"]``) and the training config."""
        cfg, d = t.cfg, t.cfg.data
        clip, options = split_options(dict(cfg.model.head_options))
        options = {k: v for k, v in options.items() if k not in NOT_REBUILT}
        task = {"head": cfg.model.head, "num_classes": t.data.num_classes, "options": options, "clip": clip}
        val = {k.removeprefix("val_"): v for k, v in epoch_record.items() if k.startswith("val_")}
        return ModelRecord(
            cfg.model.name, network_of(t.model).config, Preprocess(d.input_size, d.input_size, mean=t.data.mean,
                                                                   std=t.data.std),
            tuple(t.data.classes), (), recipe_summary(cfg), source=f"resnetkit training run {t.out}",
            extra={"epoch": t.epoch, "step": t.step, "ema": t.ema is not None, "dataset": d.dataset,
                   "split": "val", "val": val},
            train_config=cfg.to_dict(), task=task,
        )  # fmt: skip


def _first_view(views):
    """An evaluation transform's first (centre) view, as a training transform without augmentation."""
    return lambda frames: views(frames)[0]


@torch.no_grad()
def video_scores(model: nn.Module, views: torch.Tensor) -> torch.Tensor:
    """Class probabilities of each video in ``views`` ``(B, V, 3, T, H, W)``: the mean softmax of its V views."""
    b, v = views.shape[:2]
    logits = model(views.flatten(0, 1)).float()
    return logits.softmax(1).view(b, v, -1).mean(1)


@torch.no_grad()
def evaluate_views(model: nn.Module, batches: Iterable, num_classes: int, device: torch.device,
                   cfg: TrainConfig) -> ClassificationMeter:  # fmt: skip
    """Top-1/top-5 and confusion matrix of the video-level scores, and the mean negative log of the true class's."""
    model.eval()
    meter = ClassificationMeter(num_classes)
    for views, labels in batches:
        with runtime.autocast(device, cfg.precision):
            scores = video_scores(model, views)
        log_scores = scores.clamp_min(1e-12).log()
        meter.update(log_scores, labels, F.nll_loss(log_scores, labels).item())
    return meter


@torch.no_grad()
def predict_actions(model: nn.Module, source: str | Path, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely actions of one video file or frame folder, ``(class, probability)`` best first: the
    softmax averaged over the clips and crops its record's ``task["clip"]`` options name, as evaluation does.

    ``model`` is a file rebuilt by :func:`~resnetkit.tasks.training.load_task_model` (its ``record`` gives the
    classes, the clip options and the preprocessing)."""
    record = model.record
    clip, pre = record.task["clip"], record.preprocess
    views = clip_transform(False, pre.crop_size, pre.mean, pre.std, crops=clip["crops"])
    clips = read_clip_frames(source, clip["frames"], clip["sampling"], clip["frame_stride"], clip["clips"])
    param = next(model.parameters())
    batch = torch.cat([views(frames) for frames in clips])[None].to(param.device, param.dtype)
    scores = video_scores(model.eval(), batch)[0].float().cpu()
    top = scores.topk(min(k, len(scores)))
    return [(record.classes[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
