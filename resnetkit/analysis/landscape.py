"""Loss landscapes: the training loss around a solution, along filter-normalised random directions.

Li, Xu, Taylor, Studer and Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS): the loss at
``θ + α·d1`` (a 1-D curve) and ``θ + α·d1 + β·d2`` (a 2-D surface), where each filter of a random Gaussian
direction is rescaled to the norm of the same filter of the weights (Sec. 4), so that the picture does not depend on
the scale of the weights, which BatchNorm leaves free. Their Fig. 5: a 56-layer ResNet lies in a smooth, nearly
convex bowl; its plain twin in a chaotic surface. Sec. 6 measures convexity by ``|λmin/λmax|`` of the Hessian; here
the Hessian of the loss in the plane is taken by finite differences on the grid (:func:`smoothness`), so the
comparison is a number.

Choices:

- As the authors' code does (``ignore='biasbn'``), 1-D parameters (BatchNorm scales and shifts, biases) get a zero
  direction, and buffers (BatchNorm running statistics) never change: the grid is evaluated in eval mode, with the
  trained model's statistics.
- The straight path from the initial weights to the solution (Goodfellow, Vinyals and Saxe 2015, "Qualitatively
  characterizing neural network optimization problems") interpolates every parameter, BatchNorm's included:
  ``(1 - t)·θ_init + t·θ``, for ``t`` from -0.5 to 1.5 (:data:`PATH_RANGE`; 0 and 1 always among the points). The
  trained running statistics belong to ``θ`` alone (and those saved at initialisation are never-computed 0 and 1),
  so at every point of the path they are recomputed on the given images (an average over the batches, BatchNorm
  layers in training mode, nothing else) before the loss is evaluated in eval mode, as is usual when
  interpolating networks with BatchNorm (e.g. Jordan et al. 2023, "REPAIR"). At ``t = 1`` the path therefore
  differs slightly from :attr:`LandscapeResult.center_loss`, which uses the trained statistics.
- Every point is written into the model's parameters in place, from stored copies, and the parameters, buffers,
  training mode and BatchNorm momenta are restored exactly afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_write

PATH_RANGE = (-0.5, 1.5)  # t of the init -> solution path: half the distance beyond either end


@dataclass(frozen=True)
class LandscapeResult:
    """The loss of one network around its weights (see the module docstring).

    Attributes:
        label: the network's name, for titles.
        span: the largest ``|α|`` and ``|β|``.
        alphas: positions along ``d1`` of the 1-D curve.
        losses_1d: mean cross-entropy at ``θ + α·d1``, per alpha.
        accuracies_1d: accuracy (fraction) at each alpha.
        coords: positions along each axis of the 2-D grid (the same for ``α`` and ``β``).
        losses_2d: ``losses_2d[i][j]`` is the loss at ``θ + coords[i]·d1 + coords[j]·d2``.
        accuracies_2d: the accuracies of the same points.
        path_t: positions ``t`` of the path ``(1 - t)·θ_init + t·θ``, or ``None`` without initial weights.
        path_losses: the loss along the path (BatchNorm statistics recomputed at each point), or ``None``.
        path_accuracies: the accuracy along the path, or ``None``.
        smoothness: the measures of :func:`smoothness` on the 2-D grid.
        center_loss: the loss at ``θ`` itself, with the trained BatchNorm statistics.
        center_accuracy: the accuracy at ``θ``.
        num_images: images the loss is averaged over.
        seed: seed of the two directions.
    """

    label: str
    span: float
    alphas: tuple[float, ...]
    losses_1d: tuple[float, ...]
    accuracies_1d: tuple[float, ...]
    coords: tuple[float, ...]
    losses_2d: tuple[tuple[float, ...], ...]
    accuracies_2d: tuple[tuple[float, ...], ...]
    path_t: tuple[float, ...] | None
    path_losses: tuple[float, ...] | None
    path_accuracies: tuple[float, ...] | None
    smoothness: dict[str, float | int]
    center_loss: float
    center_accuracy: float
    num_images: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random Gaussian direction in parameter space, filter-normalised (Li et al. 2018, Sec. 4).

    For every parameter with more than one dimension (convolution and linear weights), each filter (slice along
    dim 0) of the direction is rescaled to the norm of the same filter of the weight; 1-D parameters (norm scales
    and shifts, biases) get zeros. Buffers are not part of the direction.

    Args:
        model: the network; its parameters are only read.
        generator: a CPU generator, so a seed gives the same direction on every device.

    Returns:
        parameter name -> direction, same shape, dtype and device as the parameter.
    """
    direction = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p, memory_format=torch.contiguous_format).detach()
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device)
        w = p.detach().float()
        d *= _filter_norms(w) / (_filter_norms(d) + 1e-10)  # the authors' epsilon
        direction[name] = d.to(p.dtype)
    return direction


