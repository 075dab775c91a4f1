"""Lesion studies: the network's error with residual units deleted or reordered at test time.

Veit, Wilber and Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow Networks"
(NeurIPS), Sec. 4: deleting a single unit of a ResNet barely changes its error, except at the units that
downsample; the error rises smoothly with the number of units deleted (Fig. 5a) or of pairs of units swapped
(Fig. 5b). A plain network, whose units have no shortcut, fails as soon as any unit goes.

A unit is deleted by :func:`~resnetkit.analysis.units.without_branch`: its shortcut stays, and a plain unit is
replaced by a parameter-free identity.
"""

from __future__ import annotations

import functools
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_write
from .units import Unit, head, residual_units, without_branch

# What one position of the network computes instead of its unit: input -> output.
UnitOp = Callable[[torch.Tensor], torch.Tensor]
# A changed network: position -> what it computes there; the other positions run their own unit.
Plan = dict[int, UnitOp]


@dataclass(frozen=True)
class Trials:
    """The error of the network with ``k`` units changed, one entry per random draw.

    Attributes:
        k: units deleted, or pairs of units swapped.
        errors: validation error (%) of each draw.
        changed: what each draw changed: the deleted units' indices, or the swapped pairs ``(a, b)``.
    """

    k: int
    errors: tuple[float, ...]
    changed: tuple[tuple[Any, ...], ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> float:
        """Sample standard deviation over the draws (0 for a single draw)."""
        return statistics.stdev(self.errors) if len(self.errors) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        changed = [[list(c) if isinstance(c, tuple) else c for c in draw] for draw in self.changed]
        return {"k": self.k, "mean": self.mean, "std": self.std, "errors": list(self.errors), "changed": changed}


@dataclass(frozen=True)
class LesionResult:
    """Errors of one network under the three lesions of Veit et al. 2016.

    Attributes:
        label: the network's name, for legends.
        unit_names: module name of each unit (``layer2.0``), in forward order.
        downsamples: whether each unit changes the feature map's shape (its shortcut is then not an identity).
        num_classes: classifier outputs (chance error is ``100 * (1 - 1 / num_classes)``).
        num_images: images evaluated.
        baseline_error: validation error (%) of the intact network.
        single_errors: error (%) with each unit deleted alone.
        deleted: errors with ``k`` random units deleted, per ``k``.
        swapped: errors with ``k`` random disjoint pairs of same-shape units swapped, per ``k``.
    """

    label: str
    unit_names: tuple[str, ...]
    downsamples: tuple[bool, ...]
    num_classes: int
    num_images: int
    baseline_error: float
    single_errors: tuple[float, ...]
    deleted: tuple[Trials, ...]
    swapped: tuple[Trials, ...]

    @property
    def single_costs(self) -> tuple[float, ...]:
        """Error added by deleting each unit alone, in percentage points."""
        return tuple(e - self.baseline_error for e in self.single_errors)

    @property
    def mean_single_cost(self) -> float | None:
        """Mean cost of deleting one unit that keeps the shape (``None`` if every unit downsamples)."""
        costs = self._shape_keeping_costs()
        return statistics.fmean(costs) if costs else None

    @property
    def max_single_cost(self) -> float | None:
        """Largest cost of deleting one unit that keeps the shape (``None`` if every unit downsamples)."""
        costs = self._shape_keeping_costs()
        return max(costs) if costs else None

    @property
    def downsampling_costs(self) -> dict[str, float]:
        """Cost of deleting each downsampling unit, by unit name."""
        return {n: c for n, c, d in zip(self.unit_names, self.single_costs, self.downsamples) if d}

    @property
    def chance_error(self) -> float:
        return 100.0 * (1.0 - 1.0 / self.num_classes)

    def _shape_keeping_costs(self) -> list[float]:
        return [c for c, d in zip(self.single_costs, self.downsamples) if not d]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit_names": list(self.unit_names),
            "downsamples": list(self.downsamples),
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "chance_error": self.chance_error,
            "baseline_error": self.baseline_error,
            "single_errors": list(self.single_errors),
            "single_costs": list(self.single_costs),
            "mean_single_cost": self.mean_single_cost,
            "max_single_cost": self.max_single_cost,
            "downsampling_costs": self.downsampling_costs,
            "deleted": [t.as_dict() for t in self.deleted],
            "swapped": [t.as_dict() for t in self.swapped],
        }


