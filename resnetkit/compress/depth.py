"""Depth pruning: remove whole residual units, the ones whose removal changes the network's predictions least.

A unit with an identity shortcut computes ``y = x + F(x)`` (then a ReLU that leaves the non-negative ``x`` of a
post-activation network unchanged), so replacing it by ``nn.Identity`` is the same as setting ``F(x) = 0``. Veit et
al. 2016 ("Residual Networks Behave Like Ensembles of Relatively Shallow Networks") showed that such lesions cost a
trained ResNet little, unit by unit, except for the units that change resolution or width; those have a projection
or padding shortcut here and are never removed, nor are the units of plain networks (no shortcut to fall back on).

Why depth rather than width: at small inputs and batch 1 a network's latency is mostly per-operator overhead, not
arithmetic; thinner convolutions (:func:`.prune.prune_channels`) halve the MACs but barely the time, while half the
units is half the operators.

Units are chosen greedily with a lesion study on real images: each round, every remaining candidate is removed in
turn and scored by the KL divergence of the network's predictions from the unpruned network's; the unit with the
lowest score goes, until the MACs fit the budget. The edit is recorded in ``model.surgery`` (op ``drop_units``), so
checkpoints rebuild the shallower network; fine-tune afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models.blocks import ResidualUnit
from ..models.surgery import record_surgery, set_submodule
from .budget import CostChange, check_fraction, default_input_size, measure


@dataclass(frozen=True)
class DroppedUnit:
    name: str
    kl: float  # KL divergence from the unpruned network's predictions once this unit was removed too


@dataclass(frozen=True)
class DepthReport(CostChange):
    """What :func:`drop_units` did: costs before and after (one image), the units removed in order."""

    units_before: int
    dropped: tuple[DroppedUnit, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the removed units and their lesion scores."""
        return {**self.cost_dict(), "units_before": self.units_before, "units_after": self.units_after,
                "dropped": {d.name: d.kl for d in self.dropped}}

    @property
    def units_after(self) -> int:
        return self.units_before - len(self.dropped)

    def __str__(self) -> str:
        rows = [f"{'dropped unit':<16}{'KL from unpruned':>18}"] + [f"{d.name:<16}{d.kl:>18.4f}" for d in self.dropped]
        rows.append(f"units {self.units_before} -> {self.units_after}, {self.cost_line()}")
        return "\n".join(rows)


def droppable_units(model: nn.Module) -> list[str]:
    """Names of the units with an identity shortcut (shape-preserving, residual), in forward order."""
    return [name for name, m in model.named_modules()
            if isinstance(m, ResidualUnit) and m.residual and m.downsample is None]  # fmt: skip


@torch.no_grad()
def drop_units(
    model: nn.Module,
    macs_fraction: float,
    images: torch.Tensor,
    *,
    input_size: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> DepthReport:
    """Remove residual units in place, least harmful first, until the model costs at most ``macs_fraction``.

    Args:
        model: a resnetkit ``ResNet`` (units of plain networks and units that change shape are kept).
        macs_fraction: target MACs after / before, in (0, 1]; 1.0 removes nothing.
        images: ``(N, C, H, W)`` normalised images the lesions are scored on (a few hundred training images).
        input_size: image side the MACs are counted at; 32 for CIFAR stems, 224 otherwise by default.
        batch_size: images per forward pass while scoring.
        progress: show a progress bar over the scoring rounds.

    Returns:
        The :class:`DepthReport`; the edit is appended to ``model.surgery``.

    Raises:
        ValueError: the budget cannot be reached by removing units, or there is nothing to remove.
    """
    target = check_fraction(macs_fraction)
    size = default_input_size(model, input_size)
    candidates = droppable_units(model)
    if not candidates:
        raise ValueError("nothing to drop: no residual unit has an identity shortcut")
    macs, params = measure(model, size)
    units_before = sum(isinstance(m, ResidualUnit) for m in model.modules())
    _check_reachable(model, candidates, target * macs, size)
    training = model.training
    model.eval()
    try:
        reference = _log_probs(model, images, batch_size)
        dropped, macs_after = [], macs
        with tqdm(desc="dropping units", unit="unit", disable=not progress) as bar:
            while macs_after > target * macs:
                scores = _lesion_scores(model, candidates, images, reference, batch_size)
                name = min(scores, key=scores.get)
                set_submodule(model, name, nn.Identity())
                candidates.remove(name)
                dropped.append(DroppedUnit(name, scores[name]))
                macs_after = measure(model, size)[0]
                bar.update()
                bar.set_postfix(unit=name, macs=f"{macs_after / macs:.1%}")
    finally:
        model.train(training)
    if dropped:
        record_surgery(model, {"op": "drop_units", "units": [d.name for d in dropped]})
    return DepthReport(macs_before=macs, macs_after=macs_after, params_before=params,
                       params_after=measure(model, size)[1], units_before=units_before, dropped=tuple(dropped))


def _check_reachable(model: nn.Module, candidates: list[str], budget: float, size: int) -> None:
    shallowest = copy.deepcopy(model)
    for name in candidates:
        set_submodule(shallowest, name, nn.Identity())
    floor = measure(shallowest, size)[0]
    if floor > budget:
        raise ValueError(f"cannot reach {budget:,.0f} MACs by dropping units: removing all {len(candidates)} "
                         f"with an identity shortcut leaves {floor:,}")  # fmt: skip


def _log_probs(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([F.log_softmax(model(batch.to(device)).float(), dim=1) for batch in images.split(batch_size)])


def _lesion_scores(
    model: nn.Module, candidates: list[str], images: torch.Tensor, reference: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """KL(reference || model without the unit) for each candidate, averaged over the images.

    A lesion changes nothing before its unit, so one forward pass per batch records every candidate's input and
    each lesion runs only the rest of the network from there (half of it on average).
    """
    device = next(model.parameters()).device
    totals = dict.fromkeys(candidates, 0.0)
    for batch, ref in zip(images.split(batch_size), reference.split(batch_size)):
        inputs = _unit_inputs(model, candidates, batch.to(device))
        for name in candidates:
            unit = model.get_submodule(name)
            set_submodule(model, name, nn.Identity())
            try:
                log_probs = F.log_softmax(_forward_from(model, name, inputs[name]).float(), dim=1)
            finally:
                set_submodule(model, name, unit)
            totals[name] += F.kl_div(log_probs, ref.to(device), reduction="sum", log_target=True).item()
    return {name: total / len(images) for name, total in totals.items()}


def _unit_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each unit in ``names`` receives when ``model`` runs on ``x``."""
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        return lambda module, args: inputs.__setitem__(name, args[0])

    handles = [model.get_submodule(name).register_forward_pre_hook(keep(name)) for name in names]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def _forward_from(model: nn.Module, unit_name: str, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` (a :class:`~resnetkit.models.ResNet`) run from unit ``layerN.i`` on its input ``x``."""
    stage, index = unit_name.rsplit(".", 1)
    x = model.get_submodule(stage)[int(index):](x)
    for name in model.stage_names[model.stage_names.index(stage) + 1:]:
        x = getattr(model, name)(x)
    return model.forward_head(model.norm_act(model.norm(x)))
