"""Read other libraries' checkpoints as resnetkit weights: in memory (:func:`read_any`, what ``load_model`` uses)
or into a resnetkit file (:func:`convert`).

torchvision's and timm's ResNets use resnetkit's parameter names, so their checkpoints need no renaming; what
varies is the wrapping: ``module.`` prefixes from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``, and
training-script dicts that keep the weights under ``state_dict``, ``model``, ``model_ema``, ... Keras Applications
files (``.h5``) go through :mod:`resnetkit.weights.keras`, and resnetkit 0.1 training checkpoints (``last.pt``)
keep their record. Every file is read without running code: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torchvision.models import ResNet50_Weights

from ..io import file_digest, first_line
from ..models import VARIANTS, Metric, ModelRecord, Preprocess, ResNetConfig, create_model, model_config
from ..models.record import default_preprocess
from .format import WeightsError, is_resnetkit_file, model_with, read_weights, save_weights

CHECKPOINT_V0 = "resnetkit.checkpoint/1"  # training checkpoints (last.pt, best.pt) of resnetkit 0.1
WRAPPER_KEYS = ("state_dict", "model", "module", "net")  # where training scripts keep the weights
EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
IMAGENET_CLASSES = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def read_state_dict(path: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The bare state dict inside a ``.pth``/``.pt``/``.safetensors`` checkpoint, unwrapped and un-prefixed.

    Args:
        path: the checkpoint.
        ema: take the EMA weights of a training checkpoint that has both.

    Raises:
        WeightsError: unreadable, holds code (refused by ``weights_only``), or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    if path.suffix == ".safetensors":
        try:
            return _strip_prefixes(safetensors.torch.load_file(path))
        except Exception as err:
            raise WeightsError(f"{path} is not a readable safetensors file ({first_line(err)})") from None
    return _strip_prefixes(_unwrap(_torch_load(path), ema, path))


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for pickles that hold code, RuntimeError for damaged zips, ...
        raise WeightsError(f"{path} cannot be loaded safely ({first_line(err)})") from None


def _unwrap(obj: Any, ema: bool, path: Path) -> dict[str, torch.Tensor]:
    """Find the dict of tensors inside a training checkpoint (resnetkit's own included)."""
    for _ in range(3):  # nested wrappers such as {"model": {"state_dict": ...}}
        if _is_state_dict(obj):
            return obj
        if not isinstance(obj, dict):
            break
        keys = (*EMA_KEYS, *WRAPPER_KEYS) if ema else (*WRAPPER_KEYS, *EMA_KEYS)
        inner = next((obj[k] for k in keys if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    raise WeightsError(f"{path} holds no state dict (looked under {', '.join(WRAPPER_KEYS + EMA_KEYS)})")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """The variant whose parameter names and shapes the state dict has (classifier size aside).

    Raises:
        WeightsError: no variant fits, or several do (``cifar_resnet20`` and ``cifar_plain20`` have the same
            tensors; the v1 and v1.5 stride placements too): pass ``arch``.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if not k.startswith("fc.")}
    layers = _stage_depths(shapes)  # cheap filter before building candidates on the meta device
    matches = sorted(name for name, v in VARIANTS.items() if v.config.layers == layers and _shapes(name) == shapes)
    if len(matches) != 1:
        found = f"several variants fit ({', '.join(matches)})" if matches else "no variant fits its tensors"
        raise WeightsError(f"cannot tell the architecture: {found}; pass arch=NAME (--arch NAME)")
    return matches[0]


def _stage_depths(shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Units per stage, read from the ``layerS.U.`` key names."""
    depths: dict[int, int] = {}
    for key in shapes:
        parts = key.split(".")
        if len(parts) > 2 and parts[0].startswith("layer") and parts[0][5:].isdigit() and parts[1].isdigit():
            depths[int(parts[0][5:])] = max(depths.get(int(parts[0][5:]), 0), int(parts[1]) + 1)
    return tuple(depths[s] for s in sorted(depths))


@functools.cache
def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = create_model(name, num_classes=0)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def record_for_state_dict(
    state_dict: dict[str, torch.Tensor], arch: str | None = None, *, overrides: dict[str, Any] | None = None, **meta: Any
) -> ModelRecord:
    """The record of torchvision/timm-named tensors, checked against the variant strictly.

    Args:
        state_dict: the tensors.
        arch: variant name; inferred from the tensors when ``None``.
        overrides: config overrides the weights need (e.g. ``{"stride_in_1x1": True}`` for v1 weights).
        **meta: :class:`ModelRecord` fields (``preprocess``, ``metrics``, ``source``, ...); ``classes`` default to
            ImageNet's when the classifier has 1000 outputs.
    """
    arch = arch or infer_arch(state_dict)
    num_classes = state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else 0
    config = model_config(arch, **{**(overrides or {}), "num_classes": num_classes})
    meta.setdefault("classes", IMAGENET_CLASSES if num_classes == 1000 else tuple(str(i) for i in range(num_classes)))
    meta.setdefault("preprocess", default_preprocess(config))
    record = ModelRecord(arch, config, **meta)
    model_with(record, state_dict, source=meta.get("source") or "weights")  # strict check of names and shapes
    return record


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], dst: str | Path, arch: str | None = None, *,
    overrides: dict[str, Any] | None = None, **meta: Any,
) -> ModelRecord:  # fmt: skip
    """Check a state dict against a variant (strictly) and write it as a resnetkit file; see
    :func:`record_for_state_dict` for the arguments."""
    return save_weights(dst, state_dict, record_for_state_dict(state_dict, arch, overrides=overrides, **meta))


def read_any(src: str | Path, arch: str | None = None, *, ema: bool = False, **overrides: Any
             ) -> tuple[dict[str, torch.Tensor], ModelRecord]:  # fmt: skip
    """The tensors and record of any checkpoint resnetkit reads: its own files (every version, training
    checkpoints included), torchvision/timm/DDP/training-script checkpoints and Keras Applications ``.h5``.

    Args:
        src: ``.safetensors``, ``.pth``/``.pt``/``.bin`` or Keras ``.h5``/``.weights.h5``/``.keras``.
        arch: variant name for foreign checkpoints (Keras: ``resnet50``, ``resnet50v2``, ...); inferred when ``None``.
        ema: prefer the EMA weights of a foreign training checkpoint.
        **overrides: config overrides for foreign checkpoints, e.g. ``stride_in_1x1=True``.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint {str(src)!r} not found")
    if src.suffix == ".safetensors" and is_resnetkit_file(src):
        return read_weights(src)
    digest = file_digest(src)
    if src.suffix in (".h5", ".keras"):
        from .keras import convert_keras  # h5py is slow to import; only Keras files need it

        model, info = convert_keras(src, arch)
        preprocess = Preprocess(info["crop_size"], info["resize_size"], info["interpolation"], info["mean"], info["std"])
        state = model.state_dict()
        return state, record_for_state_dict(state, info["arch"], overrides=info["overrides"], preprocess=preprocess,
                                            source=info["source"], source_sha256=digest)  # fmt: skip
    if src.suffix != ".safetensors":
        obj = _torch_load(src)
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_V0:
            return _read_checkpoint_v0(obj, src)
        state = _strip_prefixes(_unwrap(obj, ema, src))
    else:
        state = read_state_dict(src)
    return state, record_for_state_dict(state, arch, overrides=overrides, source=str(src), source_sha256=digest)


def _read_checkpoint_v0(state: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], ModelRecord]:
    """A resnetkit 0.1 training checkpoint (``last.pt``/``best.pt``): its EMA weights when it kept them."""
    tensors = state["ema"] if state.get("ema") is not None else state["model"]
    norm, metrics = state["normalize"], state.get("metrics") or {}
    train_config = state.get("train_config") or {}
    dataset = train_config.get("data", {}).get("dataset", "")
    top5 = 100 * metrics["val_top5"] if "val_top5" in metrics else None
    measured = (Metric(dataset, "val", 100 * metrics["val_top1"], top5),) if "val_top1" in metrics else ()
    record = ModelRecord(state["model_name"], ResNetConfig.from_dict(state["model_config"]),
                         Preprocess.square(norm["input_size"], norm["mean"], norm["std"]), tuple(state["classes"]),
                         measured, source=str(path), extra={"epoch": state.get("epoch"), "step": state.get("step")},
                         edits=tuple(state.get("surgery") or ()), train_config=train_config)  # fmt: skip
    return tensors, record


def convert(src: str | Path, dst: str | Path, arch: str | None = None, *, ema: bool = False, **overrides: Any) -> ModelRecord:
    """Convert a torchvision/timm/training checkpoint or a Keras Applications ``.h5`` file into a resnetkit file.

    ``resnetkit.load_model(dst)`` then rebuilds the model from ``dst`` alone (as it would from ``src``: the
    conversion is what :func:`read_any` does in memory, saved).

    Args:
        src: ``.pth``/``.pt``/``.bin``/``.safetensors`` checkpoint, or Keras ``.h5``/``.weights.h5``.
        dst: the resnetkit ``.safetensors`` file to write.
        arch: variant name (Keras: ``resnet50``, ``resnet50v2``, ...); inferred when ``None``.
        ema: prefer the EMA weights of a training checkpoint.
        **overrides: config overrides, e.g. ``stride_in_1x1=True``.
    """
    return save_weights(dst, *read_any(src, arch, ema=ema, **overrides))
