"""Engine overhead: images/s of ``fit`` against a bare PyTorch loop on the same model, batch and data.

Both train ``cifar_resnet20`` (channels_last, batch 128, SGD) on the same CIFAR-10 batches, drawn and augmented
by the same DeviceLoader, for the same number of steps; runs alternate (bare, fit, bare, fit, ...) and the
median of each is reported. Writes a JSON file.

    python bench/engine_overhead.py --data ../shared/data/cifar10-jpeg-train.zip --steps 60 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from resnetkit import create_model
from resnetkit.tasks import task_for
from resnetkit.train.config import load_config
from resnetkit.train.data import build_data
from resnetkit.train.distributed import World
from resnetkit.train.engine import fit


def bare_loop(cfg, steps: int) -> float:
    """nanoGPT-style loop: forward, loss, backward, step; images/s over ``steps`` steps."""
    torch.manual_seed(cfg.seed)
    data = build_data(cfg, torch.device("cpu"), World())
    model = create_model(cfg.model.name, num_classes=data.num_classes).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    seen, start = 0, time.perf_counter()
    for i, (x, y) in enumerate(data.train_batches(0)):
        if i == steps:
            break
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def engine(cfg, steps: int, out: Path) -> float:
    """``fit`` for ``steps`` steps (validation only at the end) of the recipe's task; the training images/s."""
    cfg = dataclasses.replace(cfg, steps=steps, out=str(out), eval_every=10**9)
    fit(cfg, task=task_for(cfg))
    return json.loads((out / "summary.json").read_text())["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg-train.zip")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench/results/engine_overhead.json")
    args = parser.parse_args()
    cfg = load_config(None, [f"data.dataset={args.data}", "data.val_size=5000", "data.batch_size=128",
                             "channels_last=true", "model.name=cifar_resnet20", "optim.lr=0.1",
                             "optim.nesterov=true", "optim.weight_decay=5e-4", "optim.schedule=constant"])  # fmt: skip
    bare, engine_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            bare.append(bare_loop(cfg, args.steps))
            engine_runs.append(engine(cfg, args.steps, Path(tmp) / f"run{r}"))
            print(f"repeat {r + 1}: bare {bare[-1]:.0f} img/s, fit {engine_runs[-1]:.0f} img/s")
    result = {
        "model": cfg.model.name, "batch_size": 128, "channels_last": True, "device": "cpu",
        "threads": torch.get_num_threads(), "steps": args.steps, "repeats": args.repeats,
        "bare_images_per_s": statistics.median(bare), "fit_images_per_s": statistics.median(engine_runs),
        "bare_runs": bare, "fit_runs": engine_runs,
    }  # fmt: skip
    result["ratio"] = result["fit_images_per_s"] / result["bare_images_per_s"]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"fit / bare = {result['ratio']:.3f}  ({args.json})")


if __name__ == "__main__":
    main()
