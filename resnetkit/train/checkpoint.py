"""Training checkpoints: resnetkit model files that also hold what ``--resume`` needs.

A checkpoint is the one model file format (:mod:`resnetkit.weights.format`): the weights to evaluate (the EMA when
the run keeps one), the :class:`~resnetkit.models.ModelRecord` (variant, config, edits, classes, preprocessing, the
epoch's validation metrics, the training config) and, for ``last.safetensors``, the training state: optimizer,
grad scaler, RNG states, step and epoch, and the raw weights when the model tensors are an EMA. So
``resnetkit.load_model("runs/x/last.safetensors")`` works like on any published file, and nothing in a checkpoint can
run code. Files are written atomically (temporary file, then rename): an interrupted write never leaves a broken
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import ModelRecord
from ..weights.format import read_train_state, read_weights, save_weights

LAST, BEST, WEIGHTS = "last.safetensors", "best.safetensors", "weights.safetensors"


class CheckpointError(ValueError):
    """A file that holds no training state to resume from."""


@dataclass
class Checkpoint:
    """A checkpoint read back: the evaluation weights, their record and the training state (``None`` in a file
    written without one, such as ``best.safetensors``)."""

    weights: dict[str, torch.Tensor]
    record: ModelRecord
    train_state: dict[str, Any] | None


def save_checkpoint(path: str | Path, weights: dict[str, torch.Tensor], record: ModelRecord,
                    train_state: dict[str, Any] | None = None) -> ModelRecord:  # fmt: skip
    """Write ``weights`` with ``record`` (and the ``train_state`` to resume from, if given) atomically to ``path``."""
    return save_weights(path, weights, record, train_state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint safely; a wrong or damaged file gives a one-line error."""
    weights, record = read_weights(path)
    state = read_train_state(path)
    if map_location != "cpu":
        weights = {k: v.to(map_location) for k, v in weights.items()}
    return Checkpoint(weights, record, state)


def resumable_state(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, which must hold a training state (``last.safetensors`` does)."""
    checkpoint = load_checkpoint(path)
    if checkpoint.train_state is None:
        raise CheckpointError(f"{path} holds weights only, no training state to resume from; "
                              f"resume from the run's {LAST}")  # fmt: skip
    return checkpoint