def lesion(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    ks: Sequence[int] | None = None,
    swap_ks: Sequence[int] | None = None,
    draws: int = 3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
    label: str = "model",
) -> LesionResult:
    """Delete and reorder the units of ``model`` at test time and measure its error (Veit et al. 2016, Sec. 4).

    Every changed network is evaluated in one walk through the units per batch: the intact network runs unit by
    unit, and at unit ``i`` every changed network whose first change is at ``i`` runs only the rest of the
    network from there (``n`` single deletions cost about ``n**2 / 2`` unit evaluations, not ``n**2``). These
    dominate: ResNet-110 on 500 CIFAR images takes about 5 minutes on one CPU thread, ResNet-56 about 2.

    Args:
        model: a resnetkit ``ResNet``; evaluated in eval mode, its mode restored afterwards.
        images: normalised images ``(N, C, H, W)`` on the model's device.
        labels: class indices ``(N,)``.
        ks: numbers of random units to delete together; about 8 values from 1 to ``n // 2`` by default.
        swap_ks: numbers of random pairs to swap; about 8 values from 1 to the number of disjoint pairs of
            same-shape units of a stage by default.
        draws: random draws per ``k``.
        batch_size: images per forward pass.
        seed: seed of the draws.
        progress: show a progress bar.
        label: the network's name in the result.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    units = residual_units(model)
    n = len(units)
    rng = random.Random(seed)
    ks = _checked_ks(ks, n, "units to delete") if ks is not None else grid(n // 2)
    deletions = [(k, [tuple(sorted(rng.sample(range(n), k))) for _ in range(draws)]) for k in ks]
    groups = swappable_groups(units)
    max_pairs = sum(len(g) // 2 for g in groups)
    swap_ks = _checked_ks(swap_ks, max_pairs, "pairs to swap") if swap_ks is not None else grid(max_pairs)
    swaps = [(k, [random_pairs(rng, groups, k) for _ in range(draws)]) for k in swap_ks]

    plans = [_deletion_plan(units, (i,)) for i in range(n)]
    plans += [_deletion_plan(units, d) for _, ds in deletions for d in ds]
    plans += [_swap_plan(units, pairs) for _, ps in swaps for pairs in ps]
    training = model.training
    model.eval()
    try:
        baseline, errors = _errors(model, units, plans, images, labels, batch_size, progress)
    finally:
        model.train(training)

    singles, errors = errors[:n], iter(errors[n:])
    return LesionResult(
        label=label,
        unit_names=tuple(u.name for u in units),
        downsamples=tuple(u.downsamples for u in units),
        num_classes=int(model.num_classes),
        num_images=len(labels),
        baseline_error=baseline,
        single_errors=tuple(singles),
        deleted=tuple(Trials(k, tuple(next(errors) for _ in ds), tuple(ds)) for k, ds in deletions),
        swapped=tuple(Trials(k, tuple(next(errors) for _ in ps), tuple(ps)) for k, ps in swaps),
    )


def grid(hi: int, count: int = 8) -> list[int]:
    """About ``count`` integers evenly spaced from 1 to ``hi``, both included (empty when ``hi < 1``)."""
    if hi < 1:
        return []
    return sorted({round(1 + (hi - 1) * t / (count - 1)) for t in range(count)})


def swappable_groups(units: Sequence[Unit]) -> list[list[int]]:
    """Indices of the units that may trade places, per stage: those keeping the feature map's shape."""
    stages: dict[int, list[int]] = {}
    for u in units:
        if not u.downsamples:
            stages.setdefault(u.stage, []).append(u.index)
    return [g for g in stages.values() if len(g) > 1]


def random_pairs(rng: random.Random, groups: Sequence[Sequence[int]], k: int) -> tuple[tuple[int, int], ...]:
    """``k`` disjoint pairs of units of one group each: ``k`` pairs drawn from a random matching of every group."""
    matching = []
    for group in groups:
        shuffled = rng.sample(list(group), len(group))
        matching += [tuple(sorted(p)) for p in zip(shuffled[0::2], shuffled[1::2])]
    return tuple(sorted(rng.sample(matching, k)))


def _checked_ks(ks: Sequence[int], hi: int, what: str) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if ks and (ks[0] < 1 or ks[-1] > hi):
        raise ValueError(f"{what} must lie in 1..{hi} for this network, got {ks}")
    return ks


