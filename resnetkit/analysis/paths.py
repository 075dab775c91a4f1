"""Paths through a residual network: how much gradient flows along paths of each length.

Veit, Wilber and Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow Networks"
(NeurIPS), Sec. 5. Unrolled, a network of ``n`` residual units is a collection of ``2**n`` paths: each unit is
crossed either through its residual branch or through its shortcut, and ``C(n, k)`` paths cross ``k`` branches
(path length ``k``). The gradient of the loss is the sum, over paths, of the gradient along each path. Sampling
paths of length ``k`` (backpropagating through the branches of ``k`` random units and the shortcuts of the
others) measures the gradient one path of that length carries; it falls quickly with ``k``, so the gradient
comes from short paths: in ResNet-110, paths of 5 to 17 of its 54 units (Fig. 6).

A unit computes ``y = finish(F(x) + S(x))``. Backpropagating through its branch alone is the vector-Jacobian
product of ``finish(F(x) + S(x).detach())``, through its shortcut alone that of ``finish(F(x).detach() + S(x))``;
both have ``y``'s value, so the ReLU of a post-activation unit masks both the same way, and the gradients along
all ``2**n`` paths add up to the ordinary gradient exactly.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_write
from .units import Unit, branch_and_shortcut, head, residual_units

EFFECTIVE_SHARE = 0.9  # the "effective paths" hold this share of the total gradient magnitude


@dataclass(frozen=True)
class PathsResult:
    """Gradient magnitude carried by paths of each length through one network.

    Attributes:
        label: the network's name, for legends.
        n: residual units, so ``2**n`` paths of lengths ``0..n``.
        ks: path lengths measured.
        grad_mean: per length, the mean over images of the L2 norm of the gradient one path of that length
            carries to the first unit's input.
        grad_std: per length, the standard deviation of that mean over the sampled batches (each with its own
            random path).
        samples: batches sampled.
        batch_size: images per batch.
    """

    label: str
    n: int
    ks: tuple[int, ...]
    grad_mean: tuple[float, ...]
    grad_std: tuple[float, ...]
    samples: int
    batch_size: int

    @property
    def counts(self) -> tuple[float, ...]:
        """Number of paths of each measured length, ``C(n, k)``."""
        return tuple(float(math.comb(self.n, k)) for k in self.ks)

    @property
    def total(self) -> tuple[float, ...]:
        """Gradient magnitude all paths of each length carry together, ``C(n, k) * grad_mean``."""
        return tuple(c * g for c, g in zip(self.counts, self.grad_mean))

    @property
    def distribution(self) -> tuple[float, ...]:
        """``total`` normalised to sum to 1 over the measured lengths (all zeros if no gradient flows)."""
        whole = sum(self.total)
        return tuple(t / whole if whole else 0.0 for t in self.total)

    @property
    def mode(self) -> int:
        """Path length carrying the most gradient in total."""
        return self.ks[max(range(len(self.ks)), key=lambda i: self.total[i])]

    @property
    def effective_range(self) -> tuple[int, int]:
        """Shortest run of consecutive measured lengths ``(lo, hi)`` carrying ``EFFECTIVE_SHARE`` of the total."""
        return effective_range(self.ks, self.total, EFFECTIVE_SHARE)

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.effective_range
        return {
            "label": self.label,
            "n": self.n,
            "ks": list(self.ks),
            "grad_mean": list(self.grad_mean),
            "grad_std": list(self.grad_std),
            "samples": self.samples,
            "batch_size": self.batch_size,
            "counts": list(self.counts),
            "total": list(self.total),
            "distribution": list(self.distribution),
            "mode": self.mode,
            "effective_share": EFFECTIVE_SHARE,
            "effective_lo": lo,
            "effective_hi": hi,
        }


def paths(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    ks: Sequence[int] | None = None,
    samples: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    label: str = "model",
) -> PathsResult:
    """Measure the gradient magnitude along paths of each length (Veit et al. 2016, Sec. 5, Fig. 6).

    For each of ``samples`` random batches the network runs forward once; then, for each length ``k``, the
    gradient of the loss goes back through the branches of ``k`` random units and the shortcuts of the others,
    and its L2 norm at the first unit's input is averaged over the batch's images. The loss is each image's own
    cross-entropy (summed over the batch), so an image's gradient does not depend on the batch size.

    Args:
        model: a resnetkit ``ResNet`` with shortcuts; evaluated in eval mode, its mode restored afterwards.
        images: normalised images ``(N, C, H, W)`` on the model's device.
        labels: class indices ``(N,)``.
        ks: path lengths to measure, in ``0..n``; all of them by default.
        samples: random batches (each with its own random path of every length).
        batch_size: images per batch (all images if fewer).
        seed: seed of the batches and paths.
        progress: show a progress bar.
        label: the network's name in the result.

    Raises:
        ValueError: the network is plain (its units have no shortcut, so it has a single path).
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    units = residual_units(model)
    _require_shortcuts(units)
    n = len(units)
    ks = sorted({int(k) for k in ks}) if ks is not None else list(range(n + 1))
    if not ks or ks[0] < 0 or ks[-1] > n:
        raise ValueError(f"path lengths must lie in 0..{n} for this network, got {ks}")
    generator, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    norms: dict[int, list[float]] = {k: [] for k in ks}
    training = model.training
    model.eval()
    try:
        for _ in tqdm(range(samples), desc="paths", unit="batch", disable=not progress):
            chosen = torch.randperm(len(labels), generator=generator)[:batch_size].to(labels.device)
            tape = _Tape.record(model, units, images[chosen], labels[chosen])
            for k in ks:
                grad = tape.backward(set(rng.sample(range(n), k)))
                norms[k].append(float(grad.flatten(1).norm(dim=1).mean()))
    finally:
        model.train(training)
    return PathsResult(
        label=label,
        n=n,
        ks=tuple(ks),
        grad_mean=tuple(statistics.fmean(norms[k]) for k in ks),
        grad_std=tuple(statistics.stdev(norms[k]) if samples > 1 else 0.0 for k in ks),
        samples=samples,
        batch_size=min(batch_size, len(labels)),
    )


