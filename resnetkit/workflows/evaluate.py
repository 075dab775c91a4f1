"""``resnetkit eval``: a checkpoint's accuracy on a split, rebuilt from the checkpoint alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import runtime
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import TrainConfig
from .data import build_data
from .distributed import World
from .engine import evaluate
from .metrics import ClassificationMeter

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalReport:
    checkpoint: str
    dataset: str
    split: str
    classes: list[str]
    meter: ClassificationMeter

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "dataset": self.dataset,
            "split": self.split,
            **self.meter.summary(),
            "per_class_top1": dict(zip(self.classes, self.meter.per_class_accuracy())),
            "confusion": self.meter.confusion.tolist(),
        }

    def text(self) -> str:
        m = self.meter
        lines = [f"{self.checkpoint} on {self.dataset} [{self.split}], {m.count} images: "
                 f"top-1 {100 * m.top1:.2f}%, top-{m.topk} {100 * m.top5:.2f}%, loss {m.loss:.4f}", "",
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


def evaluate_checkpoint(
    path: str, split: str | None = None, dataset: str | None = None, device: str = "auto", runner: Runner | None = None
) -> EvalReport:
    """Evaluate the checkpoint at ``path`` on ``split`` of its own dataset, rebuilt with the same split seed and
    preprocessing, or of another ``dataset`` with the same classes.

    With ``runner`` (a function from an image batch to logits, e.g. ONNX Runtime running the checkpoint's int8
    export; see :func:`resnetkit.deploy.load_runner`) that function is evaluated on the checkpoint's data instead
    of the checkpoint's own network.
    """
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["train_config"])
    if dataset is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset))
    target = runtime.pick_device(device)
    data = build_data(cfg, target, World(), normalize=(state["normalize"]["mean"], state["normalize"]["std"]))
    splits = data.eval_splits(include_train=True)
    split = split or ("test" if "test" in splits else "val")
    if split not in splits:
        raise ValueError(f"split {split!r} does not exist for {cfg.data.dataset}; choose from {sorted(splits)}")
    if data.classes != state["classes"]:
        raise ValueError(f"the dataset's classes {data.classes[:5]}... differ from the checkpoint's {state['classes'][:5]}...")
    model = model_from_checkpoint(state).to(target) if runner is None else runner
    meter = evaluate(model, splits[split], data.num_classes, target, cfg)
    return EvalReport(str(path), cfg.data.dataset, split, data.classes, meter)


def evaluate_weights(source: str, dataset: str, batch_size: int = 64, workers: int = 2, device: str = "auto") -> EvalReport:
    """Evaluate weights (file or registry name) on an image folder or zip, with the weights' own preprocessing.

    The folder's classes must be the weights' class names, or as many folders as classes in the weights' order
    (ImageNet's ``n01440764``... folders sort into torchvision's class order).
    """
    from ..data.stream import folder_loader
    from ..weights import load_model

    target = runtime.pick_device(device)
    model = load_model(source).to(target)
    meta = model.weights_meta
    loader = folder_loader(dataset, meta.preprocess, batch_size, shuffle=False, workers=workers)
    folders = loader.dataset.classes
    if folders != list(meta.classes) and len(folders) != len(meta.classes):
        raise ValueError(f"{dataset} has {len(folders)} class folders, the weights {len(meta.classes)} classes")
    batches = ((x.to(target), y.to(target)) for x, y in loader)
    meter = evaluate(model, batches, len(meta.classes), target, TrainConfig())
    return EvalReport(str(source), str(dataset), "all", list(meta.classes), meter)

