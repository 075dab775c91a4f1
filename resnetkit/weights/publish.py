"""Publish a finished training run as shipped weights: ``weights/files/<arch>.<tag>.safetensors`` plus its entry
in ``weights/files/manifest.json``, which the registry reads, so ``create_model(arch, pretrained=True)`` loads
them offline. A detector's or segmenter's run becomes ``<head>_<arch>.<tag>`` (``deeplabv3_resnet18.camvid_cpu50``)
in ``task_manifest.json``, which ``resnetkit.tasks`` reads beside torchvision's published checkpoints, so
``resnetkit predict deeplabv3_resnet18.camvid_cpu50 street.jpg`` works offline.

The published tensors are the run's final weights (its ``weights.safetensors``: the EMA when the run kept one), not
the epoch with the best validation score: choosing the epoch on the validation split and then reporting that
split's accuracy would flatter the number. The file is the run's own, with provenance added to its record: the
exact command, hardware, wall time (the sum of the epoch times over every resumed session) and the SHA-256 of the
file (in the manifest); the record already holds the recipe, the training config and the validation accuracy on
the held-out split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dataclasses

from ..io import atomic_write, file_digest
from .format import model_with, read_weights, save_weights
from .registry import MANIFEST, SHIPPED, TASK_MANIFEST, entry_from_dict

RUN_WEIGHTS = "weights.safetensors"  # what a finished ``resnetkit train`` run leaves: its final weights

DATASET_NOTES = {"cifar10-jpeg-train.zip": "CIFAR-10 (JPEG re-encoded training images)"}


def publish_run(
    run_dir: str | Path,
    tag: str,
    command: str,
    hardware: str,
    *,
    files: str | Path = SHIPPED,
    half: bool = False,
) -> dict[str, Any]:
    """Write a run's final weights and metadata into ``files`` and add (or replace) its manifest entry.

    Args:
        run_dir: a finished ``resnetkit train`` output folder (``weights.safetensors``, ``log.jsonl``).
        tag: the weights' tag; the registry name becomes ``<arch>.<tag>``.
        command: the command that trained it, as a user would type it.
        hardware: what it was trained on (e.g. ``runtime.hardware_name()``).
        files: the folder of shipped weights (the package's own by default).
        half: store floating-point tensors in float16 (half the file; they load back into float32 models), for
            models too large to ship in float32, such as a detector or segmenter.

    Returns:
        The manifest entry written.
    """
    run_dir, files = Path(run_dir), Path(files)
    tensors, record = read_weights(run_dir / RUN_WEIGHTS)
    epochs = record.extra["epoch"]
    extra = {"epochs": epochs, "steps": record.extra["step"], "hardware": hardware, "command": command,
             "wall_time_s": round(run_wall_time(run_dir, epochs), 1)}  # fmt: skip
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        extra["stored_dtype"] = "float16"
    if record.task:
        return _publish_task_run(run_dir, tag, tensors, record, extra, files)
    if not record.metrics:
        raise ValueError(f"{run_dir / RUN_WEIGHTS} has no validation accuracy for its last epoch; evaluate every epoch")
    metrics = tuple(dataclasses.replace(m, dataset=_dataset_name(m.dataset)) for m in record.metrics)
    record = record.replace(metrics=metrics, source=f"resnetkit training run {run_dir.name}", extra=extra)
    filename = f"{record.arch}.{tag}.safetensors"
    save_weights(files / filename, tensors, record)
    size = record.preprocess.crop_size
    entry = {"arch": record.arch, "tag": tag, "filename": filename, "sha256": file_digest(files / filename, "sha256"),
             "preprocess": {"crop_size": size, "resize_size": record.preprocess.resize_size,
                            "mean": list(record.preprocess.mean), "std": list(record.preprocess.std)},
             "metrics": [dataclasses.asdict(m) for m in metrics],
             "num_params": sum(p.numel() for p in model_with(record, tensors).parameters()),
             "file_mb": round((files / filename).stat().st_size / 1e6, 2), "recipe": record.recipe}  # fmt: skip
    entry_from_dict(entry)  # fail before writing a manifest the registry could not read
    _update_manifest(files / MANIFEST.name, entry, key=("arch", "tag"))
    return entry


def _publish_task_run(run_dir: Path, tag: str, tensors: dict, record: Any, extra: dict, files: Path) -> dict[str, Any]:
    """A detector's or segmenter's run as ``<head>_<arch>.<tag>``: its record keeps the task and the validation
    metrics of its last epoch (``extra["val"]``), the entry in ``task_manifest.json`` their headline numbers."""
    val = {k: _as_published(k, v) for k, v in record.extra.get("val", {}).items()
           if isinstance(v, (int, float)) and k != "loss"}  # fmt: skip
    if not val:
        raise ValueError(f"{run_dir / RUN_WEIGHTS} has no validation metrics for its last epoch; evaluate every epoch")
    name = f"{record.task['head']}_{record.arch}.{tag}"
    dataset = _dataset_name(record.extra.get("dataset", ""))
    record = record.replace(source=f"resnetkit training run {run_dir.name}", extra={**record.extra, **extra})
    filename = f"{name}.safetensors"
    save_weights(files / filename, tensors, record)
    entry = {"name": name, "builder": record.task["head"], "backbone": record.arch, "filename": filename,
             "sha256": file_digest(files / filename, "sha256"), "categories": list(record.classes),
             "metrics": {f"{dataset} val": val}, "num_params": _parameter_count(tensors),
             "file_mb": round((files / filename).stat().st_size / 1e6, 2), "recipe": record.recipe,
             "aux": bool(record.task.get("options", {}).get("aux"))}  # fmt: skip
    _update_manifest(files / TASK_MANIFEST.name, entry, key=("name",))
    return entry


def _as_published(key: str, value: float) -> float:
    """A validation metric as torchvision publishes its checkpoints': mean IoU, pixel accuracy and COCO AP in
    percent (the run records fractions), anything else as it is; rounded to 2 and 4 decimals."""
    percent = key in ("miou", "pixel_acc", "mean_acc") or "_map" in key
    return round(100 * value, 2) if percent else round(value, 4)


def _parameter_count(tensors: dict) -> int:
    """Parameters in a state dict: every tensor but BatchNorm's running statistics and counters."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in tensors.items() if not k.endswith(buffers))


def run_wall_time(run_dir: Path, epochs: int) -> float:
    """Seconds of training over the first ``epochs`` epochs of ``log.jsonl``, summed across resumed sessions."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    latest = {r["epoch"]: r for r in records if "epoch_time_s" in r}  # a resumed epoch counts once, its last run
    return sum(r["epoch_time_s"] for epoch, r in latest.items() if epoch <= epochs)


def _update_manifest(path: Path, entry: dict[str, Any], key: tuple[str, ...]) -> None:
    def identity(e: dict[str, Any]) -> tuple:
        return tuple(e[k] for k in key)

    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if identity(e) != identity(entry)] + [entry]
    entries.sort(key=identity)
    atomic_write(path, lambda f: f.write((json.dumps(entries, indent=2) + "\n").encode()))


def _dataset_name(dataset: str) -> str:
    return DATASET_NOTES.get(Path(dataset).name, Path(dataset).name)
