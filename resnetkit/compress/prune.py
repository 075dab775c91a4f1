"""Pruning: structured channel pruning that rebuilds thinner convolutions, and unstructured magnitude pruning.

Structured (dense speed-ups). Only the channels *inside* a residual branch are pruned: the outputs of every
convolution of a unit's branch but the last (``conv1`` of a basic unit; ``conv1`` and ``conv2`` of a bottleneck),
with the norm that reads them (``bn1``/``bn2``, or ``bn2``/``bn3`` in pre-activation units) and the input channels
of the convolution that consumes them. The residual stream (what the shortcuts carry and the additions sum) keeps
its width, so every addition, shortcut, squeeze-excitation and the classifier stay valid untouched; plain networks
(``residual=False``) follow the same rule. Thinner ``nn.Conv2d`` and norm modules holding the kept weights replace
the old ones on the unit instance: the block classes are never edited, and the result is an ordinary dense network.

Channels are ranked per layer by the L1 norm of the producing convolution's filter (Li et al. 2017, "Pruning
Filters for Efficient ConvNets") or by ``|gamma|`` of the BatchNorm that follows (Liu et al. 2017, "Learning
Efficient Convolutional Networks through Network Slimming"; train with an L1 penalty on gamma for best results).

Unstructured (file size, not latency). :func:`magnitude_prune` zeroes the smallest-magnitude weights of every
convolution and linear layer, ranked globally (Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks"), with ``torch.nn.utils.prune``'s masks, which stay in force while fine-tuning; then
:func:`make_permanent` folds them in. The tensors stay dense, so dense kernels run exactly as fast: the gain is a
smaller compressed file (zeros compress) and a model ready for sparse kernels.

All functions edit the model in place (like ``torch.nn.utils.prune``; ``copy.deepcopy`` first to keep the
original) and record their architecture edits in ``model.surgery`` (see :mod:`resnetkit.models.surgery`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune as torch_prune
from torchvision.ops import FrozenBatchNorm2d

from ..models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResidualUnit
from ..options import parse_enum
from .budget import (
    CostChange,
    check_fraction,
    conv_macs,
    conv_sites,
    default_input_size,
    measure,
    plan_for_budget,
)
from ..models.surgery import record_surgery, thin_channels

PRUNABLE_NORMS = (_BatchNorm, FrozenBatchNorm2d)  # per-channel statistics: slicing them is exact
# Per unit class: (producer conv, the norm reading it, the conv consuming it) inside the residual branch.
BRANCH_LINKS: dict[type[ResidualUnit], tuple[tuple[str, str, str], ...]] = {
    BasicBlock: (("conv1", "bn1", "conv2"),),
    Bottleneck: (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")),
    PreActBasicBlock: (("conv1", "bn2", "conv2"),),
    PreActBottleneck: (("conv1", "bn2", "conv2"), ("conv2", "bn3", "conv3")),
}


class Criterion(enum.Enum):
    """How a channel's importance is scored (higher is kept)."""

    L1 = "l1"  # sum of |weights| of the producing filter (Li et al. 2017)
    BN_SCALE = "bn_scale"  # |gamma| of the following BatchNorm (Liu et al. 2017, network slimming)


@dataclass(frozen=True)
class Link:
    """Channels made by ``conv``, normalised by ``norm``, read by ``next``: full module names."""

    conv: str
    norm: str
    next: str


@dataclass(frozen=True)
class PrunedLayer:
    name: str  # the producing convolution
    channels_before: int
    channels_after: int