def landscape(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 11,
    span: float = 1.0,
    steps_1d: int = 21,
    init_state: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    label: str = "model",
) -> LandscapeResult:
    """The loss of ``model`` on ``images`` along two filter-normalised directions, and from its initial weights.

    Args:
        model: a trained network (any module taking ``images``); restored exactly on return.
        images: normalised images ``(N, C, H, W)`` on the model's device (training images: the landscape is
            that of the training loss).
        labels: class indices ``(N,)``.
        steps: points per axis of the 2-D grid, at least 3 (:func:`smoothness` needs interior points).
        span: the grid and the 1-D curve cover ``[-span, span]`` along each direction.
        steps_1d: points of the 1-D curve and of the init -> solution path.
        init_state: the state dict of the same network at initialisation, for the path; ``None`` skips it.
        seed: seed of the two directions (``d1`` first, then ``d2``, from one generator).
        batch_size: images per forward pass.
        progress: show a progress bar over the points.
        label: the network's name in the result.
    """
    _check_args(images, labels, steps, span, steps_1d, batch_size)
    generator = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, generator)
    d2 = filter_normalized_direction(model, generator)
    alphas, coords = _symmetric(span, steps_1d), _symmetric(span, steps)
    path_t = _path_points(steps_1d) if init_state is not None else []
    bar = tqdm(total=1 + len(alphas) + steps * steps + len(path_t), desc=f"landscape {label}", disable=not progress)
    mover = _Mover(model)
    evaluate = _Evaluator(model, images, labels, batch_size, bar)

    def at(*moves: tuple[float, Mapping[str, torch.Tensor]]) -> tuple[float, float]:
        mover.move(*moves)
        return evaluate()

    try:
        with torch.no_grad():
            model.eval()
            center = evaluate()
            curve = [at((a, d1)) for a in alphas]
            grid = [[at((a, d1), (b, d2)) for b in coords] for a in coords]
            path = _path(mover, evaluate, init_state, path_t) if init_state is not None else None
    finally:
        mover.restore()
        bar.close()
    losses_2d = [[loss for loss, _ in row] for row in grid]
    return LandscapeResult(
        label=label,
        span=float(span),
        alphas=tuple(alphas),
        losses_1d=tuple(loss for loss, _ in curve),
        accuracies_1d=tuple(acc for _, acc in curve),
        coords=tuple(coords),
        losses_2d=tuple(tuple(row) for row in losses_2d),
        accuracies_2d=tuple(tuple(acc for _, acc in row) for row in grid),
        path_t=tuple(path_t) if path is not None else None,
        path_losses=tuple(loss for loss, _ in path) if path is not None else None,
        path_accuracies=tuple(acc for _, acc in path) if path is not None else None,
        smoothness=smoothness(losses_2d, coords[1] - coords[0]),
        center_loss=center[0],
        center_accuracy=center[1],
        num_images=len(images),
        seed=seed,
    )


