"""``resnetkit eval``: a model's accuracy, on its own run's split (rebuilt from the file alone) or on a folder."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import runtime
from ..data.stream import folder_loader
from ..models import ModelRecord
from ..tasks.checkpoints import TASK_WEIGHTS
from ..tasks.predict import is_task_file
from ..tasks.training import load_task_model, task_for
from ..train.config import TrainConfig
from ..train.data import build_data
from ..train.distributed import World
from ..train.engine import evaluate
from ..train.metrics import ClassificationMeter
from ..weights import load_model

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalReport:
    checkpoint: str
    dataset: str
    split: str
    classes: list[str]
    meter: ClassificationMeter
    skipped: int = 0  # undecodable images left out (each reported once as it was met)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "dataset": self.dataset,
            "split": self.split,
            **self.meter.summary(),
            "skipped_images": self.skipped,
            "per_class_top1": dict(zip(self.classes, self.meter.per_class_accuracy())),
            "confusion": self.meter.confusion.tolist(),
        }

    def text(self) -> str:
        m = self.meter
        lines = [f"{self.checkpoint} on {self.dataset} [{self.split}], {m.count} images: "
                 f"top-1 {100 * m.top1:.2f}%, top-{m.topk} {100 * m.top5:.2f}%, loss {m.loss:.4f}"
                 + (f" ({self.skipped} undecodable image(s) skipped)" if self.skipped else ""), "",
                 "per-class top-1:"]  # fmt: skip
        width = max(len(c) for c in self.classes)
        lines += [f"  {c:<{width}}  {100 * a:6.2f}%" for c, a in zip(self.classes, m.per_class_accuracy())]
        if len(self.classes) <= 20:
            lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
            cell = max(len(str(int(m.confusion.max()))), 3)
            lines.append(" " * (width + 2) + " ".join(f"{c[:cell]:>{cell}}" for c in self.classes))
            for name, row in zip(self.classes, m.confusion.tolist()):
                lines.append(f"  {name:<{width}}" + " ".join(f"{v:>{cell}}" for v in row))
        return "\n".join(lines)


def evaluate_model(
    source: str, split: str | None = None, dataset: str | None = None, device: str = "auto",
    runner: Runner | None = None, batch_size: int = 64, workers: int = 2,
) -> EvalReport:  # fmt: skip
    """Evaluate a model file or registry name.

    A file written by a resnetkit run knows its training data: it is evaluated on ``split`` of that dataset (or of
    another ``dataset`` with the same classes), rebuilt with the same split seed and normalisation. Any other
    weights need ``dataset``, an image folder or zip, evaluated whole with the weights' own preprocessing.

    Args:
        source: a model file or registry name.
        split: ``train``, ``val`` or ``test`` of a run's data (default: test if the dataset has one, else val).
        dataset: another dataset (a run's) or the folder to evaluate on (other weights).
        device: ``auto``, ``cpu``, ``cuda``, ...
        runner: evaluate this function from image batches to logits (e.g. ONNX Runtime running the model's
            int8 export; see :func:`resnetkit.deploy.load_runner`) instead of the model itself.
        batch_size: images per batch on a folder.
        workers: DataLoader workers on a folder.
    """
    target = runtime.pick_device(device)
    if is_task_file(source):
        return evaluate_task_model(source, split, dataset, target)
    model = load_model(source).to(target)
    record: ModelRecord = model.record
    network = model if runner is None else runner
    if record.train_config:
        return _evaluate_run(source, record, network, split, dataset, target)
    if not dataset:
        raise ValueError(f"{source} does not say what data it was trained on; give the images to evaluate on "
                         "(--data FOLDER_OR_ZIP)")  # fmt: skip
    if split is not None:
        raise ValueError(f"{source} was not trained by resnetkit, so it has no splits; --data {dataset} is used whole")
    return _evaluate_folder(source, record, network, dataset, target, batch_size, workers)


def _evaluate_run(source, record: ModelRecord, network, split, dataset, target) -> EvalReport:
    cfg = TrainConfig.from_dict(record.train_config)
    if dataset is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    data = build_data(cfg, target, World(), normalize=(record.preprocess.mean, record.preprocess.std))
    splits = data.eval_splits(include_train=True)
    split = split or ("test" if "test" in splits else "val")
    if split not in splits:
        raise ValueError(f"split {split!r} does not exist for {cfg.data.dataset}; choose from {sorted(splits)}")
    if data.classes != list(record.classes):
        raise ValueError(f"the dataset's classes {data.classes[:5]}... differ from the model's {list(record.classes)[:5]}...")
    meter = _checked(evaluate(network, splits[split], data.num_classes, target, cfg), source)
    return EvalReport(str(source), cfg.data.dataset, split, data.classes, meter, data.skipped(split))


def _evaluate_folder(source, record: ModelRecord, network, dataset, target, batch_size, workers) -> EvalReport:
    """The whole folder. Its classes must be the weights' class names, or as many folders as classes in the
    weights' order (ImageNet's ``n01440764``... folders sort into torchvision's class order)."""
    loader = folder_loader(dataset, record.preprocess, batch_size, shuffle=False, workers=workers)
    folders = loader.dataset.classes
    if folders != list(record.classes) and len(folders) != len(record.classes):
        raise ValueError(f"{dataset} has {len(folders)} class folders, the weights {len(record.classes)} classes")
    batches = ((x.to(target), y.to(target)) for x, y in loader)
    meter = _checked(evaluate(network, batches, len(record.classes), target, TrainConfig()), source)
    return EvalReport(str(source), str(dataset), "all", list(record.classes), meter, loader.skipped)


def _checked(meter: ClassificationMeter, source: str) -> ClassificationMeter:
    """The meter, unless the model's outputs were not finite: a broken model is an error, not an accuracy."""
    if not math.isfinite(meter.loss):
        raise ValueError(f"{source}: the model's outputs are not finite (NaN or inf): its weights are broken")
    return meter


@dataclass
class TaskReport:
    """A task model's metrics on the val split of its run's data: mean IoU (segmentation), COCO AP (detection),
    top-1 over clips (video) or the depth errors (depth), with the per-class results where the task has them."""

    checkpoint: str
    dataset: str
    split: str
    task: str
    summary: dict[str, float]
    details: dict[str, Any]
    classes: list[str]
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "dataset": self.dataset, "split": self.split, "task": self.task,
                "images": self.images, **self.summary, **self.details}  # fmt: skip

    def text(self) -> str:
        lines = [f"{self.checkpoint} on {self.dataset} [{self.split}], {self.images} {self._unit}: {self._headline()}"]
        per_class = self._per_class()
        if per_class:
            width = max(len(c) for c in per_class)
            lines += ["", "per class:"]
            lines += [f"  {name:<{width}}  " + "  ".join(f"{key} {100 * v:6.2f}%" for key, v in values.items())
                      for name, values in per_class.items()]  # fmt: skip
        return "\n".join(lines)

    @property
    def _unit(self) -> str:
        return "clips" if self.task == "video" else "images"

    def _headline(self) -> str:
        s = self.summary
        if self.task == "segmentation":
            return (f"mean IoU {100 * s['miou']:.2f}%, pixel accuracy {100 * s['pixel_acc']:.2f}%, "
                    f"mean class accuracy {100 * s['mean_acc']:.2f}%")  # fmt: skip
        if self.task == "detection":
            kinds = ["bbox"] + (["segm"] if "segm_map" in s else [])
            return "; ".join(f"{k} AP {100 * s[f'{k}_map']:.1f}, AP50 {100 * s[f'{k}_map50']:.1f}, "
                             f"AP75 {100 * s[f'{k}_map75']:.1f}" for k in kinds)  # fmt: skip
        if self.task == "video":
            return f"top-1 {100 * s['top1']:.2f}%, top-5 {100 * s['top5']:.2f}%, loss {s['loss']:.4f}"
        shown = [k for k in s if k not in ("count", "images", "loss")] + [k for k in ("loss",) if k in s]
        return ", ".join(f"{k} {s[k]:.4f}" for k in shown)

    def _per_class(self) -> dict[str, dict[str, float]]:
        if "per_class" in self.details:
            return self.details["per_class"]
        if "per_class_top1" in self.details:
            return {c: {"top-1": a} for c, a in zip(self.classes, self.details["per_class_top1"])}
        return {}


def evaluate_task_model(source: str, split: str | None, dataset: str | None, device: torch.device) -> TaskReport:
    """A task model file (detection, segmentation, video, depth) on the val split of its run's data, rebuilt from
    the file's training config (or on the val split of ``dataset``, another dataset in the same layout)."""
    if source in TASK_WEIGHTS and TASK_WEIGHTS[source].url is not None:  # refused before any download
        raise ValueError(f"{source} is torchvision's checkpoint, not a resnetkit run: it holds no training config to "
                         "rebuild its data from, so eval cannot score it (predict, export and bench take it)")
    model = load_task_model(source).to(device)
    cfg = TrainConfig.from_dict(model.record.train_config)
    if dataset is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    task = task_for(cfg)
    if split not in (None, "val"):
        raise ValueError(f"a {task.name} model is evaluated on its run's val split (or on --data); got --split {split}")
    data = task.build_data(cfg, device, World())
    meter = task.evaluate(model, data.val_batches(), data, cfg)
    return TaskReport(str(source), cfg.data.dataset, "val", task.name, meter.summary(), meter.details(),
                      list(data.classes), len(data.evals["val"].dataset))  # fmt: skip
