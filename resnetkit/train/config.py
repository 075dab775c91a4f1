"""Training configuration: frozen dataclasses, filled from a recipe file plus ``key=value`` overrides.

A recipe is YAML with the sections of :class:`TrainConfig` (``model``, ``data``, ``optim``, ``distill``, top-level
run options). Overrides use dotted keys: ``optim.lr=0.2 data.batch_size=64 model.name=cifar_resnet56``. Strings are
parsed into enums here, once; unknown keys are an error that lists the valid ones. :func:`load_config` also checks
what would otherwise fail only after the dataset is decoded (the model's name and options, the dataset's path), so
a typo costs a second, not a decode.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.sources import check_dataset
from ..data.transforms import Augment, AutoAugment, Mix
from ..models import model_config
from ..options import parse_enum
from ..runtime import Precision

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DEFAULT_RECIPE = "digits"  # the embedded default: `resnetkit train` with no arguments


class Schedule(enum.Enum):
    MULTISTEP = "multistep"  # divide by ``gamma`` at each milestone (the paper: /10 at 32k and 48k of 64k)
    COSINE = "cosine"  # half-cosine from the peak to zero
    ONECYCLE = "onecycle"  # linear up to the peak over ``pct_start``, then linear down to zero
    CONSTANT = "constant"


@dataclass(frozen=True)
class ModelSection:
    """Which variant to train and its overrides (any ResNetConfig field)."""

    name: str = "cifar_resnet20"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    """Dataset, split and augmentation.

    ``dataset`` is ``digits`` (embedded, no download), ``cifar10``/``cifar100`` (official python format under
    ``root``) or the path of an image folder or ``.zip`` in ImageFolder layout.
    """

    dataset: str = "digits"
    root: str = "data"
    download: bool = True
    val_size: float = 0.1  # a fraction, or a count when >= 1 (CIFAR: 5000, the paper's 45k/5k)
    test_size: float = 0.2  # held-out test split for datasets without an official one (digits)
    split_seed: int = 0
    input_size: int = 32
    augment: Augment = Augment.CIFAR  # none | cifar (pad, crop, flip) | imagenet (random resized crop, flip)
    padding: int = 4  # zero padding of the CIFAR crop
    flip: bool = True  # random horizontal flips in the CIFAR and ImageNet augmentations
    auto_augment: AutoAugment = AutoAugment.NONE  # none | trivial | rand
    random_erasing: float = 0.0  # probability
    mix: Mix = Mix.NONE  # none | mixup | cutmix | mixup_cutmix
    mixup_alpha: float = 0.2
    cutmix_alpha: float = 1.0
    batch_size: int = 128  # global batch, split across processes under torchrun
    eval_batch_size: int = 512
    workers: int = 2  # DataLoader workers when streaming (not in memory)
    in_memory: bool = True  # decode once, keep uint8 tensors on the device, augment whole batches


@dataclass(frozen=True)
class OptimSection:
    """SGD and the learning-rate schedule."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = False  # no weight decay on norm parameters and biases
    schedule: Schedule = Schedule.MULTISTEP
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run (the paper: 32k and 48k of 64k)
    gamma: float = 0.1
    pct_start: float = 0.25  # one-cycle: fraction of the run spent rising
    warmup_steps: int = 0  # linear warm-up from 0, for any schedule
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max global gradient norm; 0 disables


