"""Look variants up by name: ``create_model(name, **overrides)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import UnknownNameError
from ..io import natural_key
from .config import ResNetConfig
from .features import FeatureExtractor
from .layers import NormLayer
from . import mobile as mobile_module
from .mobile import MOBILE_VARIANTS, MobileConfig, MobileFeatureExtractor, MobileNetwork, create_mobile
from .resnet import ResNet
from .variants import VARIANTS, VIDEO_VARIANTS, Variant


def list_models(pattern: str = "*", video: bool = False, mobile: bool = False) -> list[str]:
    """Names of the variants matching a shell-style ``pattern`` (``"cifar_*"``, ``"*resnext*"``), in natural
    order (``resnet18`` before ``resnet101``); the image networks, or with ``video`` the video ones (``r3d_18``,
    ``mc3_18``, ``r2plus1d_18``, ...), which read clips ``(B, C, T, H, W)``, or with ``mobile`` the mobile ones
    (``mobilenet_v2``, ``shufflenet_v2_x1_0``, ...; see :mod:`resnetkit.models.mobile`)."""
    table = VIDEO_VARIANTS if video else MOBILE_VARIANTS if mobile else VARIANTS
    return sorted((name for name in table if fnmatch.fnmatchcase(name, pattern)), key=natural_key)


def get_variant(name: str) -> Variant:
    """The table entry for ``name`` (image or video); an unknown name raises ``KeyError`` with the closest matches."""
    if name in MOBILE_VARIANTS:
        return Variant(MOBILE_VARIANTS[name], 32 if MOBILE_VARIANTS[name].stem_stride == 1 else 224)  # type: ignore[arg-type]
    try:
        return VARIANTS[name] if name in VARIANTS else VIDEO_VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, [*VARIANTS, *VIDEO_VARIANTS, *MOBILE_VARIANTS], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetkit models`"
        raise UnknownNameError(f"unknown model {name!r}{hint}") from None


def model_config(name: str, **overrides: Any) -> ResNetConfig | MobileConfig:
    """The config of variant ``name`` with ``overrides`` (config fields or their torchvision/timm aliases)."""
    return get_variant(name).config.replace(**overrides)


# Loads pretrained weights into a model built on the meta device: (model, arch, pretrained) -> model. The weights
# layer, above this one, installs it (see resnetkit.weights.hub); the models layer never imports weights.
PretrainedLoader = Callable[[ResNet, str, Any], ResNet]
_pretrained_loader: PretrainedLoader | None = None


def set_pretrained_loader(loader: PretrainedLoader) -> None:
    """Install the function that ``create_model(..., pretrained=...)`` calls (done by :mod:`resnetkit.weights`)."""
    global _pretrained_loader
    _pretrained_loader = loader


def create_model(
    name: str,
    pretrained: bool | str = False,
    norm_layer: NormLayer | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    frozen_stages: int = -1,
    **overrides: Any,
) -> ResNet | FeatureExtractor | MobileNetwork:
    """Build a named variant, optionally with pretrained weights, as a classifier or as a backbone.

    Args:
        name: a name from :func:`list_models`; ``"resnet50.tv_in1k"`` also names the weights.
        pretrained: ``True`` for the variant's default weights, a tag (``"tv_in1k"``), a registry name or a
            resnetkit weights file (see ``resnetkit.weights``). Any override that keeps the parameters' shapes
            works with weights (``drop_path_rate``, ``output_stride``, ``norm="frozen_batch"``, ...);
            ``num_classes`` gets a new classifier and ``in_chans`` an adapted stem, as in timm.
        norm_layer: a norm callable overriding the config's ``norm`` (e.g. ``torchvision.ops.FrozenBatchNorm2d``).
        features_only: return a :class:`~resnetkit.models.features.FeatureExtractor` (timm's ``features_only``):
            forward gives the list of feature maps; the head and the stages after the last one asked for are gone.
        out_indices: with ``features_only``, the features to return: 0 the stem (after ``act1``, reduction 2, or 1
            for CIFAR stems), ``i`` stage ``i``; all by default, as in timm.
        frozen_stages: with ``features_only``, mmdet's ``frozen_stages``: -1 freezes nothing, 0 the stem, ``k`` the
            stem and stages 1..k (no gradients; norms kept in eval mode under ``train()``).
        **overrides: :class:`ResNetConfig` fields, e.g. ``num_classes=10, in_chans=1, output_stride=16,
            drop_path_rate=0.1, zero_init_last=True, norm="group", shortcut="B", stride_in_1x1=True``.

    Example:
        >>> model = create_model("resnet50", num_classes=10)
        >>> model.feature_info[-1]
        {'num_chs': 2048, 'reduction': 32, 'module': 'layer4'}
        >>> backbone = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4), output_stride=16)
        >>> backbone.feature_info.channels(), backbone.feature_info.reduction()
        ([256, 512, 1024, 2048], [4, 8, 16, 16])
    """
    if not features_only and (out_indices is not None or frozen_stages != -1):
        raise ValueError("out_indices and frozen_stages shape a backbone: pass features_only=True with them")
    if name.partition(".")[0] in MOBILE_VARIANTS:
        return _create_mobile(name, pretrained, norm_layer, features_only, out_indices, frozen_stages, **overrides)
    model = _create_classifier(name, pretrained, norm_layer, **overrides)
    if features_only:
        return FeatureExtractor(model, out_indices, frozen_stages)
    return model


def _create_classifier(name: str, pretrained: bool | str, norm_layer: NormLayer | None, **overrides: Any) -> ResNet:
    name, _, tag = name.partition(".")
    config = model_config(name, **overrides)
    if not (pretrained or tag):
        return ResNet.from_config(config, norm_layer=norm_layer)
    if _pretrained_loader is None:
        raise RuntimeError("no weights loader installed; import resnetkit (or resnetkit.weights) first")
    with torch.device("meta"):  # no time spent initialising what the weights replace
        model = ResNet.from_config(config, norm_layer=norm_layer)
    return _pretrained_loader(model, name, tag or pretrained)


def _create_mobile(name: str, pretrained: bool | str, norm_layer: NormLayer | None, features_only: bool,
                   out_indices: int | Sequence[int] | None, frozen_stages: int,
                   **overrides: Any) -> MobileNetwork | MobileFeatureExtractor:  # fmt: skip
    """A mobile variant, as a classifier or as a backbone; ``pretrained`` (or ``name.tag``) loads torchvision's
    checkpoints, or weights trained here and shipped in the package (``cifar_mobilenet_v2.c10jpeg_cpu30``)."""
    if norm_layer is not None:
        raise ValueError(f"{name} does not take norm_layer (mobile networks use BatchNorm)")
    name, _, tag = name.partition(".")
    tag = tag or pretrained
    if isinstance(tag, str) and f"{name}.{tag}" not in mobile_module.MOBILE_WEIGHTS and _pretrained_loader is not None:
        model = _pretrained_loader(create_mobile(name, **overrides), name, tag)  # weights trained here, shipped
    else:
        model = create_mobile(name, tag, **overrides)  # torchvision's checkpoints
    return MobileFeatureExtractor(model, out_indices, frozen_stages) if features_only else model
