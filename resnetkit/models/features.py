"""The backbone interface: a ResNet cut down to the feature maps a detection or segmentation head reads.

``create_model(name, features_only=True, out_indices=(1, 2, 3, 4))`` returns a :class:`FeatureExtractor`, as
timm's ``features_only`` returns its ``FeatureListNet``: forward gives the list of feature maps, and
``feature_info`` (:class:`FeatureInfo`) their channels, reductions and module names. Index 0 is the stem's output
(after ``act1``, before the max-pool), indices 1.. the stages, so the indices, channels and reductions are timm's
for the same architecture. ``frozen_stages`` freezes the stem and the first stages as mmdet's ``ResNet`` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .config import ResNetConfig, Stem
from .resnet import ResNet

STEM = ("conv1", "bn1", "act1")  # index 0 is act1's output; the max-pool belongs to the way into the stages


class FeatureInfo:
    """Channels, reduction and module name of every feature a network offers, and which of them are returned.

    The accessors follow timm's ``FeatureInfo``: with no ``idx`` they list the returned features (``out_indices``);
    an int or a list of ints names features by their index among all of them.

    Example:
        >>> info = FeatureInfo([dict(num_chs=16, reduction=1, module="act1"),
        ...                     dict(num_chs=32, reduction=2, module="layer1")], out_indices=(1,))
        >>> info.channels(), info.reduction(), info.module_name(), info.channels(0)
        ([32], [2], ['layer1'], 16)
    """

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]):
        self.info = [dict(d, index=i) for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        """The entries of the returned features."""
        return [self.info[i] for i in self.out_indices]

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, reduction={self.reduction()})"


class FeatureExtractor(nn.Module):
    """The stem and stages of a :class:`ResNet` up to the last feature asked for; forward returns those features.

    It takes the network's own modules (shared, not copied) under their own names (``conv1``, ``bn1``, ``layer1``,
    ...), so its state dict is the network's without the head and the unused stages, and torchvision, timm and
    resnetkit weights load into it. Nothing it holds goes unused in forward, which DistributedDataParallel and
    detection heads need.

    Args:
        model: the network, with its weights already loaded.
        out_indices: features to return: 0 the stem (after ``act1``), ``i`` stage ``i``; negative indices count
            from the end; an int ``n`` means the last ``n``. All of them by default, as in timm.
        frozen_stages: mmdet's ``frozen_stages``: -1 freezes nothing, 0 the stem, ``k`` the stem and stages 1..k.
            Frozen modules have ``requires_grad=False`` and stay in eval mode (their norms keep their running
            statistics, dropout and stochastic depth are off) even under ``model.train()``.

    Attributes:
        feature_info: :class:`FeatureInfo` of every feature, the returned ones in ``feature_info.out_indices``.
        config: the :class:`ResNetConfig` of the network.
        out_indices: as given, made absolute.
        frozen_stages: as given. With ``config`` and ``out_indices`` (and the network's ``surgery``, carried over
            with its ``record`` where it has them) they rebuild this module.
    """

    def __init__(self, model: ResNet, out_indices: int | Sequence[int] | None = None, frozen_stages: int = -1):
        super().__init__()
        info = [stem_feature_info(model.config), *model.feature_info]
        self.out_indices = check_out_indices(out_indices, len(info))
        self.frozen_stages = check_frozen_stages(frozen_stages, len(info) - 1)
        self.config: ResNetConfig = model.config
        self.feature_info = FeatureInfo(info, self.out_indices)
        for carried in ("record", "surgery"):  # the weights' preprocessing and provenance; architecture edits
            if hasattr(model, carried):
                setattr(self, carried, getattr(model, carried))
        last = self.out_indices[-1]
        for name in STEM:
            setattr(self, name, getattr(model, name))
        if last > 0:
            self.maxpool = model.maxpool
        self.stage_names: list[str] = model.stage_names[:last]
        for name in self.stage_names:
            setattr(self, name, getattr(model, name))
        self._freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image (B, in_chans, H, W) -> one map (B, channels[i], H/reduction[i], W/reduction[i]) per out index."""
        features = []
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)  # (B, stem_width, H/2, W/2); H, W for the CIFAR stem
        if 0 in self.out_indices:
            features.append(x)
        if not self.stage_names:
            return features
        x = self.maxpool(x)
        for i, name in enumerate(self.stage_names, start=1):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                features.append(x)
        return features

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_stages`` stages (none when ``frozen_stages`` is -1)."""
        if self.frozen_stages < 0:
            return []
        stem = [getattr(self, name) for name in STEM]
        return stem + [getattr(self, name) for name in self.stage_names[: self.frozen_stages]]

    def train(self, mode: bool = True) -> FeatureExtractor:
        """As ``nn.Module.train``, but the frozen modules stay in eval mode (mmdet's ``ResNet.train``)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)


def stem_feature_info(config: ResNetConfig) -> dict[str, Any]:
    """Feature 0, the stem's output after its activation: at reduction 2 after the 7x7/2 (or deep) stem, as timm's
    ``act1``; at 1 after the CIFAR stem. It has ``stem_width`` channels (the raw convolution in pre-activation nets)."""
    return {"num_chs": config.stem_width, "reduction": 1 if config.stem is Stem.CIFAR else 2, "module": "act1"}


def check_out_indices(out_indices: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    """Absolute, increasing indices into the ``n`` features; anything else is a one-line ValueError."""
    valid = f"0 (stem) to {n - 1}, or -{n} to -1"
    if out_indices is None:
        return tuple(range(n))
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 0 < out_indices <= n:
            raise ValueError(
                f"out_indices={out_indices} asks for the last {out_indices} of {n} features; give 1 to {n}"
            )
        return tuple(range(n - out_indices, n))
    indices = tuple(out_indices)
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ValueError(f"out_indices must be a non-empty sequence of ints ({valid}), got {out_indices!r}")
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"out_indices {bad} out of range: this network has {n} features, {valid}")
    absolute = tuple(i % n for i in indices)
    if any(a >= b for a, b in itertools.pairwise(absolute)):
        raise ValueError(
            f"out_indices must be increasing without repeats (features come in network order), got {indices}"
        )
    return absolute


def check_frozen_stages(frozen_stages: int, n_stages: int) -> int:
    if not -1 <= frozen_stages <= n_stages:
        raise ValueError(
            f"frozen_stages must lie in -1 (nothing) .. {n_stages} (stem and every stage), got {frozen_stages}"
        )
    return frozen_stages