@dataclass(frozen=True)
class DistillSection:
    """Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"); off while
    ``teacher`` is empty.

    The loss is ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student,
    labels)``, the CE part with ``optim.label_smoothing`` and MixUp/CutMix targets as usual. The teacher sees the
    same (augmented, mixed) batch under the same autocast, in eval mode and without gradients; it must predict the
    dataset's classes in the same order.
    """

    teacher: str = ""  # path of a resnetkit training checkpoint (its EMA weights when it has them)
    temperature: float = 4.0  # T: softens both distributions; T^2 keeps the soft gradients' scale independent of T
    alpha: float = 0.9  # weight of the soft (teacher) term; 0 is plain cross-entropy

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distill.alpha={self.alpha} must be between 0 and 1")
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature={self.temperature} must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; stored in every checkpoint so a run can be evaluated or resumed with no flags.

    ``init_from`` fine-tunes: the network is rebuilt from that checkpoint (variant, options, surgery edits, EMA
    weights when it has them) instead of a fresh ``model`` variant, while the optimizer, schedule, step count and
    EMA start fresh. The checkpoint decides the architecture: its model section replaces the recipe's (recipes
    always name a model, so a differing ``model.name`` is ignored with a printed note rather than an error). Its
    classes must be the dataset's. ``--resume`` of such a run reads ``init_from`` again for the architecture.
    """

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    distill: DistillSection = field(default_factory=DistillSection)
    qat: bool = False  # quantization-aware training: simulate int8 weights and inputs (resnetkit.deploy.qat)
    init_from: str = ""  # a checkpoint to start from (fine-tuning): its architecture and weights, fresh optimizer
    epochs: int = 30
    steps: int = 0  # total iterations; overrides epochs when set (the paper: 64000)
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: Precision = Precision.FP32
    channels_last: bool = False
    compile: bool = False
    ema_decay: float = 0.0  # exponential moving average of the weights; 0 disables
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    eval_every: int = 1  # epochs between validation passes
    out: str = "runs/default"
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "")


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file, or the name of one shipped with resnetkit (``digits``, ``cifar10_paper``, ...)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES / f"{recipe}.yaml"
    if path.suffix in (".yaml", ".yml") or not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
        raise FileNotFoundError(f"no recipe file or shipped recipe named {str(recipe)!r}; shipped: {names}")
    return shipped


def load_config(
    recipe: str | Path | dict[str, Any] | None = None, overrides: list[str] | None = None, *, check_data: bool = True
) -> TrainConfig:
    """A config from a recipe (file or shipped name, or a stored config as a dict; ``None``: the dataclass
    defaults) with ``key=value`` overrides applied in order, checked by :func:`check_config` before anything is read.

    Args:
        check_data: also require the dataset to be there; ``False`` for a config whose dataset is made later or
            lives on another machine (e.g. to compare a finished run's settings).
    """
    data: dict[str, Any] = {}
    if isinstance(recipe, dict):
        data = copy.deepcopy(recipe)
    elif recipe is not None:
        path = recipe_path(recipe)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"recipe {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
        key, value = key.strip(), yaml.safe_load(value)
        if key == "model" and isinstance(value, str):
            key = "model.name"  # model=cifar_resnet56 is short for model.name=cifar_resnet56
        _set_dotted(data, key, value)
    config = TrainConfig.from_dict(data)
    check_config(config, check_data)
    return config


# What a resumed run may change: how long it trains and how it reports or where it runs, nothing it learns from.
RESUMABLE_CHANGES = frozenset({"epochs", "steps", "eval_every", "progress", "device", "out", "data.workers",
                               "data.eval_batch_size"})  # fmt: skip


def resume_changes(stored: TrainConfig, requested: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The settings ``requested`` changes against the config a run was ``stored`` with, as ``key: (old, new)``.

    Raises:
        ValueError: one line listing every change outside :data:`RESUMABLE_CHANGES`.
    """
    old, new = _flatten(stored.to_dict()), _flatten(requested.to_dict())
    changes = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    refused = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items() if k not in RESUMABLE_CHANGES]
    if refused:
        raise ValueError(f"--resume continues the run with its own config; these settings differ from it: "
                         f"{'; '.join(refused)} (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")  # fmt: skip
    return {k: v for k, v in changes.items() if k != "out"}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "options":  # model.options is one value: the variant's overrides
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_config(cfg: TrainConfig, check_data: bool = True) -> None:
    """Check, without reading any data, what would otherwise fail only once the dataset is decoded.

    The model's name and options are checked by building its config (not the network); with ``init_from`` the
    checkpoint decides the architecture and the model section is unused, so it is not checked. With
    ``check_data``, the dataset must be a built-in name or an existing path.

    Raises:
        KeyError: an unknown model name (the message names the close matches).
        TypeError: an unknown model option (the message lists the valid ones).
        ValueError: a model option with an impossible value.
        FileNotFoundError: a dataset path that does not exist.
    """
    if not cfg.init_from:
        model_config(cfg.model.name, **cfg.model.options)
    if check_data:
        check_dataset(cfg.data.dataset)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, recursing into sections and parsing enums and tuples."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean {where}{close[0]}? " if close else ""
        raise ValueError(f"unknown option '{where}{unknown[0]}'; {hint}valid: {', '.join(sorted(names))}")
    return cls(**{key: _coerce(hints[key], value, f"{where}{key}") for key, value in data.items()})


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if hint is ModelSection and isinstance(value, str):
        value = {"name": value}  # `model: cifar_resnet56` in a recipe
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return parse_enum(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where}={value!r} must be a mapping, e.g. {where}={{key: value}}")
    if origin is tuple:
        return tuple(value if isinstance(value, (list, tuple)) else [value])
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if hint in (int, float, bool, str) and not isinstance(value, hint):
        raise ValueError(f"{where}={value!r} must be {hint.__name__}")
    return value


def _plain(obj: Any) -> Any:
    """Dataclasses, enums and tuples to JSON/YAML-ready dicts, values and lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
