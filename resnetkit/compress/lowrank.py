"""Low-rank factorisation of convolutions to a MAC budget: Tucker-2 for kxk kernels, truncated SVD for 1x1.

A kxk convolution with kernel ``W`` (C_out, C_in, k, k) is split by Tucker-2 on its two channel modes (Kim et al.
2016, "Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile Applications"):
``W ~= G x_out U_out x_in U_in``, run as three convolutions,

    1x1 C_in -> R_in (U_in^T)  ->  kxk R_in -> R_out (core G, the original stride/padding/dilation)
    ->  1x1 R_out -> C_out (U_out, with the original bias).

The factors come from a truncated HOSVD: the leading left singular vectors of the kernel unfolded along each
channel mode (no ALS refinement: fine-tuning follows anyway). A 1x1 convolution is a matrix, split by truncated SVD
into 1x1 C_in -> R (with the original stride and padding) and 1x1 R -> C_out (Denton et al. 2014, "Exploiting
Linear Structure Within Convolutional Networks for Efficient Evaluation"): the factor on the kernel's smaller side
holds the orthonormal singular vectors, the other the projection of the kernel onto them, which is the best rank-R
approximation (Eckart-Young). Singular vectors come from an eigendecomposition of the smaller Gram matrix in float64
(seconds faster per layer than a full SVD of a 512 x 4608 unfolding on a CPU). At full rank both are exact up to
float rounding.

The factorised convolution becomes an ``nn.Sequential`` of the three (or two) convolutions set on the same
attribute of the same module instance (``layer1.0.conv2`` -> ``layer1.0.conv2.0/.1/.2``): block classes are never
edited, BN fusion and export see ordinary convolutions, and the edit is recorded in ``model.surgery``. Functions
edit the model in place (``copy.deepcopy`` first to keep the original).

Left whole: grouped convolutions (ResNeXt's 3x3: each group is already a small dense kernel, and mixing groups
would add MACs), squeeze-excitation's 1x1s (they run on a 1x1 map and cost next to nothing), and by default the
stem (3 input channels leave nothing to factorise on the input side, it runs at the highest resolution where
errors spread furthest, and Kim et al. also keep the first layer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.layers import SqueezeExcite
from .budget import (
    CostChange,
    check_fraction,
    conv_macs,
    conv_sites,
    default_input_size,
    measure,
    plan_for_budget,
)
from ..models.surgery import factor_chain, record_surgery, set_submodule


class Method(enum.Enum):
    TUCKER2 = "tucker2"  # kxk kernels: ranks (R_in, R_out)
    SVD = "svd"  # 1x1 kernels: rank (R,)


@dataclass(frozen=True)
class FactorizedLayer:
    """One factorised convolution: kernel shape, ranks, MACs before/after and relative reconstruction error
    ``||W - W_hat||_F / ||W||_F``."""

    name: str
    method: Method
    shape: tuple[int, int, int, int]
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    error: float


@dataclass(frozen=True)
class FactorizeReport(CostChange):
    """What :func:`factorize` did: costs before and after (one image), the rank ratio and each layer."""

    rank_ratio: float | None
    layers: tuple[FactorizedLayer, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary with per-layer ranks and errors."""
        layers = {f.name: {"method": f.method.value, "shape": list(f.shape), "ranks": list(f.ranks),
                           "macs_before": f.macs_before, "macs_after": f.macs_after, "error": f.error}
                  for f in self.layers}  # fmt: skip
        return {"rank_ratio": self.rank_ratio, **self.cost_dict(), "layers": layers}

    def __str__(self) -> str:
        rows = [f"{'layer':<24}{'method':<9}{'shape':<20}{'ranks':<12}{'MACs':>22}{'error':>8}"]
        for f in self.layers:
            macs = f"{f.macs_before:,} -> {f.macs_after:,}"
            rows.append(f"{f.name:<24}{f.method.value:<9}{str(f.shape):<20}{str(f.ranks):<12}{macs:>22}{f.error:>8.3f}")
        rows.append(self.cost_line())
        return "\n".join(rows)


def factorizable_convs(model: nn.Module, skip_stem: bool = True) -> list[str]:
    """Names of the convolutions :func:`factorize` may split: ungrouped ``nn.Conv2d`` outside squeeze-excitation
    and (with ``skip_stem``) outside the stem ``conv1``."""
    se = [name for name, m in model.named_modules() if isinstance(m, SqueezeExcite)]
    names = []
    for name, module in model.named_modules():
        stem = name == "conv1" or name.startswith("conv1.")
        inside_se = any(name.startswith(f"{prefix}.") for prefix in se)
        if isinstance(module, nn.Conv2d) and module.groups == 1 and not inside_se and not (skip_stem and stem):
            names.append(name)
    return names