def _deletion_plan(units: Sequence[Unit], deleted: Sequence[int]) -> Plan:
    return {i: functools.partial(without_branch, units[i]) for i in deleted}


def _swap_plan(units: Sequence[Unit], pairs: Sequence[tuple[int, int]]) -> Plan:
    plan: Plan = {}
    for a, b in pairs:
        plan[a], plan[b] = units[b].module, units[a].module
    return plan


@torch.inference_mode()
def _errors(
    model: nn.Module,
    units: Sequence[Unit],
    plans: Sequence[Plan],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    progress: bool,
) -> tuple[float, list[float]]:
    """Error (%) of the intact network and of each changed one, with the prefix before each change shared."""
    starts: dict[int, list[int]] = {}
    for j, plan in enumerate(plans):
        starts.setdefault(min(plan), []).append(j)
    wrong, baseline_wrong = [0] * len(plans), 0
    batches = range(0, len(labels), batch_size)
    with tqdm(total=len(batches) * len(units), desc="lesion", unit="unit", disable=not progress) as bar:
        for lo in batches:
            x, y = model.forward_stem(images[lo : lo + batch_size]), labels[lo : lo + batch_size]
            for unit in units:
                for j in starts.get(unit.index, ()):
                    wrong[j] += _count_wrong(_run_from(model, units, x, plans[j]), y)
                x = unit.module(x)
                bar.update()
            baseline_wrong += _count_wrong(head(model, x), y)
    percent = 100.0 / len(labels)
    return baseline_wrong * percent, [w * percent for w in wrong]


def _run_from(model: nn.Module, units: Sequence[Unit], x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Logits of the changed network, from the input ``x`` of its first changed unit."""
    for unit in units[min(plan) :]:
        op = plan.get(unit.index, unit.module)
        x = op(x)
    return head(model, x)


def _count_wrong(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(dim=1) != labels).sum())


# -- plot ------------------------------------------------------------------------------------------------------------


def plot_lesion(results: Sequence[LesionResult], path: str | Path) -> None:
    """Draw the three lesions of one or more networks (one colour each) into a PNG, as Veit et al.'s Fig. 3 and 5.

    Panels: error with each unit deleted alone (downsampling units marked, the intact network's error dashed);
    error against the number of random units deleted and against the number of pairs swapped (mean over draws,
    one standard deviation shaded). Chance level is dotted.
    """
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(16, 4.8))
    single, deleted, swapped = fig.subplots(1, 3)
    for i, r in enumerate(results):
        color = f"C{i}"
        _plot_single(single, r, color)
        _plot_trials(deleted, r, r.deleted, color)
        _plot_trials(swapped, r, r.swapped, color)
    for chance in sorted({r.chance_error for r in results}):
        for ax in (single, deleted, swapped):
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
    single.plot([], [], color="grey", linestyle=":", label="chance")
    single.plot([], [], color="grey", linestyle="--", label="intact network")
    single.plot([], [], "s", color="grey", mfc="none", label="downsampling unit")
    single.set(title="(a) one unit deleted", xlabel="deleted unit (index)", ylabel="error (%)")
    deleted.set(title="(b) k random units deleted", xlabel="units deleted (k)", ylabel="error (%)")
    swapped.set(title="(c) k random pairs of units swapped", xlabel="pairs swapped (k)", ylabel="error (%)")
    for ax in (single, deleted, swapped):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Lesion study at test time (Veit et al. 2016)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _plot_single(ax, r: LesionResult, color: str) -> None:
    index = range(len(r.single_errors))
    ax.plot(index, r.single_errors, "-o", color=color, markersize=3, label=r.label)
    marked = [(i, e) for i, e, d in zip(index, r.single_errors, r.downsamples) if d]
    if marked:
        ax.plot(*zip(*marked), "s", color=color, mfc="none", markersize=9)
    ax.axhline(r.baseline_error, color=color, linestyle="--", linewidth=1)


def _plot_trials(ax, r: LesionResult, trials: Sequence[Trials], color: str) -> None:
    """Mean error against k from k = 0 (the intact network), one standard deviation shaded."""
    ks = [0] + [t.k for t in trials]
    mean = [r.baseline_error] + [t.mean for t in trials]
    std = [0.0] + [t.std for t in trials]
    ax.plot(ks, mean, "-o", color=color, markersize=3, label=r.label)
    ax.fill_between(ks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2)