def smoothness(losses_2d: Any, spacing: float | tuple[float, float]) -> dict[str, float | int]:
    """Convexity and roughness of a loss surface sampled on a regular grid.

    At each interior point the Hessian in the plane, ``[[f_aa, f_ab], [f_ab, f_bb]]``, is taken by central
    differences; ``λmin <= λmax`` are its eigenvalues (points whose 3x3 neighbourhood is not finite are skipped).

    Args:
        losses_2d: ``f[i][j]`` at ``(a_i, b_j)``, at least 3x3.
        spacing: grid step, the same along both axes or ``(step_a, step_b)``.

    Returns:
        ``convex_fraction``: fraction of interior points where both eigenvalues are >= 0 (up to rounding).
        ``mean_eig_ratio``: mean ``|λmin/λmax|`` over interior points with ``λmax > 0`` (Li et al. 2018, Sec. 6,
        with the full Hessian; in the plane a round bowl and a symmetric saddle both give 1, so read it with
        ``convex_fraction``).
        ``negative_curvature_ratio``: mean of ``max(-λmin, 0) / max(|λmin|, |λmax|)``: 0 where the plane is
        convex, 1 at a symmetric saddle or a maximum; Li et al.'s reading of the ratio ("near-zero negative
        eigenvalues relative to the positive eigenvalues" is convex).
        ``local_minima``: interior points strictly below their 8 neighbours (1 for a bowl; more on a chaotic
        surface).
        ``quadratic_misfit``: RMS residual of the least-squares quadratic surface through the grid, over the RMS
        deviation of the loss from its mean (``sqrt(1 - R²)``): 0 for any quadratic, larger the rougher the surface;
        it does not change when the loss is scaled or shifted.
        ``interior_points``: points the curvature measures are averaged over.
    """
    f = np.asarray(losses_2d, dtype=np.float64)
    if f.ndim != 2 or min(f.shape) < 3:
        raise ValueError(f"smoothness needs a grid of at least 3x3 losses, got shape {f.shape}")
    ha, hb = (float(spacing), float(spacing)) if np.isscalar(spacing) else map(float, spacing)  # type: ignore[arg-type]
    lo, hi = _plane_eigenvalues(f, ha, hb)
    scale = float(np.abs(np.concatenate([lo, hi])).max()) if lo.size else 0.0
    tol = 1e-6 * scale  # rounding in the differences of a flat direction
    positive = hi > tol
    largest = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), max(tol, 1e-300))
    return {
        "convex_fraction": _mean(lo >= -tol),
        "mean_eig_ratio": _mean(np.abs(lo[positive]) / hi[positive]),
        "negative_curvature_ratio": _mean(np.maximum(-lo, 0) / largest),
        "local_minima": _local_minima(f),
        "quadratic_misfit": _quadratic_misfit(f, ha, hb),
        "interior_points": int(lo.size),
    }


def plot_landscape(results: Sequence[LandscapeResult], path: str | Path) -> None:
    """One row per result: the 2-D surface (filled contours, the same log-spaced levels in every row), the 1-D
    curve along ``d1``, and the init -> solution path; the smoothness measures in the titles."""
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it

    if not results:
        raise ValueError("plot_landscape needs at least one result")
    levels = _shared_levels(results)
    fig = Figure(figsize=(16, 4.6 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), 3, squeeze=False)
    for row, result in zip(axes, results, strict=True):
        filled = _draw_surface(row[0], result, levels)
        _draw_curve(row[1], result.alphas, result.losses_1d, "1-D: θ + α·d1", "α", result.label)
        if result.path_t is not None and result.path_losses is not None:
            title = "init → solution: (1 − t)·θ_init + t·θ\n(BatchNorm statistics recomputed at each t)"
            _draw_curve(row[2], result.path_t, result.path_losses, title, "t", result.label)
            for t, name in ((0.0, "init"), (1.0, "solution")):
                row[2].axvline(t, color="grey", linestyle=":", linewidth=1)
                row[2].annotate(f" {name}", (t, 0.02), xycoords=("data", "axes fraction"), ha="left", va="bottom")
        else:
            row[2].set_axis_off()
            row[2].text(0.5, 0.5, "no initial weights given", ha="center", va="center", transform=row[2].transAxes)
    _share_limits([row[1] for row in axes])
    _share_limits([row[2] for row in axes if row[2].axison])
    fig.colorbar(filled, ax=list(axes[:, 0]), label="training loss (cross-entropy)", format="%.3g")
    fig.suptitle("Loss landscape along filter-normalised random directions (Li et al. 2018)")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


# -- evaluation ---------------------------------------------------------------------------------------------------