def method_of(conv: nn.Conv2d) -> Method:
    return Method.SVD if conv.kernel_size == (1, 1) else Method.TUCKER2


def ranks_at(conv: nn.Conv2d, ratio: float) -> tuple[int, ...]:
    """Ranks at a uniform ``ratio`` of full rank: (R_in, R_out) for Tucker-2, (R,) for SVD; at least 1 each."""
    if method_of(conv) is Method.SVD:
        return (max(1, round(ratio * min(conv.in_channels, conv.out_channels))),)
    return max(1, round(ratio * conv.in_channels)), max(1, round(ratio * conv.out_channels))


def factorized_macs(conv: nn.Conv2d, ranks: tuple[int, ...], in_pixels: int, out_pixels: int) -> int:
    """MACs of the factorised chain; a Tucker-2 chain's first 1x1 runs before the stride, at ``in_pixels``."""
    kh, kw = conv.kernel_size
    if method_of(conv) is Method.SVD:
        return out_pixels * ranks[0] * (conv.in_channels + conv.out_channels)
    r_in, r_out = ranks
    return in_pixels * conv.in_channels * r_in + out_pixels * (r_in * r_out * kh * kw + r_out * conv.out_channels)


def factorize(
    model: nn.Module, macs_fraction: float, *, input_size: int | None = None, skip_stem: bool = True
) -> FactorizeReport:
    """Factorise convolutions in place until the model costs at most ``macs_fraction`` of its MACs.

    One rank ratio for every eligible layer (the largest whose MACs fit the budget, found by bisection, then a few
    layers in forward order get their next ranks while the budget allows; see :func:`.budget.plan_for_budget`); a
    layer is split only where its chain at that ratio costs fewer MACs than the original (a 3x3 needs ratio below about
    0.6, a 1x1 below C_in*C_out/(C_in+C_out) of its smaller side), otherwise it stays whole.

    Args:
        model: a resnetkit network (or any module of ``nn.Conv2d`` layers).
        macs_fraction: target MACs after / before, in (0, 1].
        input_size: image side the MACs are counted at; 32 for CIFAR stems, 224 otherwise by default.
        skip_stem: leave the stem convolution(s) whole (see the module docstring).

    Returns:
        The :class:`FactorizeReport`; the edit is appended to ``model.surgery``.
    """
    target, size = check_fraction(macs_fraction), default_input_size(model, input_size)
    macs, _ = measure(model, size)
    sites = conv_sites(model, size)
    candidates = [(n, model.get_submodule(n), sites[n]) for n in factorizable_convs(model, skip_stem) if n in sites]

    def plan_at(ratio: float) -> dict[str, tuple[int, ...] | None]:
        """Each candidate's ranks at ``ratio``, or None where the chain would not save MACs."""
        plan = {}
        for name, conv, site in candidates:
            ranks = ranks_at(conv, ratio)
            cheaper = factorized_macs(conv, ranks, site.in_pixels, site.out_pixels) < conv_macs(conv, site.out_pixels)
            plan[name] = ranks if cheaper else None
        return plan

    def cost(plan: dict[str, tuple[int, ...] | None]) -> int:
        total = macs
        for name, conv, site in candidates:
            if plan[name] is not None:
                total += factorized_macs(conv, plan[name], site.in_pixels, site.out_pixels)
                total -= conv_macs(conv, site.out_pixels)
        return total

    ratio, plan = plan_for_budget(plan_at, cost, target * macs, "factorising convolutions")
    plan = {name: ranks for name, ranks in plan.items() if ranks is not None}
    return factorize_layers(model, plan, input_size=size, rank_ratio=ratio)


