"""Metrics for the dense tasks, computed as the field's standard tools compute them.

:class:`SegmentationMeter` accumulates a (K, K) confusion matrix (rows = truth, columns = prediction), leaving out
the pixels labelled ``ignore_index``, as torchvision's ``references/segmentation`` and mmsegmentation do. From it:
pixel accuracy (correct / counted pixels), per-class accuracy (TP / truth pixels), per-class IoU
(TP / (TP + FP + FN)) and their means. A class absent from both truth and prediction has no IoU (0 / 0): it is NaN
and left out of the mean, as torchmetrics' ``MulticlassJaccardIndex(average="macro")`` leaves it out; likewise a
class with no truth pixels has no accuracy.

:class:`DetectionMeter` hands the boxes (and masks) to torchmetrics' ``MeanAveragePrecision`` with the pycocotools
backend, so the numbers are the COCO evaluation's own: AP averaged over IoU 0.50:0.95, AP at 0.50 and at 0.75,
per class too. Where COCO has no answer (no ground truth at all) torchmetrics reports -1; these meters report NaN.

Both meters follow :class:`~resnetkit.train.metrics.ClassificationMeter`: ``update`` per batch (the batch's mean
loss optional, averaged weighted by the batch's images), ``summary()`` a flat dict of fractions in [0, 1], and
``main``, the number that picks the best checkpoint (mIoU; box AP at IoU 0.50).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


class _LossMean:
    """Mean of the batch losses given, weighted by each batch's images; NaN when none was given."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.loss_count = 0

    def _add_loss(self, loss: float | None, images: int) -> None:
        if loss is not None:
            self.loss_sum += float(loss) * images
            self.loss_count += images

    @property
    def loss(self) -> float:
        return self.loss_sum / self.loss_count if self.loss_count else math.nan


