"""MAC accounting shared by channel pruning and low-rank factorisation.

Both reach a target fraction of a model's multiply-accumulates with one knob (a keep ratio, a rank ratio) found by
bisection. Each trial is priced without rebuilding anything: every convolution's input and output sizes are
measured once with forward hooks, and a convolution costs ``out_pixels * C_in / groups * C_out * kh * kw``, the
same count ``FlopCounterMode`` (:func:`resnetkit.models.count_macs`) makes. Everything the knob does not touch
(the classifier, squeeze-excitation, untouched convolutions) keeps its measured cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..models import count_macs, count_params
from ..models.config import Stem

BISECTION_STEPS = 40  # the ratio to 1e-12: far below one channel or one rank of any layer


@dataclass(frozen=True)
class ConvSite:
    """Where a convolution runs: its module name and the pixels (H * W) of its input and output, batch 1."""

    name: str
    in_pixels: int
    out_pixels: int


@dataclass(frozen=True)
class CostChange:
    """Costs of one image before and after an edit; the base of the pruning and factorisation reports."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_fraction(self) -> float:
        return self.macs_after / self.macs_before

    def cost_dict(self) -> dict[str, Any]:
        return {"macs_before": self.macs_before, "macs_after": self.macs_after, "macs_fraction": self.macs_fraction,
                "params_before": self.params_before, "params_after": self.params_after}  # fmt: skip

    def cost_line(self) -> str:
        return (f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_fraction:.1%}), "
                f"params {self.params_before:,} -> {self.params_after:,}")


def check_fraction(value: float, name: str = "macs_fraction") -> float:
    """``value`` as a float in (0, 1], or a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def default_input_size(model: nn.Module, input_size: int | None) -> int:
    """``input_size``, or the layout's usual one: 32 for the CIFAR stem, 224 otherwise."""
    if input_size is not None:
        return input_size
    config = getattr(model, "config", None)
    return 32 if config is not None and config.stem is Stem.CIFAR else 224


def conv_macs(conv: nn.Conv2d, out_pixels: int, c_in: int | None = None, c_out: int | None = None) -> int:
    """MACs of ``conv`` at ``out_pixels``, optionally with other channel counts (a thinner version of it)."""
    c_in = conv.in_channels if c_in is None else c_in
    c_out = conv.out_channels if c_out is None else c_out
    kh, kw = conv.kernel_size
    return out_pixels * c_out * (c_in // conv.groups) * kh * kw


def _in_chans(model: nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels


@torch.no_grad()
def conv_sites(model: nn.Module, input_size: int) -> dict[str, ConvSite]:
    """Every ``nn.Conv2d`` the forward pass runs, by module name, with its input and output sizes."""
    sites: dict[str, ConvSite] = {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            sites[name] = ConvSite(name, args[0].shape[-2] * args[0].shape[-1], out.shape[-2] * out.shape[-1])

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    training = model.training
    try:
        param = next(model.parameters())
        model.eval()(torch.zeros(1, _in_chans(model), input_size, input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return sites


def measure(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(MACs of one image, parameters), leaving the model's train/eval mode as it was."""
    training = model.training
    try:
        return count_macs(model, input_size, _in_chans(model)), count_params(model)
    finally:
        model.train(training)


Plan = dict  # one setting per layer (kept channels, ranks, or None for "left whole"), in forward order


def plan_for_budget(plan_at: Callable[[float], Plan], cost: Callable[[Plan], int], target: float, what: str):
    """The plan of the largest ratio in [0, 1] whose cost is at most ``target`` MACs, then topped up.

    Bisection finds ratios ``lo < hi`` (2^-40 apart) with ``cost(plan_at(lo)) <= target < cost(plan_at(hi))``; at
    ``hi`` every layer of one width steps up at once, which can be several percent of the model. The top-up then
    moves layers one at a time, in forward order, from their ``lo`` to their ``hi`` setting while the budget
    allows, so the result lands just under the target. ``cost`` must never decrease as the ratio grows.

    Returns:
        ``(lo, plan)``.
    """
    if cost(plan_at(1.0)) <= target:
        return 1.0, plan_at(1.0)
    floor = cost(plan_at(0.0))
    if floor > target:
        raise ValueError(f"cannot reach {target:,.0f} MACs by {what}: the most it can remove leaves {floor:,.0f}")
    lo, hi = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(plan_at(mid)) <= target else (lo, mid)
    plan, upper = plan_at(lo), plan_at(hi)
    for key in upper:
        if upper[key] != plan[key] and cost(trial := {**plan, key: upper[key]}) <= target:
            plan = trial
    return lo, plan
