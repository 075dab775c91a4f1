"""The model record: one typed description of what a set of weights is, written into every file resnetkit makes.

A record says which network the tensors belong to (variant name, full :class:`ResNetConfig`, architecture edits
from pruning, depth surgery or low-rank factorisation), how images must be prepared for it, what it predicts
(class names), how well it does and on what (metrics with dataset and split), and where it came from (recipe,
training config, source, checksums). Training runs, conversions and publications all write it (see
:mod:`resnetkit.weights.format`), so one loader rebuilds any of them: :meth:`ModelRecord.build`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..options import parse_enum
from .config import ResNetConfig, Stem
from .mobile import MobileConfig, MobileNetwork, build_mobile
from .resnet import ResNet
from .surgery import apply_surgery

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for the weights, as torchvision's ``ImageClassification`` does: resize the
    shorter side to ``resize_size`` (antialiased), center-crop ``crop_size``, scale to [0, 1], normalise by
    ``mean``/``std`` (per channel, [0, 1] units)."""

    crop_size: int = 224
    resize_size: int = 256
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "interpolation", parse_enum(InterpolationMode, self.interpolation, "interpolation"))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or min(self.std) <= 0 or self.resize_size < self.crop_size:
            raise ValueError(f"bad preprocessing {self}: need len(mean) == len(std), std > 0, resize >= crop")

    @classmethod
    def square(cls, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
        """Resize to ``size`` with no crop: what a model trained on ``size``-pixel images (CIFAR, digits) expects."""
        return cls(crop_size=size, resize_size=size, mean=mean, std=std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` uint8 image -> ``(C, crop, crop)`` normalised float32."""
        x = TF.resize(image, [self.resize_size], self.interpolation, antialias=True)
        x = TF.center_crop(x, [self.crop_size, self.crop_size])
        x = TF.to_dtype(x, torch.float32, scale=True)
        return TF.normalize(x, list(self.mean), list(self.std))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "interpolation": self.interpolation.value,
                "mean": list(self.mean), "std": list(self.std)}  # fmt: skip


@dataclass(frozen=True)
class Metric:
    """A measured result: ``top1``/``top5`` in percent on ``split`` of ``dataset``."""

    dataset: str
    split: str
    top1: float
    top5: float | None = None


@dataclass(frozen=True)
class ModelRecord:
    """Everything needed to rebuild, feed and trust a set of weights.

    Args:
        arch: variant name in :func:`resnetkit.list_models`.
        config: the exact architecture (the variant's config with any overrides): a :class:`ResNetConfig`, or a
            :class:`~resnetkit.models.mobile.MobileConfig` for a mobile network (its dict has a ``unit`` key).
        preprocess: resize, crop, interpolation, mean and std the weights expect.
        classes: class names in output order.
        metrics: measured accuracies with their dataset and split.
        recipe: how the weights were trained, in words (a recipe name, file or URL).
        source: where they came from (URL, converted file, training run).
        source_sha256: SHA-256 of the file they were converted from, if any.
        tensors_sha256: SHA-256 of the tensors (names, dtypes, shapes, bytes), set when the file is written.
        extra: free-form provenance (epoch and step, hardware, wall time, command, ...).
        edits: architecture edits replayed after building ``config`` (see :mod:`resnetkit.models.surgery`).
        train_config: the full training config of the resnetkit run that made them (empty for other weights);
            with it, ``resnetkit eval`` rebuilds the run's own data split.
        task: for a detection or segmentation model, the task model ``config`` is the backbone of:
            ``{"head": "deeplabv3", "num_classes": 12, "options": {...}}`` (the builder's arguments; see
            :func:`resnetkit.tasks.load_task_model`, which rebuilds it); empty for a classifier.

    The first ten fields are those of version 0.1's ``WeightsMeta``, in its order.
    """

    arch: str
    config: ResNetConfig | MobileConfig
    preprocess: Preprocess = field(default_factory=Preprocess)
    classes: tuple[str, ...] = ()
    metrics: tuple[Metric, ...] = ()
    recipe: str = ""
    source: str = ""
    source_sha256: str = ""
    tensors_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    edits: tuple[dict[str, Any], ...] = ()
    train_config: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edits", tuple(self.edits))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "metrics", tuple(self.metrics))

    def build(self) -> ResNet | MobileNetwork:
        """The network of this record with freshly initialised weights: ``config``, then the edits replayed.

        Build it under ``torch.device("meta")`` when the weights will be assigned at once.
        """
        if self.task:
            raise ValueError(f"these weights are a {self.task['head']} model on a {self.arch} backbone, not a "
                             "classifier: load them with resnetkit.tasks.load_task_model")  # fmt: skip
        if isinstance(self.config, MobileConfig):
            return apply_surgery(build_mobile(self.config), [dict(edit) for edit in self.edits])
        return apply_surgery(ResNet.from_config(self.config), [dict(edit) for edit in self.edits])

    def replace(self, **changes: Any) -> ModelRecord:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "config": self.config.to_dict(),
            "edits": [dict(edit) for edit in self.edits],
            "preprocess": self.preprocess.to_dict(),
            "classes": list(self.classes),
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        """Inverse of :meth:`to_dict`; fields missing from older files take their defaults, unknown ones fail."""
        data = dict(data)
        data["config"] = config_from_dict(data["config"])
        data["preprocess"] = Preprocess(**data.get("preprocess", {}))
        data["metrics"] = tuple(Metric(**m) for m in data.get("metrics", ()))
        extra = data.get("extra") or {}
        if "train_config" not in data and "train_config" in extra:  # version 0.1 kept it with the provenance
            data["train_config"] = extra["train_config"]
            data["extra"] = {k: v for k, v in extra.items() if k != "train_config"}
        return cls(**data)


def config_from_dict(data: dict[str, Any]) -> ResNetConfig | MobileConfig:
    """A record's ``config``: a mobile network's (it names its ``unit``) or a ResNet's."""
    return MobileConfig.from_dict(data) if "unit" in data else ResNetConfig.from_dict(data)


def default_preprocess(config: ResNetConfig | MobileConfig) -> Preprocess:
    """What to assume for weights that do not say: 32-pixel images for CIFAR stems, ImageNet's 256/224 otherwise,
    ImageNet statistics (one grey channel: their mean)."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if config.in_chans != 3:
        mean, std = (sum(mean) / 3,) * config.in_chans, (sum(std) / 3,) * config.in_chans
    if config.stem is Stem.CIFAR:
        return Preprocess.square(32, mean, std)
    return Preprocess(mean=mean, std=std)