class _Mover:
    """Writes points of parameter space into the model in place, from stored copies of its weights; restores the
    parameters, buffers, training mode and norm momenta exactly."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.training = model.training
        self.params = dict(model.named_parameters())
        self.theta = {name: p.detach().clone() for name, p in self.params.items()}
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.momenta = [(m, m.momentum) for m in _batch_norms(model)]

    def move(self, *steps: tuple[float, Mapping[str, torch.Tensor]]) -> None:
        """Set the parameters to ``θ + Σ coef·direction``."""
        for name, p in self.params.items():
            p.copy_(self.theta[name])
            for coef, direction in steps:
                if coef:
                    p.add_(direction[name], alpha=coef)

    def interpolate(self, init: Mapping[str, torch.Tensor], t: float) -> None:
        """Set the parameters to ``(1 - t)·init + t·θ``."""
        for name, p in self.params.items():
            p.copy_(torch.lerp(init[name], self.theta[name], t))

    def restore(self) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.theta[name])
            for b, saved in self.buffers:
                b.copy_(saved)
        for m, momentum in self.momenta:
            m.momentum = momentum
        self.model.train(self.training)


class _Evaluator:
    """Mean cross-entropy and accuracy of the model on the images, in batches; ticks the progress bar."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, bar: tqdm):
        self.model, self.bar = model, bar
        self.batches = list(zip(images.split(batch_size), labels.split(batch_size), strict=True))
        self.count = len(images)

    def __call__(self) -> tuple[float, float]:
        loss, correct = 0.0, 0
        for x, y in self.batches:
            logits = self.model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
        self.bar.update()
        return loss / self.count, correct / self.count

    def recompute_batch_norm(self) -> None:
        """Running statistics of every BatchNorm recomputed on the images: the average over the batches."""
        norms = [m for m in _batch_norms(self.model) if m.track_running_stats]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
        try:
            for x, _ in self.batches:
                self.model(x)
        finally:
            for m in norms:
                m.eval()


def _path(
    mover: _Mover, evaluate: _Evaluator, init_state: Mapping[str, torch.Tensor], ts: Sequence[float]
) -> list[tuple[float, float]]:
    init = _init_parameters(mover.params, init_state)
    points = []
    for t in ts:
        mover.interpolate(init, t)
        evaluate.recompute_batch_norm()
        points.append(evaluate())
    return points


def _init_parameters(params: Mapping[str, nn.Parameter], init_state: Mapping[str, torch.Tensor]) -> dict:
    missing = [name for name in params if name not in init_state]
    if missing:
        raise ValueError(f"init_state lacks {len(missing)} of the model's parameters, e.g. {missing[:3]}")
    init = {}
    for name, p in params.items():
        value = torch.as_tensor(init_state[name])
        if value.shape != p.shape:
            raise ValueError(f"init_state[{name!r}] has shape {tuple(value.shape)}, the model {tuple(p.shape)}")
        init[name] = value.detach().to(device=p.device, dtype=p.dtype)
    return init


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _filter_norms(w: torch.Tensor) -> torch.Tensor:
    """The norm of each slice along dim 0, shaped to broadcast against ``w``."""
    return w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))


def _symmetric(span: float, steps: int) -> list[float]:
    """``steps`` points from ``-span`` to ``span``, exactly antisymmetric (the middle one is exactly 0)."""
    x = np.linspace(-span, span, steps)
    return [float(v) for v in (x - x[::-1]) / 2]


def _path_points(steps: int) -> list[float]:
    """``steps`` points over :data:`PATH_RANGE`, with 0 and 1 added where the spacing misses them."""
    ts = np.linspace(*PATH_RANGE, steps)
    for end in (0.0, 1.0):
        ts[np.isclose(ts, end, rtol=0, atol=1e-9)] = end  # exactly, whatever rounding linspace did
    return [float(round(t, 12)) for t in np.union1d(ts, [0.0, 1.0])]


def _check_args(
    images: torch.Tensor, labels: torch.Tensor, steps: int, span: float, steps_1d: int, batch_size: int
) -> None:
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or not len(images):
        raise ValueError(
            f"need images (N, C, H, W) and labels (N,), N > 0; got {tuple(images.shape)}, {tuple(labels.shape)}"
        )
    if steps < 3 or steps_1d < 2 or batch_size < 1 or not (span > 0 and math.isfinite(span)):
        raise ValueError(
            f"need steps >= 3, steps_1d >= 2, batch_size >= 1, span > 0; got {steps}, {steps_1d}, {batch_size}, {span}"
        )


# -- smoothness ---------------------------------------------------------------------------------------------------


