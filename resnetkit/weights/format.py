"""The resnetkit model file: safetensors tensors plus a :class:`~resnetkit.models.ModelRecord` as JSON metadata.

One format for everything resnetkit writes: a training run's ``last.safetensors``/``best.safetensors``/
``weights.safetensors``, a converted checkpoint, a published weights file. The metadata hold the record (variant
and full config, architecture edits, preprocessing, classes, metrics, recipe and training config, provenance) and a
SHA-256 of the model's tensors, checked on every read. safetensors holds raw tensors only, so reading a file cannot
run code, unlike a pickled ``.pth``.

A training checkpoint is the same file with an optional second part, the training state needed to resume
(optimizer, grad scaler, RNG states, step, the raw weights when the model tensors are an EMA): its tensors are stored
under the ``train_state/`` prefix and its structure as JSON, so :func:`read_weights` (what every loader uses) never
reads them and publishing a run is copying its model part.

Files of earlier versions keep loading: ``resnetkit.weights/1`` (a record without edits or training config) and
the bare ``resnetkit`` tag of the run weights of version 0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

from ..io import atomic_write, first_line
from ..models import ModelRecord, ResNet, ResNetConfig
from ..models.record import default_preprocess

FORMAT = "resnetkit.model/2"
FORMAT_V1 = "resnetkit.weights/1"  # published weights of version 0.1: the record as it is now, fewer fields
FORMAT_V0 = "resnetkit"  # run weights of version 0.1: model name, config, classes and edits only
TRAIN_PREFIX = "train_state/"  # tensors of the training state, kept apart from the model's
WeightsMeta = ModelRecord  # the record's name in version 0.1


class WeightsError(ValueError):
    """A file that is not resnetkit weights, is damaged, or does not fit the model; the message is one line."""


def tensors_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the identity of the weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(
    path: str | Path,
    model: nn.Module | dict[str, torch.Tensor],
    record: ModelRecord,
    train_state: dict[str, Any] | None = None,
) -> ModelRecord:
    """Write a model's (or a state dict's) tensors and ``record`` atomically to a ``.safetensors`` file.

    Args:
        path: the file to write.
        model: the network or its state dict.
        record: what the tensors are; its ``tensors_sha256`` is filled in here.
        train_state: the training state of a resumable checkpoint (nested dicts, lists and tuples of tensors,
            numpy arrays, numbers, strings and ``None``), or ``None`` for weights alone.

    Returns:
        ``record`` with ``tensors_sha256`` filled in, as written.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    record = dataclasses.replace(record, tensors_sha256=tensors_sha256(tensors))
    header = {"format": FORMAT, "arch": record.arch, "resnetkit": json.dumps(record.to_dict())}
    if train_state is not None:
        extra: dict[str, torch.Tensor] = {}
        header["train_state"] = json.dumps(_flatten(train_state, extra, TRAIN_PREFIX))
        header["train_state_sha256"] = tensors_sha256(extra)  # checked on read, as the model's tensors are
        tensors |= extra
    atomic_write(path, lambda f: f.write(safetensors.torch.save(tensors, metadata=header)))
    return record


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelRecord]:
    """The model tensors and record of a resnetkit file (any version), the tensors checked against the record.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a resnetkit file, or damaged (one line saying which).
    """
    path = Path(path)
    header, names = _header(path)
    kind = header.get("format")
    if kind not in (FORMAT, FORMAT_V1, FORMAT_V0):
        raise WeightsError(f"{path} is not resnetkit weights (no '{FORMAT}' tag); convert it with `resnetkit convert`")
    with safetensors.safe_open(path, framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in names if not name.startswith(TRAIN_PREFIX)}
    if kind == FORMAT_V0:
        return tensors, _record_v0(header, tensors)
    record = ModelRecord.from_dict(json.loads(header["resnetkit"]))
    if tensors_sha256(tensors) != record.tensors_sha256:
        raise WeightsError(f"{path} is damaged: its tensors do not match the SHA-256 in its metadata")
    return tensors, record


