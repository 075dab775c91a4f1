"""Classification metrics accumulated over batches: loss, top-1/top-5, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch


class ClassificationMeter:
    """Accumulates a confusion matrix, top-k hits and summed loss; all on the CPU, in integers where possible."""

    def __init__(self, num_classes: int, topk: int = 5):
        self.num_classes = num_classes
        self.topk = min(topk, num_classes)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # rows: true, columns: predicted
        self.topk_hits = 0
        self.loss_sum = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: float | None = None) -> None:
        """Add a batch; ``loss`` is the batch mean."""
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
        predicted = logits.argmax(1)
        self.confusion += torch.bincount(labels * self.num_classes + predicted, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        top = logits.topk(self.topk, dim=1).indices
        self.topk_hits += int((top == labels[:, None]).any(1).sum())
        if loss is not None:
            self.loss_sum += loss * len(labels)
        self.count += len(labels)

    @property
    def top1(self) -> float:
        return float(self.confusion.diag().sum()) / max(self.count, 1)

    @property
    def top5(self) -> float:
        return self.topk_hits / max(self.count, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(1).clamp(min=1)
        return (self.confusion.diag().float() / totals).tolist()

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count}

    def details(self) -> dict[str, list[float]]:
        """Per-class results for ``summary.json``."""
        return {"per_class_top1": self.per_class_accuracy()}
