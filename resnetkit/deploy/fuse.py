"""Fold inference-mode BatchNorm into the convolution before it: ``bn(conv(x)) == conv'(x)``.

In eval mode a BatchNorm is a per-channel affine map ``y = s * x + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - s * mean``. When it reads a convolution's output and nothing else reads that output, the map folds
into the convolution: ``W' = s * W`` (per output channel) and ``b' = s * b + t``. The BN module is replaced by
``nn.Identity`` and the convolution gains a bias; the model keeps its class, its interface and its forward.

Which norms fold is found on the traced graph (``torch.fx``), not from a table of block classes, so every unit,
shortcut projection (``downsample.0/.1``, or ``downsample.1/.2`` after the ResNet-D pool) and the deep stem are
handled the same way. What folds, per family:

* post-activation nets (ResNet, ResNeXt, Wide, SE, ResNet-D, plain, CIFAR): every BatchNorm; none is left.
* pre-activation units: ``bn2`` (and ``bn3`` in bottlenecks) read a convolution directly and fold backward into
  it. Left as BatchNorm: each unit's ``bn1`` and the head's ``norm``. They read the sum of a residual addition
  (two paths, no single convolution to fold into), and a ReLU sits between them and the next convolution, so they
  cannot fold forward either (``conv(relu(s * x + t))`` is not a convolution of ``x``). One exception folds: in a
  CIFAR-stem pre-activation net whose first unit has a projection shortcut (WRN, pre-act ResNet-164/1001),
  ``layer1.0.bn1`` reads only the stem convolution (the projection reads the normalised input), so it folds
  into the stem. Forward folding into a following convolution (BN -> conv with no ReLU between) would also need a
  convolution without zero padding; no variant has that pattern, so it is not implemented.
* GroupNorm normalises with statistics of each input, so it never folds; FrozenBatchNorm2d folds like BatchNorm.

Conv+ReLU is left as two modules: in eager PyTorch a fused ConvReLU2d module runs the same two kernels, and
ONNX Runtime, TorchInductor and TensorRT fuse the activation themselves.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import fx, nn
from torchvision.ops import FrozenBatchNorm2d

FOLDABLE_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)  # SyncBatchNorm is plain BN in eval


def fuse_model(model: nn.Module) -> nn.Module:
    """Return an eval-mode deep copy of ``model`` with every foldable BatchNorm folded into its convolution.

    Args:
        model: any traceable module; resnetkit's ``ResNet`` for every registered variant. Left unchanged.

    Returns:
        The fused copy: folded norms are ``nn.Identity``, their convolutions carry the bias. Its outputs equal
        the original's in eval mode up to float rounding.
    """
    fused = copy.deepcopy(model).eval()
    for conv_name, norm_name in foldable_pairs(fused):
        fold_norm_into_conv(fused.get_submodule(conv_name), fused.get_submodule(norm_name))
        _set_submodule(fused, norm_name, nn.Identity())
    return fused


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv, norm)`` module names where the norm reads only that convolution's output (through identities)."""
    training = model.training
    graph = _NormLeafTracer().trace(model.eval())  # eval: stochastic depth and dropout trace as identities
    model.train(training)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_foldable_norm(modules[node.target]) or not node.args:
            continue
        source = _skip_identities(node.args[0], modules)
        if source is None or not isinstance(modules[source.target], nn.Conv2d):
            continue
        if calls[source.target] == 1 and calls[node.target] == 1:  # shared modules would fold twice
            pairs.append((source.target, node.target))
    return pairs


def norm_names(model: nn.Module) -> list[str]:
    """Names of the BatchNorm-like modules still in ``model`` (what fusion left, or could not fold)."""
    return [name for name, m in model.named_modules() if isinstance(m, FOLDABLE_NORMS)]


@torch.no_grad()
def fold_norm_into_conv(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Fold an eval-mode ``norm`` that follows ``conv`` into the conv's weight and bias, in place (float64 math)."""
    if conv.out_channels != norm.running_mean.numel():  # FrozenBatchNorm2d has no num_features
        raise ValueError(f"cannot fold a norm of {norm.running_mean.numel()} channels into a conv of {conv.out_channels}")
    weight = conv.weight.double()
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)  # (C_out,)
    conv.weight.copy_(weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(conv.weight.dtype))


class _NormLeafTracer(fx.Tracer):
    """Default FX tracer that also keeps torchvision's FrozenBatchNorm2d as one call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, FOLDABLE_NORMS) or super().is_leaf_module(m, qualname)


def _is_foldable_norm(module: nn.Module) -> bool:
    return isinstance(module, FOLDABLE_NORMS) and module.running_mean is not None  # batch stats only: no fold


def _skip_identities(node: object, modules: dict[str, nn.Module]) -> fx.Node | None:
    """Walk back from a norm's input through ``nn.Identity`` calls; the producing call, if no one else reads it."""
    while isinstance(node, fx.Node) and len(node.users) == 1 and node.op == "call_module":
        if not isinstance(modules[node.target], nn.Identity):
            return node
        node = node.args[0]
    return None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, module)