def path_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, subset: set[int]) -> torch.Tensor:
    """Gradient of the loss at the first unit's input along one path: through the residual branches of the units
    in ``subset`` (indices from 0) and the shortcuts of all the others.

    The loss is the cross-entropy summed over the images. Summed over all ``2**n`` subsets, these gradients are
    the ordinary gradient. Call it with the model in the mode you want (eval for the paper's measurement).

    Raises:
        ValueError: the network is plain, or ``subset`` names a unit it does not have.
    """
    units = residual_units(model)
    _require_shortcuts(units)
    if not set(subset) <= set(range(len(units))):
        raise ValueError(f"subset {sorted(subset)} names units outside 0..{len(units) - 1}")
    return _Tape.record(model, units, images, labels).backward(set(subset))


def effective_range(ks: Sequence[int], total: Sequence[float], share: float = EFFECTIVE_SHARE) -> tuple[int, int]:
    """The shortest run of consecutive entries of ``ks`` whose ``total`` holds ``share`` of the sum (the one with
    the larger mass among equally short ones): ``(first k, last k)``."""
    whole = sum(total)
    if not whole > 0:  # nothing flows: the whole range
        return ks[0], ks[-1]
    best = (math.inf, 0.0, 0, len(ks) - 1)  # (width, -mass, lo, hi)
    for lo in range(len(ks)):
        mass = 0.0
        for hi in range(lo, len(ks)):
            mass += total[hi]
            if mass >= share * whole:
                best = min(best, (ks[hi] - ks[lo], -mass, lo, hi))
                break
    return ks[best[2]], ks[best[3]]


