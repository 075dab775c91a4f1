"""Look variants up by name: ``create_model(name, **overrides)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable

import torch

from ..errors import UnknownNameError
from ..io import natural_key
from .config import ResNetConfig
from .layers import NormLayer
from .resnet import ResNet
from .variants import VARIANTS, Variant


def list_models(pattern: str = "*") -> list[str]:
    """Names of the variants matching a shell-style ``pattern`` (``"cifar_*"``, ``"*resnext*"``), in natural
    order (``resnet18`` before ``resnet101``)."""
    return sorted((name for name in VARIANTS if fnmatch.fnmatchcase(name, pattern)), key=natural_key)


def get_variant(name: str) -> Variant:
    """The table entry for ``name``; an unknown name raises ``KeyError`` with the closest matches."""
    try:
        return VARIANTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, VARIANTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetkit models`"
        raise UnknownNameError(f"unknown model {name!r}{hint}") from None


def model_config(name: str, **overrides: Any) -> ResNetConfig:
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
    name: str, pretrained: bool | str = False, norm_layer: NormLayer | None = None, **overrides: Any
) -> ResNet:
    """Build a named variant, optionally with pretrained weights.

    Args:
        name: a name from :func:`list_models`; ``"resnet50.tv_in1k"`` also names the weights.
        pretrained: ``True`` for the variant's default weights, a tag (``"tv_in1k"``), a registry name or a
            resnetkit weights file (see ``resnetkit.weights``). Any override that keeps the parameters' shapes
            works with weights (``drop_path_rate``, ``output_stride``, ``norm="frozen_batch"``, ...);
            ``num_classes`` gets a new classifier and ``in_chans`` an adapted stem, as in timm.
        norm_layer: a norm callable overriding the config's ``norm`` (e.g. ``torchvision.ops.FrozenBatchNorm2d``).
        **overrides: :class:`ResNetConfig` fields, e.g. ``num_classes=10, in_chans=1, output_stride=16,
            drop_path_rate=0.1, zero_init_last=True, norm="group", shortcut="B", stride_in_1x1=True``.

    Example:
        >>> model = create_model("resnet50", num_classes=10)
        >>> model.feature_info[-1]
        {'num_chs': 2048, 'reduction': 32, 'module': 'layer4'}
    """
    name, _, tag = name.partition(".")
    config = model_config(name, **overrides)
    if not (pretrained or tag):
        return ResNet.from_config(config, norm_layer=norm_layer)
    if _pretrained_loader is None:
        raise RuntimeError("no weights loader installed; import resnetkit (or resnetkit.weights) first")
    with torch.device("meta"):  # no time spent initialising what the weights replace
        model = ResNet.from_config(config, norm_layer=norm_layer)
    return _pretrained_loader(model, name, tag or pretrained)