@dataclass(frozen=True)
class PruneReport(CostChange):
    """What :func:`prune_channels` did: costs before and after (one image), the keep ratio, each layer's width."""

    criterion: Criterion
    keep_ratio: float
    layers: tuple[PrunedLayer, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary with per-layer channel counts."""
        return {"criterion": self.criterion.value, "keep_ratio": self.keep_ratio, **self.cost_dict(),
                "layers": {p.name: [p.channels_before, p.channels_after] for p in self.layers}}  # fmt: skip

    def __str__(self) -> str:
        rows = [f"{'layer':<28}{'channels':>14}"] + [f"{p.name:<28}{p.channels_before:>7} -> {p.channels_after:<4}"
                                                    for p in self.layers]  # fmt: skip
        rows.append(self.cost_line())
        return "\n".join(rows)


def branch_links(model: nn.Module) -> list[Link]:
    """The prunable links of every residual unit, in forward order.

    Links that touch a grouped convolution (ResNeXt's 3x3) are skipped: their channels belong to groups of equal
    size, which per-channel ranking would break (pruning whole groups is not implemented). Links whose modules are
    no longer plain convolutions (already factorised) are skipped too: prune first, then factorise.
    """
    links = []
    for unit_name, unit in model.named_modules():
        if not isinstance(unit, ResidualUnit):
            continue
        for conv, norm, nxt in _unit_links(unit):
            producer, consumer = getattr(unit, conv), getattr(unit, nxt)
            if not all(isinstance(m, nn.Conv2d) and m.groups == 1 for m in (producer, consumer)):
                continue
            if not isinstance(getattr(unit, norm), PRUNABLE_NORMS):
                raise ValueError(f"structured pruning needs BatchNorm, not {type(getattr(unit, norm)).__name__} "
                                 f"({unit_name}.{norm}): its statistics mix channels")  # fmt: skip
            links.append(Link(*(f"{unit_name}.{n}" for n in (conv, norm, nxt))))
    return links


def _unit_links(unit: ResidualUnit) -> tuple[tuple[str, str, str], ...]:
    for cls in type(unit).__mro__:
        if cls in BRANCH_LINKS:
            return BRANCH_LINKS[cls]
    raise ValueError(f"no branch layout known for {type(unit).__name__}; add it to BRANCH_LINKS")


def channel_scores(model: nn.Module, link: Link, criterion: Criterion) -> torch.Tensor:
    """Importance of each channel of ``link`` under ``criterion``, shape (channels,)."""
    if criterion is Criterion.L1:
        return model.get_submodule(link.conv).weight.detach().abs().sum((1, 2, 3))
    gamma = model.get_submodule(link.norm).weight
    if gamma is None:
        raise ValueError(f"criterion bn_scale needs an affine norm; {link.norm} has no weight")
    return gamma.detach().abs()


def prune_channels(
    model: nn.Module,
    macs_fraction: float,
    criterion: Criterion | str = Criterion.L1,
    *,
    input_size: int | None = None,
    channel_multiple: int = 1,
) -> PruneReport:
    """Prune branch channels in place until the model costs at most ``macs_fraction`` of its MACs.

    Every link keeps the same fraction of its channels: one keep ratio, the largest whose MACs fit the budget,
    found by bisection (then a few layers, in forward order, get their next channel count while the budget
    allows, to land just under the target; see :func:`.budget.plan_for_budget`). Why uniform rather than a global
    ranking: L1 norms of different layers are not on one scale (they grow with fan-in), BN scales are comparable
    only after sparsity training, and a global threshold can empty a layer; a uniform ratio never does, spreads the
    speed-up over every stage, and after fine-tuning does about as well as searched layouts (Liu et al. 2019,
    "Rethinking the Value of Network Pruning"). The criterion then picks *which* channels each layer keeps.

    Args:
        model: a resnetkit network (any variant; see :func:`branch_links` for what is skipped).
        macs_fraction: target MACs after / before, in (0, 1]; 1.0 keeps every channel.
        criterion: :class:`Criterion` or its value (``"l1"``, ``"bn_scale"``).
        input_size: image side the MACs are counted at; 32 for CIFAR stems, 224 otherwise by default.
        channel_multiple: round kept widths to a multiple of this (e.g. 8 for tensor cores), at least this many.

    Returns:
        The :class:`PruneReport`; the edit is appended to ``model.surgery``.
    """
    target, criterion = check_fraction(macs_fraction), parse_enum(Criterion, criterion, "criterion")
    if not isinstance(channel_multiple, int) or channel_multiple < 1:
        raise ValueError(f"channel_multiple must be a positive integer, got {channel_multiple!r}")
    _refuse_masks(model)
    size = default_input_size(model, input_size)
    links = branch_links(model)
    if not links:
        raise ValueError("nothing to prune: no residual unit has an ungrouped branch convolution")
    macs, params = measure(model, size)
    cost = _cost_model(model, links, size, macs)
    widths = {link: model.get_submodule(link.conv).out_channels for link in links}

    def plan_at(ratio: float) -> dict[Link, int]:
        return {link: _keep_count(c, ratio, channel_multiple) for link, c in widths.items()}

    ratio, kept = plan_for_budget(plan_at, cost, target * macs, "pruning branch channels")
    for link in links:
        if kept[link] < widths[link]:
            keep = channel_scores(model, link, criterion).topk(kept[link]).indices.sort().values
            thin_link(model, link, keep)
    changed = [{"conv": k.conv, "norm": k.norm, "next": k.next, "channels": n}
               for k, n in kept.items() if n < widths[k]]  # fmt: skip
    if changed:
        record_surgery(model, {"op": "prune", "criterion": criterion.value, "keep_ratio": ratio, "links": changed})
    layers = tuple(PrunedLayer(link.conv, widths[link], kept[link]) for link in links)
    macs_after, params_after = measure(model, size)
    return PruneReport(macs_before=macs, macs_after=macs_after, params_before=params, params_after=params_after,
                       criterion=criterion, keep_ratio=ratio, layers=layers)


def _keep_count(channels: int, ratio: float, multiple: int) -> int:
    """Channels kept at ``ratio``: rounded to ``multiple``, at least ``multiple`` (or 1), at most ``channels``."""
    return min(channels, max(multiple, multiple * round(ratio * channels / multiple)))


def _cost_model(model: nn.Module, links: list[Link], size: int, macs: int):
    """A function pricing a width plan ``{link: channels}`` in MACs, from one measured forward pass."""
    sites = conv_sites(model, size)
    touched = {name for link in links for name in (link.conv, link.next)}
    convs = {name: (model.get_submodule(name), sites[name].out_pixels) for name in touched}
    fixed = macs - sum(conv_macs(conv, px) for conv, px in convs.values())

    def cost(plan: dict[Link, int]) -> int:
        c_out = {link.conv: n for link, n in plan.items()}
        c_in = {link.next: n for link, n in plan.items()}
        return fixed + sum(conv_macs(conv, px, c_in.get(name), c_out.get(name)) for name, (conv, px) in convs.items())

    return cost


@torch.no_grad()
def thin_link(model: nn.Module, link: Link, keep: torch.Tensor) -> None:
    """Keep only channels ``keep`` (sorted indices) of ``link``: rebuild its producer, norm and consumer."""
    thin_channels(model, link.conv, link.norm, link.next, keep)


def _refuse_masks(model: nn.Module) -> None:
    if torch_prune.is_pruned(model):
        raise ValueError("the model has magnitude-pruning masks; call make_permanent(model) before structured pruning")


# -- unstructured magnitude pruning -----------------------------------------------------------------------------

SPARSE_LAYERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Zero weights per layer (convolutions and linear layers) and over all of them; biases are not counted."""

    layers: tuple[LayerSparsity, ...]

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"global": {zeros, total, sparsity}, "layers": {name: {zeros, total, sparsity}}}``."""
        row = lambda r: {"zeros": r.zeros, "total": r.total, "sparsity": r.sparsity}  # noqa: E731
        return {"global": row(self), "layers": {layer.name: row(layer) for layer in self.layers}}

    def table(self) -> str:
        """A plain-text table, one line per layer and a global line."""
        width = max([len("global"), *(len(layer.name) for layer in self.layers)])
        line = lambda name, r: f"{name:<{width}} {r.zeros:>12,} {r.total:>12,} {r.sparsity:>9.2%}"  # noqa: E731
        header = f"{'layer':<{width}} {'zeros':>12} {'total':>12} {'sparsity':>9}"
        return "\n".join([header, *(line(layer.name, layer) for layer in self.layers), line("global", self)])

    __str__ = table


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Count exact zeros in the effective weight (masks applied) of every convolution and linear layer."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, SPARSE_LAYERS):
            weight = _effective_weight(module)
            layers.append(LayerSparsity(name, int((weight == 0).sum()), weight.numel()))
    return SparsityReport(tuple(layers))


def _effective_weight(module: nn.Module) -> torch.Tensor:
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def magnitude_prune(model: nn.Module, sparsity: float) -> SparsityReport:
    """Mask the smallest-magnitude weights of all convolutions and linear layers, ranked globally, in place.

    Uses ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``: each layer's ``weight`` becomes
    ``weight_orig * weight_mask``, so masked weights stay zero while fine-tuning. ``sparsity`` is the target
    fraction of masked weights overall; on a model already masked only the difference is added, so calling it with
    a rising ``sparsity`` gives gradual pruning. Dense latency does not change (see the module docstring); call
    :func:`make_permanent` after fine-tuning. The masks are recorded in ``model.surgery``, so a checkpoint saved
    while they are in force (``weight_orig``/``weight_mask`` keys) reloads with them.

    Args:
        model: any network.
        sparsity: target fraction of zero weights, in [0, 1).

    Returns:
        The :class:`SparsityReport` after masking.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, SPARSE_LAYERS)]
    total = sum(_effective_weight(m).numel() for _, m in modules)
    masked = sum(int((m.weight_mask == 0).sum()) for _, m in modules if hasattr(m, "weight_mask"))
    new = [name for name, m in modules if not hasattr(m, "weight_mask")]
    amount = max(0, round(sparsity * total) - masked)
    torch_prune.global_unstructured([(m, "weight") for _, m in modules], torch_prune.L1Unstructured, amount=amount)
    if new:
        record_surgery(model, {"op": "mask", "layers": new})
    return sparsity_report(model)


def make_permanent(model: nn.Module) -> SparsityReport:
    """Fold every magnitude-pruning mask into its weight (``weight_orig``/``weight_mask`` become ``weight``)."""
    names = [name for name, m in model.named_modules() if hasattr(m, "weight_mask")]
    for name in names:
        torch_prune.remove(model.get_submodule(name), "weight")
    if names:
        record_surgery(model, {"op": "unmask", "layers": names})
    return sparsity_report(model)
