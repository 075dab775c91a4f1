"""What a run writes for people: a per-epoch JSON-lines log, TensorBoard scalars, and a PNG of the curves."""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ..io import atomic_write


class RunLog:
    """Append-only ``log.jsonl`` (one JSON object per epoch) and the same scalars for TensorBoard.

    Args:
        out: the run folder.
        resume: keep the records of earlier sessions; with ``until`` (the epoch the checkpoint was written at), the
            records past it (epochs of a session killed after writing its log line but before its checkpoint) are
            dropped, and the file is written again to match, so a resumed run logs every epoch once.
    """

    def __init__(self, out: Path, resume: bool = False, until: int | None = None):
        self.path = out / "log.jsonl"
        if not resume:
            self.path.unlink(missing_ok=True)
        self.records = read_log(self.path)
        if until is not None:
            self.records = [r for r in self.records if r.get("epoch", 0) <= until]
        if resume:  # written again as read: without a torn last line or the epochs past the checkpoint
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            atomic_write(self.path, lambda f: f.write(text.encode()))
        self._tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                self._tb.add_scalar(key.replace("_", "/", 1), value, record["step"])
        self._tb.flush()

    def close(self) -> None:
        self._tb.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``; a torn last line (a write cut off by a kill) is dropped with a warning, a
    damaged line elsewhere is a one-line error naming the file and line."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path} line {number} is not JSON ({err.msg}); fix or delete that line") from None
            warnings.warn(f"{path}: dropped a torn last line (a write cut off by a kill)", stacklevel=2)
    return records


METRIC_LABELS = {"top1": "top-1 accuracy (%)", "miou": "mean IoU (%)", "bbox_map50": "box AP50 (%)"}


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "", metric: str = "top1") -> Path:
    """Loss and the task's ``metric`` (top-1, mean IoU, box AP50, ...) against epochs: train dashed, validation
    solid."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style, label in (("train_loss", "--", "train"), ("val_loss", "-", "validation")):
        points = [(e, r[key]) for e, r in zip(epochs, records) if math.isfinite(r.get(key, math.nan))]
        if points:  # a detector's validation has no loss (NaN in the log): no line, no legend entry
            ax_loss.plot(*zip(*points), style, label=label)
    for key, style, label in ((f"train_{metric}", "--", "train"), (f"val_{metric}", "-", "validation")):
        points = [(e, 100 * r[key]) for e, r in zip(epochs, records) if math.isfinite(r.get(key, math.nan))]
        if points:
            ax_acc.plot(*zip(*points), style, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel=METRIC_LABELS.get(metric, f"{metric} (%)"))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    # atomically, like the checkpoints: a kill never leaves half a PNG, and a link planted at ``path`` is replaced,
    # not written through
    return atomic_write(path, lambda f: f.write(image.getvalue()))
