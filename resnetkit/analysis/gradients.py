"""Gradient flow: the norm of the loss gradient at every layer, and how shattered the input gradient is.

Deep plain networks train badly even with batch normalisation: their gradients explode or vanish with depth and
become "shattered", close to white noise along the input, while a residual network's stay correlated (Balduzzi,
Frean, Leary, Lewis, Ma and McWilliams 2017, "The Shattered Gradients Problem: If resnets are the answer, then what
is the question?", Sec. 3 and Fig. 1-3). Two measures of that picture:

- per convolution and linear layer, in forward order, ``||dL/dW||``, ``||W||`` and their ratio for the mean
  cross-entropy ``L`` of one batch, with batch normalisation using the batch's statistics as in training;
- the correlation between the input gradients of the true class's logit at neighbouring points of a line between
  two images: near 1 when the gradient varies smoothly, near 0 when it is shattered.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_write

_WHEN_TITLES = {"init": "at initialisation", "trained": "after training"}


@dataclass(frozen=True)
class GradientResult:
    """Per-layer gradient norms of one network on one batch.

    Attributes:
        label: the network's name, for legends.
        when: a free tag grouping results in the figure (``"init"``, ``"trained"``).
        layers: module names of the convolutions and linear layers, in the order the forward pass runs them.
        grad_norm: per layer, ``||dL/dW||`` (Frobenius norm).
        weight_norm: per layer, ``||W||``.
        loss: the mean cross-entropy the gradients are of.
        batch_size: images in the batch.
        line_correlation: mean correlation between the input gradients at neighbouring points of a line between
            two images (Balduzzi et al. 2017); ``None`` when not measured.
    """

    label: str
    when: str
    layers: tuple[str, ...]
    grad_norm: tuple[float, ...]
    weight_norm: tuple[float, ...]
    loss: float
    batch_size: int
    line_correlation: float | None = None

    @property
    def ratio(self) -> tuple[float, ...]:
        """Per layer, ``||dL/dW|| / ||W||``: the relative change one SGD step at unit learning rate makes."""
        return tuple(g / w if w > 0 else math.inf for g, w in zip(self.grad_norm, self.weight_norm))

    @property
    def first_last_ratio(self) -> float:
        """Gradient norm of the first layer over that of the last (the classifier): well below 1 is vanishing,
        well above 1 exploding toward the input (a deep plain network with batch norm at initialisation)."""
        return self.grad_norm[0] / self.grad_norm[-1] if self.grad_norm[-1] > 0 else math.inf

    def as_dict(self) -> dict:
        """Every number of the result, JSON-ready; layers as records ``{name, depth, grad_norm, ...}``."""
        return {
            "label": self.label,
            "when": self.when,
            "loss": self.loss,
            "batch_size": self.batch_size,
            "line_correlation": self.line_correlation,
            "first_last_ratio": _json_float(self.first_last_ratio),
            "layers": [
                {"name": name, "depth": i, "grad_norm": g, "weight_norm": w, "ratio": _json_float(r)}
                for i, (name, g, w, r) in enumerate(zip(self.layers, self.grad_norm, self.weight_norm, self.ratio))
            ],
        }


def gradient_norms(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 128,
    line_points: int = 32,
    when: str = "trained",
    progress: bool = True,
    label: str = "model",
) -> GradientResult:
    """Gradient norms of the mean cross-entropy on one batch w.r.t. every convolution and linear weight.

    Batch normalisation normalises with the batch's statistics, as in training and as Balduzzi et al. measure;
    dropout and stochastic depth stay off, so the result is deterministic. The measurement runs on a copy of
    ``model``: its parameters, buffers, modes and ``.grad`` are untouched.

    Args:
        model: any network of convolutions and linear layers (a resnetkit ``ResNet``, its plain twin, ...).
        images: normalised images ``(N, C, H, W)`` on the model's device; the first ``batch_size`` are used.
        labels: their classes ``(N,)``.
        batch_size: images in the batch.
        line_points: points on the line from the first image to the second at which the input gradient's
            neighbour correlation is measured (the network normalising with the batch's statistics); 0 skips it.
        when: a tag for grouping results (``"init"``, ``"trained"``).
        progress: show a progress bar over the steps.
        label: the network's name in the result.
    """
    x, y = images[:batch_size], labels[:batch_size]
    probe = _probe(model)
    steps = tqdm(total=2 if line_points else 1, desc=f"gradients {label}", disable=not progress)
    with steps:
        layers, logits = _forward_recording(probe, x)
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, [m.weight for m in layers.values()])
        steps.update()
        correlation = None
        if line_points and len(x) > 1:
            correlation = _line_correlation(probe, x, y[0].item(), line_points)
            steps.update()
    return GradientResult(
        label=label,
        when=when,
        layers=tuple(layers),
        grad_norm=tuple(torch.linalg.vector_norm(g).item() for g in grads),
        weight_norm=tuple(torch.linalg.vector_norm(m.weight.detach()).item() for m in layers.values()),
        loss=loss.item(),
        batch_size=len(x),
        line_correlation=correlation,
    )


def plot_gradients(results: Sequence[GradientResult], path: str | Path) -> None:
    """One panel per distinct ``when`` (in order of appearance): gradient norm (log scale) against layer depth,
    one line per label; a legend entry gives the input gradient's neighbour correlation where measured."""
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it

    if not results:
        raise ValueError("plot_gradients needs at least one result")
    whens = list(dict.fromkeys(r.when for r in results))
    fig = Figure(figsize=(6.0 * len(whens), 4.4), layout="constrained")
    axes = fig.subplots(1, len(whens), sharey=True, squeeze=False)[0]
    for ax, when in zip(axes, whens):
        for result in (r for r in results if r.when == when):
            ax.plot(range(len(result.layers)), result.grad_norm, marker=".", ms=3, lw=1.2, label=_legend(result))
        ax.set_yscale("log")
        ax.set_xlabel("layer depth (convolutions and classifier, forward order)")
        ax.set_title(_WHEN_TITLES.get(when, when))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("||dL/dW||  (one batch, batch statistics)")
    fig.suptitle("Gradient norm per layer")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


# -- measurement -------------------------------------------------------------------------------------------------


def _probe(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to measure on: every weight requires a gradient, every other module (dropout,
    stochastic depth) in eval mode, batch norms in train mode with their running statistics set to record those of
    the next batch alone (a cumulative average of one batch), for :func:`_line_correlation`."""
    probe = copy.deepcopy(model)
    probe.eval()
    for m in probe.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.reset_running_stats()
            m.momentum = None
    for p in probe.parameters():
        p.requires_grad_(True)
    return probe


def _forward_recording(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, nn.Module], torch.Tensor]:
    """Logits of ``model`` on ``x`` and its convolution and linear layers by name, in the order they ran."""
    names = {m: name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ran: dict[str, nn.Module] = {}

    def record(module: nn.Module, args, output) -> None:
        ran.setdefault(names[module], module)

    handles = [m.register_forward_hook(record) for m in names]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return ran, logits


def _line_correlation(probe: nn.Module, x: torch.Tensor, cls: int, points: int) -> float:
    """Mean correlation between ``d logit_cls / d input`` at neighbouring points of the line from ``x[0]`` to
    ``x[1]``, the batch norms fixed to the statistics of the batch ``x`` (so the points do not interact): the
    probe's running statistics, which its forward pass on ``x`` set (the variance unbiased, unlike the one the
    batch was normalised with: a relative difference of 1 / (values per channel - 1))."""
    probe.eval()
    t = torch.linspace(0, 1, points, device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
    line = ((1 - t) * x[0] + t * x[1]).requires_grad_(True)
    (grad,) = torch.autograd.grad(probe(line)[:, cls].sum(), line)
    g = grad.flatten(1).double()
    g = g - g.mean(dim=1, keepdim=True)
    corr = F.cosine_similarity(g[:-1], g[1:], dim=1)
    return corr.mean().item()


def _legend(result: GradientResult) -> str:
    if result.line_correlation is None:
        return result.label
    return f"{result.label} (input-gradient neighbour corr. {result.line_correlation:.2f})"


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None
