"""What a run writes for people: a per-epoch JSON-lines log, TensorBoard scalars, and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    """Append-only ``log.jsonl`` (one JSON object per epoch) and the same scalars for TensorBoard."""

    def __init__(self, out: Path, resume: bool = False):
        self.path = out / "log.jsonl"
        if not resume:
            self.path.unlink(missing_ok=True)
        self.records = read_log(self.path)
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
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss and accuracy against epochs: train dashed, validation solid."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style, label in (("train_loss", "--", "train"), ("val_loss", "-", "validation")):
        points = [(e, r[key]) for e, r in zip(epochs, records) if key in r]
        if points:
            ax_loss.plot(*zip(*points), style, label=label)
    for key, style, label in (("train_top1", "--", "train"), ("val_top1", "-", "validation")):
        points = [(e, 100 * r[key]) for e, r in zip(epochs, records) if key in r]
        if points:
            ax_acc.plot(*zip(*points), style, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
