"""Per-sample augmentation with ``torchvision.transforms.v2``, and MixUp/CutMix on batches.

Policies:
    CIFAR: He et al. 2015, Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is randomly sampled from
        the padded image or its horizontal flip".
    IMAGENET: scale augmentation as ``RandomResizedCrop`` (Szegedy et al. 2015, the torchvision recipe) and flip;
        evaluation resizes the short side to ``size / crop_fraction`` and takes the centre ``size x size``.
Options: TrivialAugmentWide (Müller & Hutter 2021), RandAugment (Cubuk et al. 2020), RandomErasing (Zhong et al.
2020), MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019).

Choices are enums; strings from a CLI or YAML recipe are parsed once, in :class:`AugmentConfig`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from ..errors import UnknownOptionError
from ..options import parse_enum
from .cifar import CIFAR10_MEAN, CIFAR10_STD

BatchMix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Augment(enum.Enum):
    """Geometric augmentation of the training images."""

    NONE = "none"  # resize to the model input only
    CIFAR = "cifar"  # zero-pad, random crop at the input size, flip
    IMAGENET = "imagenet"  # RandomResizedCrop to the input size, flip
    LSJ = "lsj"  # detection: large-scale jitter, a fixed-size crop at the input size, flip (Ghiasi et al. 2021)


class AutoAugment(enum.Enum):
    """Learned-free photometric and geometric policies, applied after the crop."""

    NONE = "none"
    TRIVIAL = "trivial"  # TrivialAugmentWide
    RAND = "rand"  # RandAugment, 2 ops at magnitude 9


class Mix(enum.Enum):
    """Label-mixing augmentation on whole batches; labels become ``(B, num_classes)`` probabilities."""

    NONE = "none"
    MIXUP = "mixup"
    CUTMIX = "cutmix"
    BOTH = "mixup_cutmix"  # one of the two, chosen at random for each batch


@dataclass(frozen=True)
class AugmentConfig:
    """How training and evaluation images are prepared.

    Args:
        augment: geometric policy for training.
        size: side of the square the model sees.
        padding: zero padding of the CIFAR crop, in pixels at ``size``.
        flip: random horizontal flips (turn off for digits and text).
        scale: area range of ImageNet's RandomResizedCrop.
        crop_fraction: evaluation centre-crop fraction for ``Augment.IMAGENET`` (0.875: 256 -> 224).
        auto_augment: extra policy after the crop.
        erase_prob: probability of RandomErasing, after normalisation.
        mix: batch label mixing.
        mixup_alpha: Beta parameter of MixUp.
        cutmix_alpha: Beta parameter of CutMix.
        mean: per-channel mean in ``[0, 1]`` units, for normalisation.
        std: per-channel standard deviation.
    """

    augment: Augment = Augment.CIFAR
    size: int = 32
    padding: int = 4
    flip: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    crop_fraction: float = 0.875
    auto_augment: AutoAugment = AutoAugment.NONE
    erase_prob: float = 0.0
    mix: Mix = Mix.NONE
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS.items():
            object.__setattr__(self, name, parse_enum(kind, getattr(self, name), name))
        for name in ("scale", "mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} and std {self.std} need one positive std per channel")
        if not 0.0 <= self.erase_prob <= 1.0 or self.size < 1 or self.padding < 0:
            raise ValueError("erase_prob must lie in [0, 1], size be >= 1 and padding >= 0")
        if not min(self.mixup_alpha, self.cutmix_alpha) > 0:  # Beta parameters: torch refuses them only in batch_mix
            raise ValueError(f"mixup_alpha={self.mixup_alpha} and cutmix_alpha={self.cutmix_alpha} must be > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Build from plain values (a YAML recipe); unknown keys are an error."""
        names = sorted(f.name for f in dataclasses.fields(cls))
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UnknownOptionError(f"unknown augmentation options {unknown}; valid: {', '.join(names)}")
        return cls(**data)


_ENUM_FIELDS = {"augment": Augment, "auto_augment": AutoAugment, "mix": Mix}


def train_transform(cfg: AugmentConfig) -> v2.Compose:
    """The per-sample training pipeline: PIL image or uint8 ``(C, H, W)`` in, normalised float ``(C, size, size)`` out."""
    steps: list[v2.Transform] = [v2.ToImage()]
    if cfg.augment is Augment.IMAGENET:
        steps.append(v2.RandomResizedCrop(cfg.size, scale=cfg.scale, antialias=True))
    else:
        steps.append(v2.Resize((cfg.size, cfg.size), antialias=True))  # a no-op at the native size
    if cfg.augment is Augment.CIFAR and cfg.padding:
        steps.append(v2.RandomCrop(cfg.size, padding=cfg.padding, fill=0))
    if cfg.flip and cfg.augment is not Augment.NONE:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.auto_augment is AutoAugment.TRIVIAL:
        steps.append(v2.TrivialAugmentWide())
    elif cfg.auto_augment is AutoAugment.RAND:
        steps.append(v2.RandAugment(num_ops=2, magnitude=9))
    steps += _to_normalized(cfg)
    if cfg.erase_prob:
        steps.append(v2.RandomErasing(p=cfg.erase_prob, value=0))
    return v2.Compose(steps)


def eval_transform(cfg: AugmentConfig) -> v2.Compose:
    """The per-sample evaluation pipeline: resize (and centre-crop for ``Augment.IMAGENET``), normalise."""
    steps: list[v2.Transform] = [v2.ToImage()]
    if cfg.augment is Augment.IMAGENET:
        steps += [v2.Resize(round(cfg.size / cfg.crop_fraction), antialias=True), v2.CenterCrop(cfg.size)]
    else:
        steps.append(v2.Resize((cfg.size, cfg.size), antialias=True))
    return v2.Compose(steps + _to_normalized(cfg))


def _to_normalized(cfg: AugmentConfig) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]


def batch_mix(cfg: AugmentConfig, num_classes: int) -> BatchMix | None:
    """MixUp and/or CutMix for ``(images, labels)`` batches (float images, int64 labels), or ``None``.

    The returned labels are ``(B, num_classes)`` probabilities, for a cross-entropy with soft targets.
    """
    mixes = {
        Mix.MIXUP: [v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes)],
        Mix.CUTMIX: [v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes)],
        Mix.NONE: [],
    }
    mixes[Mix.BOTH] = mixes[Mix.MIXUP] + mixes[Mix.CUTMIX]
    chosen = mixes[cfg.mix]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)
