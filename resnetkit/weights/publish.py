"""Publish a finished training run as shipped weights: ``weights/files/<arch>.<tag>.safetensors`` plus its entry
in ``weights/files/manifest.json``, which the registry reads, so ``create_model(arch, pretrained=True)`` loads
them offline.

The published tensors are the run's final weights (``last.pt``, EMA when the run kept one), not the epoch with
the best validation score: choosing the epoch on the validation split and then reporting that split's accuracy
would flatter the number. The metadata holds what the reproduction issue asks for: the recipe and its overrides,
the exact command, epochs, hardware, wall time (the sum of the epoch times over every resumed session), the
validation accuracy on the held-out split and the SHA-256 of the tensors (inside the file) and of the file
(in the manifest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.download import file_digest
from ..train.checkpoint import LAST, atomic_write, load_checkpoint, model_from_checkpoint
from .format import Metric, Preprocess, WeightsMeta, save_weights
from .registry import MANIFEST, SHIPPED, entry_from_dict

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
        run_dir: a finished ``resnetkit train`` output folder (``last.pt``, ``log.jsonl``).
        tag: the weights' tag; the registry name becomes ``<arch>.<tag>``.
        command: the command that trained it, as a user would type it.
        hardware: what it was trained on (e.g. ``runtime.hardware_name()``).
        files: the folder of shipped weights (the package's own by default).

    Returns:
        The manifest entry written.
    """
    run_dir, files = Path(run_dir), Path(files)
    state = load_checkpoint(run_dir / LAST)
    record, config = state["metrics"], state["train_config"]
    if "val_top1" not in record:
        raise ValueError(f"{run_dir / LAST} has no validation accuracy for its last epoch; evaluate every epoch")
    model = model_from_checkpoint(state)
    arch = state["model_name"]
    metric = Metric(_dataset_name(config["data"]["dataset"]), _split_name(config["data"]), 100 * record["val_top1"],
                    100 * record["val_top5"] if "val_top5" in record else None)  # fmt: skip
    size = state["normalize"]["input_size"]
    preprocess = Preprocess(size, size, mean=state["normalize"]["mean"], std=state["normalize"]["std"])
    extra = {"epochs": state["epoch"], "steps": state["step"], "hardware": hardware, "command": command,
             "wall_time_s": round(run_wall_time(run_dir, state["epoch"]), 1), "train_config": config}  # fmt: skip
    meta = WeightsMeta(arch, model.config, preprocess, tuple(state["classes"]), (metric,), _recipe(config),
                       source=f"resnetkit training run {run_dir.name}", extra=extra)  # fmt: skip
    filename = f"{arch}.{tag}.safetensors"
    save_weights(files / filename, model, meta)
    entry = {"arch": arch, "tag": tag, "filename": filename, "sha256": file_digest(files / filename, "sha256"),
             "preprocess": {"crop_size": size, "resize_size": size, "mean": list(preprocess.mean),
                            "std": list(preprocess.std)},
             "metrics": [metric.__dict__], "num_params": sum(p.numel() for p in model.parameters()),
             "file_mb": round((files / filename).stat().st_size / 1e6, 2), "recipe": meta.recipe}  # fmt: skip
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


def _split_name(data: dict[str, Any]) -> str:
    return f"val ({int(data['val_size'])} held out, split_seed {data['split_seed']})"


def _recipe(config: dict[str, Any]) -> str:
    optim = config["optim"]
    length = f"{config['steps']} steps" if config.get("steps") else f"{config['epochs']} epochs"
    recipe = (f"SGD lr {optim['lr']} ({optim['schedule']}), momentum {optim['momentum']}, wd {optim['weight_decay']}, "
              f"batch {config['data']['batch_size']}, {length}, {config['data']['augment']} augmentation")  # fmt: skip
    precision = config.get("precision", "fp32")
    return recipe if precision == "fp32" else f"{recipe}, {precision} autocast"
