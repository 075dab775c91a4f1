"""Architecture edits, recorded as data so that a model file rebuilds the exact shapes.

An edited network is a registered variant plus a list of edits (thinner residual branches after channel pruning,
whole units dropped, convolutions split into low-rank factors, magnitude-pruning masks). Each edit is a JSON-ready
dict ``{"op": name, ...}`` appended to ``model.surgery`` by the function that made it (in
:mod:`resnetkit.compress`). A model file stores the list in its record (``ModelRecord.edits``), and
:meth:`ModelRecord.build <resnetkit.models.record.ModelRecord.build>` replays it on the fresh variant with
:func:`apply_surgery` before the weights are loaded strictly.

The replay only has to reproduce *shapes*: the state dict loaded next overwrites whatever values the replay
leaves. That is why the ops live here, with the architecture, and not with the compression code that decides
*which* channels, units or ranks to keep: the models layer can rebuild any edited network without importing
anything above it. A higher layer that invents a new kind of edit registers its replay with :func:`register_op`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

SurgeryOp = Callable[[nn.Module, dict[str, Any]], None]
_OPS: dict[str, SurgeryOp] = {}


def register_op(name: str) -> Callable[[SurgeryOp], SurgeryOp]:
    """Decorator: ``@register_op("prune")`` makes ``{"op": "prune", ...}`` records replayable."""

    def add(fn: SurgeryOp) -> SurgeryOp:
        _OPS[name] = fn
        return fn

    return add


def surgery_of(model: nn.Module) -> list[dict[str, Any]]:
    """The edits made to ``model`` so far, oldest first (empty for an unedited variant)."""
    return list(getattr(model, "surgery", []))


def record_surgery(model: nn.Module, record: dict[str, Any]) -> None:
    """Append ``record`` (a dict with an ``"op"`` key and JSON-ready values) to ``model.surgery``."""
    _op(record)
    model.surgery = [*surgery_of(model), record]


def apply_surgery(model: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    """Replay ``records`` on a freshly built ``model`` (in place) and return it, ready for ``load_state_dict``."""
    for record in records:
        _op(record)(model, record)
        model.surgery = [*surgery_of(model), record]
    return model


def _op(record: dict[str, Any]) -> SurgeryOp:
    op = _OPS.get(record.get("op"))
    if op is None:
        raise ValueError(f"unknown surgery op {record.get('op')!r}; known: {', '.join(sorted(_OPS))}")
    return op


# -- module helpers shared by the ops and by the compression code ------------------------------------------------


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted path) on its parent instance."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)


def conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int, **changes: Any) -> nn.Conv2d:
    """A new ``nn.Conv2d`` with ``conv``'s geometry, device and dtype but other channels (and any ``changes``)."""
    options = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                   groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode)  # fmt: skip
    options.update(changes)
    return nn.Conv2d(in_channels, out_channels, device=conv.weight.device, dtype=conv.weight.dtype, **options)


@torch.no_grad()
def thin_channels(model: nn.Module, conv: str, norm: str, consumer: str, keep: torch.Tensor) -> None:
    """Keep only the channels ``keep`` (sorted indices) that ``conv`` makes, ``norm`` normalises and ``consumer``
    reads: the three modules are rebuilt with those channels' weights."""
    producer, norm_module, next_conv = (model.get_submodule(name) for name in (conv, norm, consumer))
    keep = keep.to(producer.weight.device)
    set_submodule(model, conv, _sliced_conv(producer, out_keep=keep))
    set_submodule(model, norm, _sliced_norm(norm_module, keep, producer.out_channels))
    set_submodule(model, consumer, _sliced_conv(next_conv, in_keep=keep))


def _sliced_conv(conv: nn.Conv2d, out_keep: torch.Tensor | None = None, in_keep: torch.Tensor | None = None):
    weight = conv.weight if out_keep is None else conv.weight[out_keep]
    weight = weight if in_keep is None else weight[:, in_keep]
    new = conv_like(conv, weight.shape[1], weight.shape[0])
    new.weight.copy_(weight)
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if out_keep is None else conv.bias[out_keep])
    return new


def _sliced_norm(norm: nn.Module, keep: torch.Tensor, channels: int) -> nn.Module:
    """A copy of a BatchNorm-like module of ``channels`` with every per-channel parameter and buffer sliced."""
    new = copy.deepcopy(norm)
    for name, param in norm.named_parameters(recurse=False):
        setattr(new, name, nn.Parameter(param[keep].clone(), requires_grad=param.requires_grad))
    for name, buffer in norm.named_buffers(recurse=False):
        if buffer.dim() == 1 and buffer.numel() == channels:
            new._buffers[name] = buffer[keep].clone()
    if hasattr(new, "num_features"):
        new.num_features = len(keep)
    return new


def factor_chain(conv: nn.Conv2d, ranks: tuple[int, ...]) -> nn.Sequential:
    """The factor convolutions (untrained) that replace ``conv``: one rank is a truncated SVD of a 1x1 kernel
    (R-channel 1x1, then 1x1); two ranks are Tucker-2 (1x1 to R_in, the kxk core to R_out, 1x1 back)."""
    if len(ranks) == 1:
        (rank,) = ranks
        first = conv_like(conv, conv.in_channels, rank, bias=False)  # keeps stride and padding
        return nn.Sequential(first, conv_like(conv, rank, conv.out_channels, stride=1, padding=0))
    r_in, r_out = ranks
    return nn.Sequential(
        conv_like(conv, conv.in_channels, r_in, kernel_size=1, stride=1, padding=0, dilation=1, bias=False),
        conv_like(conv, r_in, r_out, bias=False),
        conv_like(conv, r_out, conv.out_channels, kernel_size=1, stride=1, padding=0, dilation=1),
    )


# -- the built-in ops: shapes only, the state dict loaded next brings the values ---------------------------------


@register_op("prune")
def _replay_prune(model: nn.Module, record: dict[str, Any]) -> None:
    """Rebuild the recorded branch widths (keeping the first channels)."""
    for link in record["links"]:
        thin_channels(model, link["conv"], link["norm"], link["next"], torch.arange(link["channels"]))


@register_op("drop_units")
def _replay_drop_units(model: nn.Module, record: dict[str, Any]) -> None:
    for name in record["units"]:
        set_submodule(model, name, nn.Identity())


@register_op("factorize")
def _replay_factorize(model: nn.Module, record: dict[str, Any]) -> None:
    for name, ranks in record["layers"].items():
        set_submodule(model, name, factor_chain(model.get_submodule(name), tuple(ranks)))


@register_op("mask")
def _replay_mask(model: nn.Module, record: dict[str, Any]) -> None:
    """Give the layers all-ones magnitude-pruning masks (``weight_orig``/``weight_mask``)."""
    for name in record["layers"]:
        torch_prune.identity(model.get_submodule(name), "weight")


@register_op("unmask")
def _replay_unmask(model: nn.Module, record: dict[str, Any]) -> None:
    for name in record["layers"]:
        torch_prune.remove(model.get_submodule(name), "weight")
