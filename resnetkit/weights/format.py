"""The resnetkit weights file: safetensors tensors plus JSON metadata that make the file self-describing.

The metadata hold the architecture (variant name and full :class:`ResNetConfig`), the preprocessing the weights
expect, the class names, the metrics with the dataset and split they were measured on, the recipe, the source and
a SHA-256 of the tensors, checked on every read. safetensors holds raw tensors only, so reading a file cannot run
code, unlike a pickled ``.pth``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models import ResNet, ResNetConfig
from ..options import parse_enum
from ..train.checkpoint import atomic_write

FORMAT = "resnetkit.weights/1"


class WeightsError(ValueError):
    """A file that is not resnetkit weights, is damaged, or does not fit the model; the message is one line."""


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for the weights, as torchvision's ``ImageClassification`` does: resize the
    shorter side to ``resize_size`` (antialiased), center-crop ``crop_size``, scale to [0, 1], normalise by
    ``mean``/``std`` (per channel, [0, 1] units)."""

    crop_size: int = 224
    resize_size: int = 256
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "interpolation", parse_enum(InterpolationMode, self.interpolation, "interpolation"))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or min(self.std) <= 0 or self.resize_size < self.crop_size:
            raise ValueError(f"bad preprocessing {self}: need len(mean) == len(std), std > 0, resize >= crop")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` uint8 image -> ``(C, crop, crop)`` normalised float32."""
        x = TF.resize(image, [self.resize_size], self.interpolation, antialias=True)
        x = TF.center_crop(x, [self.crop_size, self.crop_size])
        x = TF.to_dtype(x, torch.float32, scale=True)
        return TF.normalize(x, list(self.mean), list(self.std))


@dataclass(frozen=True)
class Metric:
    """A measured result: ``top1``/``top5`` in percent on ``split`` of ``dataset``."""

    dataset: str
    split: str
    top1: float
    top5: float | None = None


@dataclass(frozen=True)
class WeightsMeta:
    """Everything needed to rebuild, feed and trust a set of weights.

    Args:
        arch: variant name in :func:`resnetkit.list_models`.
        config: the exact architecture (the variant's config with any overrides).
        preprocess: resize, crop, interpolation, mean and std the weights expect.
        classes: class names in output order.
        metrics: measured accuracies with their dataset and split.
        recipe: how the weights were trained (a recipe name, file or URL).
        source: where they came from (URL, converted file, training run).
        source_sha256: SHA-256 of the file they were converted from, if any.
        tensors_sha256: SHA-256 of the tensors (names, dtypes, shapes, bytes), set by :func:`save_weights`.
        extra: free-form provenance (epochs, hardware, wall time, ...).
    """

    arch: str
    config: ResNetConfig
    preprocess: Preprocess = field(default_factory=Preprocess)
    classes: tuple[str, ...] = ()
    metrics: tuple[Metric, ...] = ()
    recipe: str = ""
    source: str = ""
    source_sha256: str = ""
    tensors_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "config": self.config.to_dict(),
            "preprocess": {**dataclasses.asdict(self.preprocess), "interpolation": self.preprocess.interpolation.value},
            "classes": list(self.classes),
            "metrics": [dataclasses.asdict(m) for m in self.metrics],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsMeta:
        data = dict(data)
        data["config"] = ResNetConfig.from_dict(data["config"])
        data["preprocess"] = Preprocess(**data.get("preprocess", {}))
        data["classes"] = tuple(data.get("classes", ()))
        data["metrics"] = tuple(Metric(**m) for m in data.get("metrics", ()))
        return cls(**data)


def tensors_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the identity of the weights."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(path: str | Path, model: nn.Module | dict[str, torch.Tensor], meta: WeightsMeta) -> WeightsMeta:
    """Write a model's (or a state dict's) tensors and ``meta`` atomically to a ``.safetensors`` file.

    Returns:
        ``meta`` with ``tensors_sha256`` filled in, as written.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {name: t.detach().cpu().contiguous() for name, t in state.items()}
    meta = dataclasses.replace(meta, tensors_sha256=tensors_sha256(tensors))
    header = {"format": FORMAT, "arch": meta.arch, "resnetkit": json.dumps(meta.to_dict())}
    atomic_write(path, lambda f: f.write(safetensors.torch.save(tensors, metadata=header)))
    return meta


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """Read a resnetkit weights file and check its tensors against the SHA-256 in its metadata.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: not a resnetkit weights file, or damaged (one line saying which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # safetensors raises its own error types for foreign or truncated files
        raise WeightsError(f"{path} is not a readable safetensors file ({first_line(err)})") from None
    if header.get("format") != FORMAT:
        raise WeightsError(f"{path} is not resnetkit weights (no '{FORMAT}' tag); convert it with `resnetkit convert`")
    meta = WeightsMeta.from_dict(json.loads(header["resnetkit"]))
    if tensors_sha256(tensors) != meta.tensors_sha256:
        raise WeightsError(f"{path} is damaged: its tensors do not match the SHA-256 in its metadata")
    return tensors, meta


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
    model.load_state_dict(state_dict, strict=True, assign=assign)


def model_with(config: ResNetConfig, state_dict: dict[str, torch.Tensor], source: str = "weights") -> ResNet:
    """The model of ``config`` holding ``state_dict``'s tensors, built on the meta device so that no time goes
    into an initialisation the weights replace at once."""
    with torch.device("meta"):
        model = ResNet.from_config(config)
    load_checked(model, state_dict, source, assign=True)
    return model


def _describe(model: nn.Module) -> str:
    return f"this {type(model).__name__}" if not isinstance(model, ResNet) else "this model's config"


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (libraries raise multi-line errors; ours are one line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
