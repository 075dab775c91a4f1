"""Checkpoints: everything a run needs to be evaluated or resumed, written atomically, read without pickle code.

A checkpoint is a ``torch.save`` dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: a crafted file cannot run code. It is written to a temporary file in the same
directory, flushed to disk, then renamed over the old one, so an interrupted write never leaves a broken file.

Compressed models are a variant plus architecture edits: the checkpoint keeps those edits under ``"surgery"``
(see :mod:`resnetkit.compress.surgery`) and :func:`model_from_checkpoint` replays them before loading the weights.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ..compress.surgery import apply_surgery, surgery_of
from ..models import ResNet, ResNetConfig

FORMAT = "resnetkit.checkpoint/1"
LAST, BEST = "last.pt", "best.pt"


class CheckpointError(ValueError):
    """A file that is not a resnetkit checkpoint, or is damaged."""


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a checkpoint is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see :func:`checkpoint_state`) atomically to ``path``."""
    return atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); a wrong or damaged file gives a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable resnetkit checkpoint ({first_line})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnetkit checkpoint (no '{FORMAT}' format tag)")
    return state


def model_from_checkpoint(state: dict[str, Any], ema: bool = True) -> ResNet:
    """Rebuild the network from a checkpoint alone (variant, then its surgery edits), with the EMA weights when it
    has them and ``ema``."""
    model = ResNet.from_config(ResNetConfig.from_dict(state["model_config"]))
    apply_surgery(model, state.get("surgery") or [])
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights, strict=True)
    return model


def checkpoint_from_model(model: ResNet, like: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A plain (non-resumable) checkpoint state for ``model``, e.g. after compression, for :func:`save_checkpoint`.

    Args:
        model: the network, possibly edited (its ``model.surgery`` is stored).
        like: an existing checkpoint state; its ``model_name``, ``train_config``, ``classes`` and ``normalize``
            are kept, so eval, predict, export and ``init_from`` treat the result like the original.
        **extra: more entries, e.g. ``compression={...}`` or ``metrics={...}``.
    """
    keep = {key: like[key] for key in ("model_name", "train_config", "classes", "normalize")}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {**keep, "model_config": model.config.to_dict(), "surgery": surgery_of(model), "model": weights,
            "ema": None, **extra}  # fmt: skip


def export_safetensors(state: dict[str, Any], path: str | Path, ema: bool = True) -> Path:
    """Write the weights alone as a safetensors file, with the model config and surgery edits as metadata."""
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    tensors = {k: v.contiguous() for k, v in weights.items()}
    metadata = {"format": "resnetkit", "model_name": state["model_name"], "model_config": json.dumps(state["model_config"]),
                "classes": json.dumps(state.get("classes", [])),
                "surgery": json.dumps(state.get("surgery") or [])}  # fmt: skip
    return atomic_write(path, lambda f: f.write(safetensors.torch.save(tensors, metadata=metadata)))