def read_record(path: str | Path) -> ModelRecord:
    """The record of a resnetkit file (version 2), from its header alone: no tensor is read or checked."""
    header, _ = _header(Path(path))
    if header.get("format") not in (FORMAT, FORMAT_V1):
        raise WeightsError(f"{path} is not a resnetkit model file of this version (no '{FORMAT}' tag)")
    return ModelRecord.from_dict(json.loads(header["resnetkit"]))


def read_train_state(path: str | Path) -> dict[str, Any] | None:
    """The training state stored with the weights by :func:`save_weights`, or ``None`` if the file has none."""
    path = Path(path)
    header, names = _header(path)
    if "train_state" not in header:
        return None
    with safetensors.safe_open(path, framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in names if name.startswith(TRAIN_PREFIX)}
    if tensors_sha256(tensors) != header.get("train_state_sha256"):
        raise WeightsError(f"{path} is damaged: its training state does not match the SHA-256 in its metadata")
    return _unflatten(json.loads(header["train_state"]), tensors)


def is_resnetkit_file(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file written by resnetkit (any version)."""
    try:
        return _header(Path(path))[0].get("format") in (FORMAT, FORMAT_V1, FORMAT_V0)
    except WeightsError:
        return False


def _header(path: Path) -> tuple[dict[str, str], list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            return f.metadata() or {}, list(f.keys())
    except Exception as err:  # safetensors raises its own error types for foreign or truncated files
        raise WeightsError(f"{path} is not a readable safetensors file ({first_line(err)})") from None


def _record_v0(header: dict[str, str], tensors: dict[str, torch.Tensor]) -> ModelRecord:
    """The record of a 0.1 run's ``weights.safetensors``, which stored no preprocessing (assumed from the stem)."""
    config = ResNetConfig.from_dict(json.loads(header["model_config"]))
    return ModelRecord(header["model_name"], config, default_preprocess(config), tuple(json.loads(header.get("classes", "[]"))),
                       source="resnetkit 0.1 run weights", tensors_sha256=tensors_sha256(tensors),
                       edits=tuple(json.loads(header.get("surgery", "[]"))))  # fmt: skip


# -- the training state as JSON plus tensors ---------------------------------------------------------------------


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """``obj`` as JSON, its tensors and arrays moved into ``tensors`` under names starting with ``key``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        items = [[k, _flatten(v, tensors, f"{key}{k}/")] for k, v in obj.items()]
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": dict(items)}
        return {"__items__": items}  # an optimizer's state is keyed by parameter index
    if isinstance(obj, (list, tuple)):
        values = [_flatten(v, tensors, f"{key}{i}/") for i, v in enumerate(obj)]
        return {"__tuple__": values} if isinstance(obj, tuple) else values
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state (at {key})")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    return {k: _unflatten(v, tensors) for k, v in obj["__dict__"].items()}


# -- putting tensors into a model ---------------------------------------------------------------------------------


def load_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights", assign: bool = False) -> None:
    """``model.load_state_dict(state_dict, strict=True, assign=assign)``, with every mismatch named in one line.

    Raises:
        WeightsError: listing the missing, unexpected and wrongly shaped keys.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state_dict and state_dict[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or misshaped:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if keys]  # fmt: skip
        raise WeightsError(f"{source} do not fit {_describe(model)}: " + "; ".join(parts))
    if assign:  # assigned tensors become the parameters: weights stored in float16 load in the model's own dtype
        state_dict = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=assign)


def model_with(record: ModelRecord, state_dict: dict[str, torch.Tensor], source: str = "weights") -> ResNet:
    """The model of ``record`` holding ``state_dict``'s tensors, with the record as ``model.record``; built on the
    meta device, so that no time goes into an initialisation the weights replace at once."""
    with torch.device("meta"):
        model = record.build()
    load_checked(model, state_dict, source, assign=True)
    model.record = record
    return model


def _describe(model: nn.Module) -> str:
    return f"this {type(model).__name__}" if not isinstance(model, ResNet) else "this model's config"