@dataclass
class _Tape:
    """One batch run forward unit by unit, each unit kept as its two single-path outputs for the backward passes.

    Attributes:
        inputs: each unit's input, a leaf requiring grad.
        through_branch: each unit's ``finish(F(x) + S(x).detach())``.
        through_shortcut: each unit's ``finish(F(x).detach() + S(x))``.
        head_grad: gradient of the loss at the last unit's output.
    """

    inputs: list[torch.Tensor]
    through_branch: list[torch.Tensor]
    through_shortcut: list[torch.Tensor]
    head_grad: torch.Tensor

    @classmethod
    @torch.enable_grad()
    def record(cls, model: nn.Module, units: Sequence[Unit], images: torch.Tensor, labels: torch.Tensor) -> _Tape:
        x = model.forward_stem(images).detach()
        inputs, through_branch, through_shortcut = [], [], []
        for unit in units:
            x = x.detach().requires_grad_()
            branch, shortcut = branch_and_shortcut(unit, x)
            inputs.append(x)
            through_branch.append(unit.module.finish(branch + shortcut.detach()))
            through_shortcut.append(unit.module.finish(branch.detach() + shortcut))
            x = through_branch[-1]
        out = x.detach().requires_grad_()
        loss = F.cross_entropy(head(model, out), labels, reduction="sum")
        (head_grad,) = torch.autograd.grad(loss, out)
        return cls(inputs, through_branch, through_shortcut, head_grad)

    def backward(self, subset: set[int]) -> torch.Tensor:
        """Gradient at the first unit's input through the branches of ``subset`` and the other units' shortcuts."""
        grad = self.head_grad
        for i in reversed(range(len(self.inputs))):
            out = self.through_branch[i] if i in subset else self.through_shortcut[i]
            (grad,) = torch.autograd.grad(out, self.inputs[i], grad, retain_graph=True)
        return grad


def _require_shortcuts(units: Sequence[Unit]) -> None:
    if not all(u.residual for u in units):
        raise ValueError("path analysis needs shortcuts: a plain network's units have none, so it has a single path")


# -- plot ------------------------------------------------------------------------------------------------------------


def plot_paths(results: Sequence[PathsResult], path: str | Path) -> None:
    """Draw Veit et al.'s Fig. 6 for one or more networks (one colour each) into a PNG.

    Panels: (a) how many paths have each length (binomial, as a share of all ``2**n``); (b) gradient magnitude
    one path of each length carries (log scale, one standard deviation shaded); (c) total gradient magnitude of
    all paths of each length, as a share of the whole so that networks of different depths compare, with the
    effective range (``EFFECTIVE_SHARE`` of the total) shaded.
    """
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it

    fig = Figure(figsize=(16, 4.8))
    counts, per_path, total = fig.subplots(1, 3)
    for i, r in enumerate(results):
        color = f"C{i}"
        lengths = range(r.n + 1)
        counts.plot(lengths, [math.comb(r.n, k) / 2**r.n for k in lengths], color=color, label=f"{r.label} (n={r.n})")
        per_path.plot(r.ks, r.grad_mean, "-o", color=color, markersize=3, label=r.label)
        lower = [max(m - s, m * 1e-3) for m, s in zip(r.grad_mean, r.grad_std)]  # a log axis cannot show <= 0
        per_path.fill_between(r.ks, lower, [m + s for m, s in zip(r.grad_mean, r.grad_std)], color=color, alpha=0.2)
        lo, hi = r.effective_range
        shaded = f"{r.label}: {EFFECTIVE_SHARE:.0%} in {lo}-{hi} (shaded)"
        total.plot(r.ks, r.distribution, "-o", color=color, markersize=3, label=shaded)
        total.axvspan(lo, hi, color=color, alpha=0.12)
    counts.set(title="(a) distribution of path lengths", xlabel="path length (branches crossed)",
               ylabel="share of all paths")  # fmt: skip
    per_path.set(title="(b) gradient magnitude per path", xlabel="path length", ylabel="gradient norm at input",
                 yscale="log")  # fmt: skip
    total.set(title="(c) total gradient magnitude per path length", xlabel="path length",
              ylabel="share of the total (paths x gradient per path)")  # fmt: skip
    for ax in (counts, per_path, total):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Gradient along paths of each length (Veit et al. 2016, Fig. 6)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
