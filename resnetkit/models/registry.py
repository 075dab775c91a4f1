"""Look variants up by name: ``create_model(name, **overrides)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any

from .config import ResNetConfig
from .layers import NormLayer
from .resnet import ResNet
from .variants import VARIANTS, Variant


def list_models(pattern: str = "*") -> list[str]:
    """Names of the variants matching a shell-style ``pattern`` (``"cifar_*"``, ``"*resnext*"``), in natural
    order (``resnet18`` before ``resnet101``)."""
    return sorted((name for name in VARIANTS if fnmatch.fnmatchcase(name, pattern)), key=natural_key)


def natural_key(name: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def get_variant(name: str) -> Variant:
    """The table entry for ``name``; an unknown name raises ``KeyError`` with the closest matches."""
    try:
        return VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, VARIANTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetkit models`"
        raise KeyError(f"unknown model {name!r}{hint}") from None


def model_config(name: str, **overrides: Any) -> ResNetConfig:
    """The config of variant ``name`` with ``overrides`` (config fields or their torchvision/timm aliases)."""
    return get_variant(name).config.replace(**overrides)


def create_model(
    name: str, pretrained: bool | str = False, norm_layer: NormLayer | None = None, **overrides: Any
) -> ResNet:
    """Build a named variant, optionally with pretrained weights.

    Args:
        name: a name from :func:`list_models`; ``"resnet50.tv_in1k"`` also names the weights.
        pretrained: ``True`` for the variant's default weights, a tag (``"tv_in1k"``), a registry name or a
            resnetkit weights file (see ``resnetkit.weights``).
        norm_layer: a norm callable overriding the config's ``norm`` (e.g. ``torchvision.ops.FrozenBatchNorm2d``).
        **overrides: :class:`ResNetConfig` fields, e.g. ``num_classes=10, in_chans=1, output_stride=16,
            drop_path_rate=0.1, zero_init_last=True, norm="group", shortcut="B", stride_in_1x1=True``.

    Example:
        >>> model = create_model("resnet50", num_classes=10)
        >>> model.feature_info[-1]
        {'num_chs': 2048, 'reduction': 32, 'module': 'layer4'}
    """
    name, _, tag = name.partition(".")
    model = ResNet.from_config(model_config(name, **overrides), norm_layer=norm_layer)
    if pretrained or tag:
        from ..weights.hub import load_pretrained  # weights depend on models, not the other way round

        load_pretrained(model, name, tag or pretrained)
    return model
