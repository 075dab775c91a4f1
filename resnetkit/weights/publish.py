"""Publish a finished training run as shipped weights: ``weights/files/<arch>.<tag>.safetensors`` plus its entry
in ``weights/files/manifest.json``, which the registry reads, so ``create_model(arch, pretrained=True)`` loads
them offline.

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
from .registry import MANIFEST, SHIPPED, entry_from_dict

RUN_WEIGHTS = "weights.safetensors"  # what a finished ``resnetkit train`` run leaves: its final weights

DATASET_NOTES = {"cifar10-jpeg-train.zip": "CIFAR-10 (JPEG re-encoded training images)"}


def publish_run(
    run_dir: str | Path,
    tag: str,
    command: str,
    hardware: str,
    *,
    files: str | Path = SHIPPED,
) -> dict[str, Any]:
    """Write a run's final weights and metadata into ``files`` and add (or replace) its manifest entry.

    Args:
        run_dir: a finished ``resnetkit train`` output folder (``weights.safetensors``, ``log.jsonl``).
        tag: the weights' tag; the registry name becomes ``<arch>.<tag>``.
        command: the command that trained it, as a user would type it.
        hardware: what it was trained on (e.g. ``runtime.hardware_name()``).
        files: the folder of shipped weights (the package's own by default).

    Returns:
        The manifest entry written.
    """
    run_dir, files = Path(run_dir), Path(files)
    tensors, record = read_weights(run_dir / RUN_WEIGHTS)
    if not record.metrics:
        raise ValueError(f"{run_dir / RUN_WEIGHTS} has no validation accuracy for its last epoch; evaluate every epoch")
    metrics = tuple(dataclasses.replace(m, dataset=_dataset_name(m.dataset)) for m in record.metrics)
    epochs = record.extra["epoch"]
    extra = {"epochs": epochs, "steps": record.extra["step"], "hardware": hardware, "command": command,
             "wall_time_s": round(run_wall_time(run_dir, epochs), 1)}  # fmt: skip
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
    _update_manifest(files / MANIFEST.name, entry)
    return entry


def run_wall_time(run_dir: Path, epochs: int) -> float:
    """Seconds of training over the first ``epochs`` epochs of ``log.jsonl``, summed across resumed sessions."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    latest = {r["epoch"]: r for r in records if "epoch_time_s" in r}  # a resumed epoch counts once, its last run
    return sum(r["epoch_time_s"] for epoch, r in latest.items() if epoch <= epochs)


def _update_manifest(path: Path, entry: dict[str, Any]) -> None:
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries = [e for e in entries if (e["arch"], e["tag"]) != (entry["arch"], entry["tag"])] + [entry]
    entries.sort(key=lambda e: (e["arch"], e["tag"]))
    atomic_write(path, lambda f: f.write((json.dumps(entries, indent=2) + "\n").encode()))


def _dataset_name(dataset: str) -> str:
    return DATASET_NOTES.get(Path(dataset).name, Path(dataset).name)
