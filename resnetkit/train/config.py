"""Training configuration: frozen dataclasses, filled from a recipe file plus ``key=value`` overrides.

A recipe is YAML with the sections of :class:`TrainConfig` (``model``, ``data``, ``optim``, ``distill``, top-level
run options). Overrides use dotted keys: ``optim.lr=0.2 data.batch_size=64 model.name=cifar_resnet56``. Strings are
parsed into enums here, once; unknown keys are an error that lists the valid ones. :func:`load_config` also checks
what would otherwise fail only after the dataset is decoded (the model's name and options, the dataset's path, values
no run can use such as ``epochs=0`` or ``eval_every=0``), so a typo costs a second, not a decode or an epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import functools
import math
import typing
from collections.abc import Callable
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


DETECTION_HEADS = ("faster_rcnn", "mask_rcnn", "retinanet")


@dataclass(frozen=True)
class ModelSection:
    """Which variant to train and its overrides (any ResNetConfig field).

    With a ``head`` (``deeplabv3``, ``fcn``, ``faster_rcnn``, ``mask_rcnn``, ``retinanet``: see
    :mod:`resnetkit.tasks`) the variant is the backbone of that task model and ``head_options`` go to its builder
    (``output_stride``, ``aux``, ``min_size``, ...).
    """

    name: str = "cifar_resnet20"
    options: dict[str, Any] = field(default_factory=dict)
    head: str = ""  # empty: classification with the variant's own head
    head_options: dict[str, Any] = field(default_factory=dict)


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
    augment: Augment = Augment.CIFAR  # none | cifar (pad, crop, flip) | imagenet (random resized crop, flip) | lsj
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
    # detection and segmentation (datasets with their own train/val folders; see resnetkit.data.detection/segmentation)
    classes: tuple[str, ...] = ()  # class names in label order when the dataset does not name them (CamVid)
    ignore_index: int = -1  # a label that marks pixels to ignore (CamVid's void: 11); -1: none
    scale_range: tuple[float, ...] = (0.5, 2.0)  # segmentation and lsj: random rescale before the input_size crop
    base_size: int = 0  # segmentation: shorter side every image is resized to first (0: as stored)
    skip_broken: bool = False  # warn and skip undecodable images and bad annotations instead of stopping


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
    class_balance: bool = False  # segmentation: weight the loss by median frequency balancing (Eigen and Fergus 2015)
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
        data = _parse_yaml(path.read_text(), f"recipe {str(path)!r}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"recipe {str(path)!r} must be a mapping of sections, got {type(data).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. optim.lr=0.05")
        key, value = key.strip(), _parse_yaml(value, f"override {item!r}")
        if key == "model" and isinstance(value, str):
            key = "model.name"  # model=cifar_resnet56 is short for model.name=cifar_resnet56
        _set_dotted(data, key, value)
    config = TrainConfig.from_dict(data)
    check_config(config, check_data)
    return config


def _parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load``, its multi-line error folded into one line that names ``what``.

    ``safe_load`` builds only plain values: a tag such as ``!!python/object/apply:os.system`` is refused, not run.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        hint = "; only plain values are read, no tags" if isinstance(err, yaml.constructor.ConstructorError) else ""
        raise ValueError(f"{what} is not valid YAML: {problem}{at}{hint}") from None


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
        if isinstance(value, dict) and key not in ("options", "head_options"):  # option dicts are one value each
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
        ValueError: a value no run can use (``epochs=0``, ``eval_every=0``, ``data.val_size=0``, ...), or a model
            option with an impossible value.
        FileNotFoundError: a dataset path that does not exist.
    """
    _check_values(cfg)
    if not cfg.init_from:
        model_config(cfg.model.name, **cfg.model.options)
    if check_data:
        check_dataset(cfg.data.dataset)


