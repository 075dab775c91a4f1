"""A residual network as a list of units, and the network run unit by unit with some of them changed.

Every analysis of this package sees a resnetkit :class:`~resnetkit.models.ResNet` as ``stem -> units -> head``:
the units are the :class:`~resnetkit.models.ResidualUnit` modules of its stages, in forward order, and
:func:`forward_units` runs the network with a function choosing what each unit computes (itself, its shortcut
alone, another unit...). A unit is taken apart as ``finish(branch(preactivate(x)) + shortcut(x))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..models.blocks import ResidualUnit
from ..models.layers import ZeroPadShortcut


@dataclass(frozen=True)
class Unit:
    """One residual unit of a network.

    Attributes:
        index: position in forward order, from 0.
        name: module name (``layer2.0``).
        module: the unit.
        stage: its stage, from 0.
        downsamples: it changes the feature map's shape (stride or width), so its shortcut is not an identity.
    """

    index: int
    name: str
    module: ResidualUnit
    stage: int
    downsamples: bool

    @property
    def residual(self) -> bool:
        return self.module.residual


UnitFn = Callable[[Unit, torch.Tensor], torch.Tensor]


def residual_units(model: nn.Module) -> list[Unit]:
    """The units of a resnetkit ``ResNet``, in forward order.

    Raises:
        TypeError: ``model`` is not a resnetkit ``ResNet`` (it needs ``stage_names`` and stages of units).
    """
    stages = getattr(model, "stage_names", None)
    if not stages:
        raise TypeError(f"{type(model).__name__} is not a resnetkit ResNet: analyses need its stages of residual units")
    units = []
    for s, stage_name in enumerate(stages):
        for i, module in enumerate(getattr(model, stage_name)):
            if not isinstance(module, ResidualUnit):
                raise TypeError(f"{stage_name}.{i} is a {type(module).__name__}, not a residual unit")
            units.append(Unit(len(units), f"{stage_name}.{i}", module, s, _changes_shape(module)))
    return units


def forward_units(model: nn.Module, x: torch.Tensor, fn: UnitFn | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x``, each unit computed by ``fn(unit, input)`` (the unit itself by default)."""
    x = model.forward_stem(x)
    for unit in residual_units(model):
        x = fn(unit, x) if fn is not None else unit.module(x)
    return head(model, x)


def head(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What follows the last unit: the final norm (pre-activation networks), pooling and the classifier."""
    return model.forward_head(model.norm_act(model.norm(x)))


def without_branch(unit: Unit, x: torch.Tensor) -> torch.Tensor:
    """The unit's output with its residual branch deleted (Veit et al. 2016, Sec. 4): what its shortcut carries,
    through the ReLU after the addition of a post-activation unit (which leaves a non-negative input unchanged).

    A plain unit has no shortcut, so the whole unit goes: the input passes through unchanged, subsampled and
    zero-padded (option A) where the unit changes the shape.
    """
    m = unit.module
    shortcut = m.shortcut(x)
    if shortcut is None:
        return _identity_like(m, x)
    return m.finish(shortcut)


def branch_and_shortcut(unit: Unit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(F(x), shortcut(x))`` of a unit, the two terms of its addition (``None`` for a plain unit's shortcut)."""
    m = unit.module
    pre = m.preactivate(x)
    return m.branch(pre), m.shortcut(x, pre)


def _branch_convs(m: ResidualUnit) -> list[nn.Conv2d]:
    return [c for name, c in m.named_modules() if isinstance(c, nn.Conv2d) and not name.startswith("downsample")]


def _changes_shape(m: ResidualUnit) -> bool:
    convs = _branch_convs(m)
    return m.downsample is not None or _stride(m) > 1 or convs[0].in_channels != convs[-1].out_channels


def _stride(m: ResidualUnit) -> int:
    return max(c.stride[0] for c in _branch_convs(m))


def _identity_like(m: ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    """``x`` brought to the unit's output shape without parameters: subsampled, zero channels appended."""
    stride, extra = _stride(m), _branch_convs(m)[-1].out_channels - x.shape[1]
    if extra < 0:
        raise ValueError(f"cannot delete a unit that narrows {x.shape[1]} channels to {x.shape[1] + extra}")
    return ZeroPadShortcut(stride, extra)(x) if stride > 1 or extra else x
