"""Feature reuse: how much each residual unit changes what reaches it, and how alike the units' outputs are.

Two measures, run unit by unit over the same images:

- the ratio ``||F(x)|| / ||shortcut(x)||`` of a unit's residual branch to what its shortcut adds it to (the unit's
  input ``x`` in a plain unit, which has no shortcut). A small ratio means the unit refines the features its
  shortcut carries rather than replacing them (Greff, Srivastava and Schmidhuber 2017, "Highway and Residual
  Networks learn Unrolled Iterative Estimation"; Jastrzebski et al. 2018, "Residual Connections Encourage
  Iterative Inference");
- linear centred kernel alignment (CKA) between the outputs of every pair of units (Kornblith, Norouzi, Lee and
  Hinton 2019, "Similarity of Neural Network Representations Revisited", Sec. 3 and eq. 5): 1 for the same
  representation up to rotation and scale, near 0 for unrelated ones. Long bright blocks along the diagonal are
  units that keep passing the same representation on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..io import atomic_write
from .units import Unit, branch_and_shortcut, residual_units

# Feature columns centred and multiplied at once when building a Gram matrix: bounds the float64 copy to
# N x _GRAM_COLUMNS (40 MB for 500 images).
_GRAM_COLUMNS = 10_000


@dataclass(frozen=True)
class ReuseResult:
    """Branch-to-shortcut ratios and the CKA matrix of one network.

    Attributes:
        label: the network's name, for legends.
        units: unit names in forward order (``layer1.0``, ...).
        downsamples: per unit, whether it changes the feature map's shape (its shortcut is not an identity).
        residual: per unit, whether it has a shortcut; a plain unit's ratio is taken against its input.
        ratio_mean: per unit, the mean over images of ``||F(x)|| / ||shortcut(x)||`` (per-image L2 norms).
        ratio_std: per unit, the standard deviation of that ratio over images.
        cka_names: rows and columns of :attr:`cka`: ``"stem"`` (the stem's output, row 0), then the units.
        cka: linear CKA between the outputs of every pair in :attr:`cka_names`, symmetric, ones on the diagonal.
        num_images: how many images the numbers are over.
    """

    label: str
    units: tuple[str, ...]
    downsamples: tuple[bool, ...]
    residual: tuple[bool, ...]
    ratio_mean: tuple[float, ...]
    ratio_std: tuple[float, ...]
    cka_names: tuple[str, ...]
    cka: tuple[tuple[float, ...], ...]
    num_images: int

    @property
    def mean_ratio(self) -> float:
        """Mean branch-to-shortcut ratio over the units that keep the shape (their shortcut is the identity)."""
        ratios = [r for r, down in zip(self.ratio_mean, self.downsamples) if not down]
        return sum(ratios) / len(ratios) if ratios else math.nan

    @property
    def adjacent_cka(self) -> float:
        """Mean CKA between the outputs of consecutive units (the stem's row left out)."""
        pairs = [self.cka[i][i + 1] for i in range(1, len(self.cka) - 1)]
        return sum(pairs) / len(pairs) if pairs else math.nan

    def as_dict(self) -> dict:
        """Every number of the result, JSON-ready (an undefined CKA, between constant features, is ``None``)."""
        return {
            "label": self.label,
            "num_images": self.num_images,
            "units": list(self.units),
            "downsamples": list(self.downsamples),
            "residual": list(self.residual),
            "ratio_mean": list(self.ratio_mean),
            "ratio_std": list(self.ratio_std),
            "mean_ratio": _json_float(self.mean_ratio),
            "cka_names": list(self.cka_names),
            "cka": [[_json_float(v) for v in row] for row in self.cka],
            "adjacent_cka": _json_float(self.adjacent_cka),
        }


def reuse(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 500,
    progress: bool = True,
    label: str = "model",
) -> ReuseResult:
    """Branch-to-shortcut ratios and the linear-CKA matrix of a network's units on ``images``.

    The network runs in eval mode, one unit at a time over all images (in batches of ``batch_size``), so memory
    holds one depth's features for all N images plus, per unit, its N x N centred Gram matrix normalised to unit
    Frobenius norm (float64; 2 MB for 500 images) -- all that CKA needs. Every Gram is over all N images.

    Args:
        model: a resnetkit ``ResNet``; its train/eval mode is restored afterwards.
        images: normalised images ``(N, C, H, W)`` on the model's device; N of a few hundred suffices for CKA.
        batch_size: images per forward pass.
        progress: show a progress bar over the units.
        label: the network's name in the result.

    Returns:
        A :class:`ReuseResult`; CKA row 0 is the stem's output.
    """
    units = residual_units(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _measure(model, units, images, batch_size, progress, label)
    finally:
        model.train(was_training)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same N examples, from the features themselves.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc`` (Kornblith et
    al. 2019, eq. 5 with linear kernels). NaN when either representation is constant over the examples.

    Args:
        x: features ``(N, D1)``; anything with more dimensions is flattened per example.
        y: features ``(N, D2)`` of the same examples.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares representations of the same examples, got {x.shape[0]} and {y.shape[0]}")
    xc, yc = _centred(x.flatten(1).double()), _centred(y.flatten(1).double())
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    return (cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc))).item()


def cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA from two N x N Gram matrices ``K = X X^T`` and ``L = Y Y^T`` (centred here, ``HKH``):
    ``<Kc, Lc>_F / (||Kc||_F ||Lc||_F)``. NaN when either Gram is zero after centring."""
    kc, lc = _centre_gram(k.double()), _centre_gram(l.double())
    return ((kc * lc).sum() / (torch.linalg.matrix_norm(kc) * torch.linalg.matrix_norm(lc))).item()


def centred_gram(x: torch.Tensor) -> torch.Tensor:
    """``Xc Xc^T`` in float64 for features ``x`` (N, ...) flattened per example, ``Xc`` with centred columns.

    Built a slice of columns at a time, so a wide feature map never needs an N x D float64 copy.
    """
    x = x.flatten(1)
    gram = torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[1], _GRAM_COLUMNS):
        xc = _centred(x[:, start : start + _GRAM_COLUMNS].double())
        gram += xc @ xc.T
    return gram


def plot_reuse(results: Sequence[ReuseResult], path: str | Path) -> None:
    """Draw the ratio per unit of every result in one panel, then one CKA heatmap per result, into a PNG."""
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it

    if not results:
        raise ValueError("plot_reuse needs at least one result")
    fig = Figure(figsize=(5.5 + 4.6 * len(results), 4.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(results), width_ratios=[1.3] + [1.0] * len(results), squeeze=False)[0]
    _plot_ratios(axes[0], results)
    for ax, result in zip(axes[1:], results):
        image = _plot_cka(ax, result)
    fig.colorbar(image, ax=list(axes[1:]), label="linear CKA", shrink=0.85)
    fig.suptitle("Feature reuse: how much each unit changes its input, and how alike the units' outputs are")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


# -- measurement -------------------------------------------------------------------------------------------------


def _measure(
    model: nn.Module, units: list[Unit], images: torch.Tensor, batch_size: int, progress: bool, label: str
) -> ReuseResult:
    """Run the network depth by depth over all images, keeping each depth's features for all of them."""
    n = images.shape[0]
    if n < 2:
        raise ValueError("CKA needs at least 2 images")
    features = torch.cat([model.forward_stem(batch) for batch in images.split(batch_size)])
    grams = torch.empty(len(units) + 1, n * n, dtype=torch.float64, device=images.device)
    grams[0] = _unit_gram(features)
    means, stds = [], []
    for unit in tqdm(units, desc=f"reuse {label}", disable=not progress):
        outputs, ratios = zip(*(_run_unit(unit, batch) for batch in features.split(batch_size)))
        features = torch.cat(outputs)
        ratio = torch.cat(ratios)
        means.append(ratio.mean().item())
        stds.append(ratio.std(unbiased=False).item())
        grams[unit.index + 1] = _unit_gram(features)
    cka = grams @ grams.T  # normalised centred Grams: their inner products are the CKAs
    cka = (cka + cka.T) / 2  # exactly symmetric (the product is, up to rounding)
    cka.clamp_(max=1.0)  # the diagonal is 1 up to rounding; NaN (a constant representation) stays NaN
    return ReuseResult(
        label=label,
        units=tuple(u.name for u in units),
        downsamples=tuple(u.downsamples for u in units),
        residual=tuple(u.residual for u in units),
        ratio_mean=tuple(means),
        ratio_std=tuple(stds),
        cka_names=("stem",) + tuple(u.name for u in units),
        cka=tuple(tuple(row) for row in cka.tolist()),
        num_images=n,
    )


def _run_unit(unit: Unit, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit's output on ``x`` and, per image, ``||F(x)|| / ||shortcut(x)||`` (``||x||`` in a plain unit)."""
    branch, shortcut = branch_and_shortcut(unit, x)
    reference = x if shortcut is None else shortcut
    ratio = _norms(branch) / _norms(reference).clamp_min(torch.finfo(reference.dtype).tiny)
    m = unit.module
    out = m.finish(branch if shortcut is None else m.drop_path(branch) + shortcut)  # == m(x); drop_path is eval
    return out, ratio


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, in float64."""
    return torch.linalg.vector_norm(x.flatten(1).double(), dim=1)


def _unit_gram(features: torch.Tensor) -> torch.Tensor:
    """The centred Gram of ``features`` scaled to unit Frobenius norm, flattened (NaN when it is zero)."""
    gram = centred_gram(features)
    return (gram / torch.linalg.matrix_norm(gram)).flatten()


def _centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)


def _centre_gram(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T / N``: subtract row and column means, add back the grand mean."""
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None


# -- plotting ----------------------------------------------------------------------------------------------------


def _plot_ratios(ax, results: Sequence[ReuseResult]) -> None:
    """One line per result: the mean ratio per unit with a +-1 std band; downsampling units as open circles.
    Units are numbered from 1, as in the CKA heatmaps where 0 is the stem."""
    for result in results:
        x = range(1, len(result.units) + 1)
        mean, std = result.ratio_mean, result.ratio_std
        (line,) = ax.plot(x, mean, lw=1.5, label=f"{result.label} (mean {result.mean_ratio:.2f})")
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
        down = [i for i, d in enumerate(result.downsamples) if d]
        ax.plot([i + 1 for i in down], [mean[i] for i in down], "o", mfc="none", color=line.get_color(), ms=7)
    ax.plot([], [], "o", mfc="none", color="gray", label="downsampling unit")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("unit (1 = first after the stem)")
    ax.set_ylabel("||F(x)|| / ||shortcut(x)||  (plain: / ||x||)")
    ax.set_title("Residual branch against its shortcut")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_cka(ax, result: ReuseResult):
    """The CKA matrix as a heatmap on a fixed 0..1 scale; unit 0 is the stem's output."""
    image = ax.imshow(result.cka, vmin=0.0, vmax=1.0, cmap="viridis", origin="upper", interpolation="nearest")
    ax.set_xlabel("unit (0 = stem)")
    ax.set_ylabel("unit (0 = stem)")
    ax.set_title(f"{result.label}: linear CKA (adjacent {result.adjacent_cka:.2f})")
    return image