# Values no run can use, as (key, test, requirement). Without these, some fail only after the dataset is decoded or a
# whole epoch is trained (eval_every=0: ZeroDivisionError; a MixUp alpha <= 0: torch's Beta), and some run and report
# nonsense (epochs=0 writes an untrained model; val_size=0 reports 0.00%; milestones given in steps never decay).
_RULES: list[tuple[str, Callable[[TrainConfig], bool], str]] = [
    ("steps", lambda c: c.steps >= 0, "must be >= 0 (0: train for `epochs`)"),
    ("epochs", lambda c: c.steps > 0 or c.epochs >= 1, "must be >= 1 (or give steps)"),
    ("eval_every", lambda c: c.eval_every >= 1, "must be >= 1: the epochs between validation passes"),
    ("ema_decay", lambda c: 0.0 <= c.ema_decay < 1.0, "must lie in [0, 1) (0: no EMA)"),
    ("data.val_size", lambda c: c.data.val_size > 0, ("leaves no validation images, yet validation runs every "
                                                      "eval_every epochs and at the end: give a fraction in (0, 1) "
                                                      "or a count >= 1")),
    ("data.val_size", lambda c: c.data.val_size < 1 or float(c.data.val_size).is_integer(),
     "must be a fraction in (0, 1) or a whole count of images"),
    ("data.val_size", lambda c: c.data.dataset != "digits" or c.data.val_size + c.data.test_size < 1,
     "and data.test_size must add up to less than 1: digits is split by fractions"),
    ("data.test_size", lambda c: 0.0 <= c.data.test_size < 1.0, "must be a fraction in [0, 1)"),
    ("data.input_size", lambda c: c.data.input_size >= 1, "must be >= 1"),
    ("data.padding", lambda c: c.data.padding >= 0, "must be >= 0"),
    ("data.random_erasing", lambda c: 0.0 <= c.data.random_erasing <= 1.0, "must be a probability in [0, 1]"),
    ("data.mixup_alpha", lambda c: c.data.mixup_alpha > 0, "must be > 0: the Beta distribution's parameter"),
    ("data.cutmix_alpha", lambda c: c.data.cutmix_alpha > 0, "must be > 0: the Beta distribution's parameter"),
    ("data.batch_size", lambda c: c.data.batch_size >= 1, "must be >= 1"),
    ("data.eval_batch_size", lambda c: c.data.eval_batch_size >= 1, "must be >= 1"),
    ("data.workers", lambda c: c.data.workers >= 0, "must be >= 0"),
    ("data.augment", lambda c: c.data.augment is not Augment.LSJ or c.model.head in DETECTION_HEADS,
     (f"is detection's large-scale jitter (boxes and masks move with it): only for model.head "
      f"{', '.join(DETECTION_HEADS)}")),
    ("data.scale_range", lambda c: len(c.data.scale_range) == 2 and 0 < c.data.scale_range[0] <= c.data.scale_range[1],
     "must be [low, high] with 0 < low <= high, e.g. [0.5, 2.0]"),
    ("data.base_size", lambda c: c.data.base_size >= 0, "must be >= 0 (0: images as stored)"),
    ("data.ignore_index", lambda c: c.data.ignore_index >= -1, "must be a label >= 0, or -1 for none"),
    ("optim.lr", lambda c: 0.0 <= c.optim.lr < math.inf, "must be a finite number >= 0"),
    ("optim.momentum", lambda c: 0.0 <= c.optim.momentum < 1.0, "must lie in [0, 1)"),
    ("optim.nesterov", lambda c: not c.optim.nesterov or c.optim.momentum > 0, "needs optim.momentum > 0"),
    ("optim.weight_decay", lambda c: c.optim.weight_decay >= 0, "must be >= 0"),
    ("optim.milestones", lambda c: all(0.0 <= m <= 1.0 for m in c.optim.milestones),
     "must be fractions of the run in [0, 1] (the paper's 32k and 48k of 64k steps: [0.5, 0.75])"),
    ("optim.gamma", lambda c: c.optim.gamma > 0, "must be > 0"),
    ("optim.pct_start", lambda c: 0.0 <= c.optim.pct_start <= 1.0, "must be a fraction of the run in [0, 1]"),
    ("optim.warmup_steps", lambda c: c.optim.warmup_steps >= 0, "must be >= 0"),
    ("optim.label_smoothing", lambda c: 0.0 <= c.optim.label_smoothing < 1.0, "must lie in [0, 1)"),
    ("optim.grad_clip", lambda c: c.optim.grad_clip >= 0, "must be >= 0 (0: no clipping)"),
]  # fmt: skip


def _check_values(cfg: TrainConfig) -> None:
    """Refuse the first value no run can use, in one line naming its key.

    Checked here rather than in the sections' ``__post_init__`` so that the stored config of a finished run (read by
    ``eval`` and ``calibrate``) stays readable even when written before a rule existed.
    """
    for key, ok, requirement in _RULES:
        if not ok(cfg):
            value = functools.reduce(getattr, key.split("."), cfg)
            raise ValueError(f"{key}={_plain(value)!r} {requirement}")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents, 1):
        data = data.setdefault(part, {})
        if not isinstance(data, dict):  # e.g. optim.lr.x=1: optim.lr holds a number
            raise ValueError(f"cannot set {key}: {'.'.join(parents[:depth])}={data!r} is a value, not a section")
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
    if origin is dict and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
        raise ValueError(f"{where}={value!r} must be a mapping with names as keys, e.g. {where}={{key: value}}")
    if origin is tuple:  # tuple[float, ...]: each item as its type, so milestones=abc fails here, not mid-run
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, where) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    # bool is an int to isinstance, but epochs=true is a typo, not 1 epoch
    if hint in (int, float, bool, str) and (not isinstance(value, hint) or isinstance(value, bool) != (hint is bool)):
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
