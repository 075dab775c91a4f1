"""Architecture edits made by compression, recorded as data so a checkpoint rebuilds the exact shapes.

A compressed network is a registered variant plus a list of edits (thinner residual branches after channel
pruning, convolutions split into low-rank factors, ...). Each edit is a JSON-ready dict ``{"op": name, ...}``
appended to ``model.surgery`` by the function that made it. Training checkpoints store that list under
``"surgery"``; :func:`resnetkit.train.checkpoint.model_from_checkpoint` builds the variant, replays the edits
with :func:`apply_surgery` (shapes only: the weights that follow overwrite whatever the replay leaves) and then
loads the state dict strictly, so a pruned or factorised checkpoint loads, evaluates, fine-tunes and exports like
any other.

An op is registered with :func:`register_op`; it receives the model and the record and edits the model in place.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

SurgeryOp = Callable[[nn.Module, dict[str, Any]], None]
_OPS: dict[str, SurgeryOp] = {}
_OP_MODULES = ("prune", "depth", "lowrank")  # resnetkit's own op modules, imported when an op is not yet registered


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
    if record.get("op") not in _OPS:
        raise ValueError(f"unknown surgery op {record.get('op')!r}; known: {', '.join(sorted(_OPS)) or 'none'}")
    model.surgery = [*surgery_of(model), record]


def apply_surgery(model: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    """Replay ``records`` on a freshly built ``model`` (in place) and return it, ready for ``load_state_dict``."""
    for record in records:
        op = _OPS.get(record.get("op")) or _builtin_op(record.get("op"))
        if op is None:
            raise ValueError(f"unknown surgery op {record.get('op')!r}; known: {', '.join(sorted(_OPS))}")
        op(model, record)
        model.surgery = [*surgery_of(model), record]
    return model


def _builtin_op(name: Any) -> SurgeryOp | None:
    """Import resnetkit's op modules (registering their ops) and look ``name`` up again.

    Lazy, so that replaying an op registered elsewhere never imports them, and an op module that is absent from
    this install makes only its own ops unknown.
    """
    for module in _OP_MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{module}":
                raise  # the module exists but one of its imports is missing: a real error
    return _OPS.get(name)
