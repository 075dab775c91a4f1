"""Compression that wraps or edits model instances, never forks the blocks: structured (channel and depth) and
unstructured pruning, low-rank factorisation and knowledge distillation. Architecture edits are recorded (see
:mod:`resnetkit.models.surgery`) so compressed checkpoints rebuild themselves.

Every function here edits the model in place and returns a small report (MACs and parameters before and after,
per-layer detail); ``copy.deepcopy`` the model first to keep the original.
"""

from .depth import DepthReport, drop_units, droppable_units
from .lowrank import FactorizeReport, factorizable_convs, factorize, factorize_conv, factorize_layers
from .prune import (
    Criterion,
    PruneReport,
    SparsityReport,
    branch_links,
    magnitude_prune,
    make_permanent,
    prune_channels,
    sparsity_report,
)
from ..models.surgery import apply_surgery, record_surgery, register_op, surgery_of

__all__ = [
    "apply_surgery", "record_surgery", "register_op", "surgery_of",
    "Criterion", "PruneReport", "SparsityReport", "branch_links", "magnitude_prune", "make_permanent",
    "prune_channels", "sparsity_report",
    "DepthReport", "drop_units", "droppable_units",
    "FactorizeReport", "factorizable_convs", "factorize", "factorize_conv", "factorize_layers",
]  # fmt: skip