def factorize_layers(
    model: nn.Module, ranks: dict[str, tuple[int, ...]], *, input_size: int | None = None,
    rank_ratio: float | None = None,
) -> FactorizeReport:  # fmt: skip
    """Factorise the named convolutions at the given ranks, in place, whatever the MACs (full rank is exact).

    Args:
        model: the network.
        ranks: ``{conv name: (R_in, R_out)}`` for kxk convolutions, ``{name: (R,)}`` for 1x1.
        input_size: image side the report's MACs are counted at.
        rank_ratio: the ratio the ranks came from, for the report.
    """
    size = default_input_size(model, input_size)
    macs, params = measure(model, size)
    sites = conv_sites(model, size)
    layers = []
    for name, layer_ranks in ranks.items():
        conv = model.get_submodule(name)
        chain, error = factorize_conv(conv, tuple(layer_ranks))
        set_submodule(model, name, chain)
        site, kept = sites[name], _chain_ranks(chain)
        before, after = conv_macs(conv, site.out_pixels), factorized_macs(conv, kept, site.in_pixels, site.out_pixels)
        layers.append(FactorizedLayer(name, method_of(conv), tuple(conv.weight.shape), kept, before, after, error))
    if layers:
        record_surgery(model, {"op": "factorize", "layers": {f.name: list(f.ranks) for f in layers}})
    macs_after, params_after = measure(model, size)
    return FactorizeReport(macs_before=macs, macs_after=macs_after, params_before=params, params_after=params_after,
                           rank_ratio=rank_ratio, layers=tuple(layers))


def _chain_ranks(chain: nn.Sequential) -> tuple[int, ...]:
    return tuple(conv.out_channels for conv in list(chain)[:-1])


@torch.no_grad()
def factorize_conv(conv: nn.Conv2d, ranks: tuple[int, ...]) -> tuple[nn.Sequential, float]:
    """Split one convolution into a chain of convolutions at ``ranks``.

    Returns:
        The ``nn.Sequential`` chain and its relative reconstruction error ``||W - W_hat||_F / ||W||_F``.
    """
    if conv.groups != 1:
        raise ValueError(f"cannot factorise a grouped convolution (groups={conv.groups})")
    weight = conv.weight.detach().double()
    chain = factor_chain(conv, _clamp_ranks(conv, ranks))
    if method_of(conv) is Method.SVD:
        factors, approx = _svd(weight, chain[0].out_channels)
    else:
        factors, approx = _tucker2(weight, chain[0].out_channels, chain[1].out_channels)
    for layer, factor in zip(chain, factors):
        layer.weight.copy_(factor.to(layer.weight.dtype))
        layer.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        chain[-1].bias.copy_(conv.bias)
    error = (torch.linalg.norm(weight - approx) / torch.linalg.norm(weight).clamp_min(1e-30)).item()
    return chain, error


def _clamp_ranks(conv: nn.Conv2d, ranks: tuple[int, ...]) -> tuple[int, ...]:
    """Ranks beyond what the unfolded kernel can have add nothing: cap them (then full rank is exact)."""
    kh, kw = conv.kernel_size
    c_in, c_out = conv.in_channels, conv.out_channels
    expected = 1 if method_of(conv) is Method.SVD else 2
    if len(ranks) != expected or any(not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"{method_of(conv).value} takes {expected} positive integer rank(s), got {ranks!r}")
    if expected == 1:
        return (min(ranks[0], c_in, c_out),)
    return min(ranks[0], c_in, c_out * kh * kw), min(ranks[1], c_out, c_in * kh * kw)


def _leading_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of ``matrix`` (rows, cols): eigenvectors of its (rows, rows) Gram."""
    _, vectors = torch.linalg.eigh(matrix @ matrix.T)  # eigenvalues ascending
    return vectors.flip(-1)[:, :rank]


def _tucker2(weight: torch.Tensor, r_in: int, r_out: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Truncated HOSVD on the channel modes: factors (first, core, last) as conv kernels, and W_hat."""
    u_out = _leading_vectors(weight.flatten(1), r_out)  # (C_out, R_out): mode-0 unfolding
    u_in = _leading_vectors(weight.transpose(0, 1).flatten(1), r_in)  # (C_in, R_in): mode-1 unfolding
    core = torch.einsum("oihw,or,is->rshw", weight, u_out, u_in)  # (R_out, R_in, kh, kw)
    approx = torch.einsum("rshw,or,is->oihw", core, u_out, u_in)
    return [u_in.T[..., None, None], core, u_out[..., None, None]], approx


def _svd(weight: torch.Tensor, rank: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Truncated SVD of a 1x1 kernel: factors (first, last) as conv kernels, and W_hat = last @ first."""
    matrix = weight.flatten(1)  # (C_out, C_in)
    if matrix.shape[0] <= matrix.shape[1]:
        last = _leading_vectors(matrix, rank)  # (C_out, R) orthonormal
        first = last.T @ matrix  # (R, C_in)
    else:
        first = _leading_vectors(matrix.T, rank).T  # (R, C_in) orthonormal
        last = matrix @ first.T  # (C_out, R)
    return [first[..., None, None], last[..., None, None]], (last @ first).view_as(weight)