class SegmentationMeter(_LossMean):
    """Confusion matrix over classes (``ignore_index`` pixels left out) -> mean IoU, pixel accuracy, mean class
    accuracy and per-class IoU, as torchvision's references and mmseg compute them.

    IoU is TP / (TP + FP + FN) per class. A class absent from both prediction and ground truth has no IoU: it is
    NaN in :meth:`per_class` and left out of the mean (and a class without ground-truth pixels has no accuracy).

    Args:
        num_classes: K, the number of classes (labels 0..K-1).
        ignore_index: the label of pixels that count nowhere (void, borders).
        class_names: K names for :meth:`per_class`; ``"0"``, ``"1"``, ... by default.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # rows: truth, columns: predicted

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: float | None = None) -> None:
        """Add a batch: ``logits`` (B, K, H, W) (or a torchvision model's ``{"out": ...}``), or predicted labels
        (B, H, W) int; ``targets`` (B, H, W) int with ``ignore_index``; ``loss`` the batch mean."""
        if isinstance(logits, Mapping):
            logits = logits["out"]
        # counted where the logits are: only the (K, K) counts travel to the CPU, not (B, K, H, W) scores
        predicted = logits.detach().argmax(1) if logits.is_floating_point() else logits.detach().long()
        targets = targets.detach().to(predicted.device).long()
        if predicted.shape != targets.shape:
            raise ValueError(f"predictions {tuple(predicted.shape)} and targets {tuple(targets.shape)} differ in shape")
        keep = targets != self.ignore_index
        truth, guess = targets[keep], predicted[keep]
        if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= self.num_classes):
            raise ValueError(f"target labels must be 0..{self.num_classes - 1} or {self.ignore_index} (ignored), "
                             f"got {int(truth.min())}..{int(truth.max())}")  # fmt: skip
        k = self.num_classes
        self.confusion += torch.bincount(truth * k + guess, minlength=k * k).view(k, k).cpu()
        self._add_loss(loss, len(targets))

    def iou(self) -> torch.Tensor:
        """(K,) float64 IoU per class; NaN for a class absent from both truth and prediction."""
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        return tp / union  # 0 / 0 is NaN: the class is nowhere

    def class_accuracy(self) -> torch.Tensor:
        """(K,) float64 recall per class (TP / truth pixels); NaN for a class with no truth pixels."""
        return self.confusion.diag().double() / self.confusion.sum(1).double()

    @property
    def miou(self) -> float:
        return _nanmean(self.iou())

    @property
    def pixel_acc(self) -> float:
        total = int(self.confusion.sum())
        return int(self.confusion.diag().sum()) / total if total else math.nan

    @property
    def mean_acc(self) -> float:
        return _nanmean(self.class_accuracy())

    @property
    def main(self) -> float:
        """Mean IoU: what picks the best checkpoint."""
        return self.miou

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, "miou": self.miou, "pixel_acc": self.pixel_acc, "mean_acc": self.mean_acc}

    def details(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per-class results for ``summary.json``."""
        return {"per_class": self.per_class()}

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{class_name: {"iou": ..., "acc": ...}}`` for every class (NaN where undefined)."""
        return {name: {"iou": float(iou), "acc": float(acc)}
                for name, iou, acc in zip(self.class_names, self.iou(), self.class_accuracy())}  # fmt: skip


class DetectionMeter(_LossMean):
    """COCO box (and mask) AP through torchmetrics' ``MeanAveragePrecision`` (backend pycocotools), per class too.

    Args:
        class_names: torchvision's convention, ``class_names[0] == "__background__"`` and label k is
            ``class_names[k]``.
        masks: also evaluate instance masks (Mask R-CNN): segm AP beside box AP.
    """

    def __init__(self, class_names: list[str], masks: bool = False):
        super().__init__()
        if not class_names or class_names[0] != "__background__":
            raise ValueError(f'class_names must start with "__background__" (label 0), got {class_names[:1]}')
        from torchmetrics.detection import MeanAveragePrecision  # loads pycocotools: only where detection is scored

        self.class_names = list(class_names)
        self.masks = masks
        self.iou_types = ("bbox", "segm") if masks else ("bbox",)
        # the engine scores the whole val set in one process: torchmetrics' default all_gather at compute() under
        # torchrun would wait for processes that are already training the next epoch (a deadlock)
        self.metric = MeanAveragePrecision(iou_type=self.iou_types, class_metrics=True, backend="pycocotools",
                                           sync_on_compute=False)  # fmt: skip
        self._result: dict[str, torch.Tensor] | None = None
        self.count = 0  # images seen

    @torch.no_grad()
    def update(self, predictions: list[dict], targets: list[dict], loss: float | None = None) -> None:
        """Add a batch: torchvision detector outputs (``boxes`` XYXY, ``scores``, ``labels``, and ``masks``
        (N, 1, H, W) probabilities, cut at 0.5) and their targets (``boxes``, ``labels``, ``masks`` (N, H, W))."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        preds = [self._entry(p, ("boxes", "scores", "labels")) for p in predictions]
        truths = [self._entry(t, ("boxes", "labels")) for t in targets]
        self.metric.update(preds, truths)
        self._result = None
        self.count += len(targets)
        self._add_loss(loss, len(targets))

    def _entry(self, item: dict, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
        entry = {key: item[key].detach().cpu() for key in keys}
        if self.masks:
            masks = item["masks"].detach()
            if masks.dim() == 4:  # (N, 1, H, W) as Mask R-CNN predicts them
                masks = masks[:, 0]
            entry["masks"] = (masks > 0.5 if masks.is_floating_point() else masks.bool()).cpu()  # cut, then moved
        return entry

    def _key(self, kind: str, key: str) -> str:
        """torchmetrics prefixes its keys with the IoU type only when it evaluates more than one."""
        return f"{kind}_{key}" if len(self.iou_types) > 1 else key

    def _compute(self) -> dict[str, torch.Tensor]:
        if self._result is None:  # nothing seen yet: no numbers (torchmetrics would warn and report zeros)
            self._result = self.metric.compute() if self.count else {"classes": torch.zeros(0, dtype=torch.int64)}
        return self._result

    def summary(self) -> dict[str, float]:
        """``loss``, ``bbox_map`` (IoU 0.50:0.95), ``bbox_map50``, ``bbox_map75`` (and ``segm_*`` with masks)."""
        result, out = self._compute(), {"loss": self.loss}
        for kind in self.iou_types:
            for name, key in (("map", "map"), ("map50", "map_50"), ("map75", "map_75")):
                out[f"{kind}_{name}"] = _defined(float(result.get(self._key(kind, key), -1)))
        return out

    def details(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per-class results for ``summary.json``."""
        return {"per_class": self.per_class()}

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{class_name: {"bbox_ap": ..., "segm_ap": ...}}`` for every foreground class; NaN for a class with no
        ground truth (COCO has no AP for it)."""
        result = self._compute()
        seen = [int(c) for c in result["classes"].reshape(-1)]
        table = {name: {f"{kind}_ap": math.nan for kind in self.iou_types} for name in self.class_names[1:]}
        for kind in self.iou_types:
            per_class = result.get(self._key(kind, "map_per_class"), torch.zeros(0))
            for label, ap in zip(seen, per_class.reshape(-1).tolist()):
                name = self.class_names[label] if 0 < label < len(self.class_names) else str(label)
                table.setdefault(name, {f"{k}_ap": math.nan for k in self.iou_types})[f"{kind}_ap"] = _defined(ap)
        return table

    @property
    def main(self) -> float:
        """Box AP at IoU 0.50: what picks the best checkpoint."""
        return self.summary()["bbox_map50"]


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~values.isnan()]
    return float(defined.mean()) if defined.numel() else math.nan


def _defined(value: float) -> float:
    """torchmetrics' -1 (no ground truth to score against) as NaN."""
    return math.nan if value < 0 else value