def _plane_eigenvalues(f: np.ndarray, ha: float, hb: float) -> tuple[np.ndarray, np.ndarray]:
    """``(λmin, λmax)`` of the finite-difference Hessian at every interior point with a finite neighbourhood."""
    c = f[1:-1, 1:-1]
    f_aa = (f[2:, 1:-1] - 2 * c + f[:-2, 1:-1]) / ha**2
    f_bb = (f[1:-1, 2:] - 2 * c + f[1:-1, :-2]) / hb**2
    f_ab = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * ha * hb)
    mean, radius = (f_aa + f_bb) / 2, np.hypot((f_aa - f_bb) / 2, f_ab)
    finite = np.isfinite(mean) & np.isfinite(radius)
    return (mean - radius)[finite], (mean + radius)[finite]


def _local_minima(f: np.ndarray) -> int:
    c = f[1:-1, 1:-1]
    below = np.isfinite(c)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                below &= c < f[1 + di : f.shape[0] - 1 + di, 1 + dj : f.shape[1] - 1 + dj]
    return int(below.sum())


def _quadratic_misfit(f: np.ndarray, ha: float, hb: float) -> float:
    a, b = np.meshgrid(np.arange(f.shape[0]) * ha, np.arange(f.shape[1]) * hb, indexing="ij")
    finite = np.isfinite(f)
    a, b, y = a[finite], b[finite], f[finite]
    if y.size < 6:
        return float("nan")
    basis = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    spread = float(np.sqrt(np.mean((y - y.mean()) ** 2)))
    residual = float(np.sqrt(np.mean((y - basis @ coef) ** 2)))
    return residual / spread if spread > 1e-12 * max(1.0, float(np.abs(y).max())) else 0.0


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if np.size(x) else float("nan")


# -- plot ---------------------------------------------------------------------------------------------------------


def _shared_levels(results: Sequence[LandscapeResult]) -> np.ndarray:
    values = np.concatenate([np.asarray(r.losses_2d, dtype=np.float64).ravel() for r in results])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (1e-2, 10.0)
    lo = max(lo, 1e-4)
    return np.geomspace(lo, max(hi, lo * 1.01), 25)


def _draw_surface(ax: Any, result: LandscapeResult, levels: np.ndarray) -> Any:
    from matplotlib.colors import LogNorm

    z = np.ma.masked_invalid(np.asarray(result.losses_2d, dtype=np.float64).T)  # rows: β, columns: α
    z = np.ma.clip(z, levels[0], levels[-1])
    norm = LogNorm(levels[0], levels[-1])
    filled = ax.contourf(result.coords, result.coords, z, levels=levels, norm=norm, cmap="viridis")
    ax.contour(result.coords, result.coords, z, levels=levels[::3], colors="white", linewidths=0.4, alpha=0.6)
    ax.plot([0], [0], marker="+", color="red", markersize=10, label=f"θ (loss {result.center_loss:.3g})")
    s = result.smoothness
    ax.set_title(
        f"{result.label}: θ + α·d1 + β·d2, {result.num_images} images\n"
        f"convex {s['convex_fraction']:.0%} · |λmin/λmax| {s['mean_eig_ratio']:.2f} · "
        f"neg. curvature {s['negative_curvature_ratio']:.2f}\n"
        f"local minima {s['local_minima']} · quadratic misfit {s['quadratic_misfit']:.2f}",
        fontsize=10,
    )
    ax.set_xlabel("α (direction d1)")
    ax.set_ylabel("β (direction d2)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    return filled


def _draw_curve(ax: Any, x: Sequence[float], losses: Sequence[float], title: str, xlabel: str, label: str) -> None:
    from matplotlib.ticker import LogFormatter

    ax.plot(x, losses, marker=".", label=label)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())  # 0.01, 2, 300 rather than 10^-2, 2x10^0
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("training loss (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", fontsize=8)


def _share_limits(axes: Sequence[Any]) -> None:
    """The same y range in every row of a column, so a ResNet and its plain twin compare."""
    if not axes:
        return
    limits = [ax.get_ylim() for ax in axes]
    lo, hi = min(lim[0] for lim in limits), max(lim[1] for lim in limits)
    for ax in axes:
        ax.set_ylim(lo, hi)


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars to Python numbers, recursively (JSON-ready)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
