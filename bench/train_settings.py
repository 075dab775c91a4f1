"""Training speed of ``fit`` under each precision and memory format: which settings to pick on this machine.

Trains one model (``cifar_resnet20`` by default, with the ``cifar10_cpu`` recipe; any recipe and overrides) for a
few steps on the same batches with every pair of ``precision`` (fp32, bf16 autocast) and ``channels_last`` (false,
true); the pairs alternate within each repeat and the median images/s of each is reported. Which pair wins depends on the
CPU (oneDNN picks different kernels, and bf16 leans on the CPU's bf16 instructions), so measure before a long run.
Writes a JSON file.

    python bench/train_settings.py --data ../shared/data/cifar10-jpeg-train.zip --steps 40 --repeats 3
    python bench/train_settings.py --model cifar_wrn16_4 --settings "precision=bf16 channels_last=true" \
        --json bench/results/train_speed_cifar_wrn16_4.json   # one model, one setting
    python bench/train_settings.py --recipe balloon_maskrcnn --data ../shared/data/balloon.zip --model resnet18 \
        --steps 10 --repeats 1 --settings "precision=fp32 channels_last=false" "precision=bf16 channels_last=false"
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from itertools import product
from pathlib import Path

import torch

from resnetkit import runtime
from resnetkit.train.config import load_config

from engine_overhead import engine  # bench/engine_overhead.py, beside this file

SETTINGS = [f"precision={p} channels_last={c}" for p, c in product(("fp32", "bf16"), ("false", "true"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg-train.zip")
    parser.add_argument("--recipe", default="cifar10_cpu")
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=SETTINGS, metavar="SETTING",
                        help=f"measure only these (default: all of {SETTINGS})")
    parser.add_argument("--json", default="bench/results/train_settings.json")
    parser.add_argument("overrides", nargs="*", help="further recipe overrides, key=value")
    args = parser.parse_args()
    base = [f"data.dataset={args.data}", f"model.name={args.model}", "progress=false", *args.overrides]
    configs = {setting: load_config(args.recipe, [*base, *setting.split()]) for setting in args.settings}
    runs: dict[str, list[float]] = {setting: [] for setting in args.settings}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, setting in enumerate(args.settings):
                runs[setting].append(engine(configs[setting], args.steps, Path(tmp) / f"run{r}-{i}"))
                print(f"repeat {r + 1}: {setting}: {runs[setting][-1]:.3g} img/s", flush=True)
    settings = [{"setting": s, "images_per_s": statistics.median(v), "runs": v} for s, v in runs.items()]
    batch_size = configs[args.settings[0]].data.batch_size
    result = {"recipe": args.recipe, "model": args.model, "overrides": args.overrides, "batch_size": batch_size,
              "steps": args.steps, "repeats": args.repeats, "hardware": runtime.hardware_name(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "settings": settings}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for row in result["settings"]:
        print(f"{row['setting']:<38} {row['images_per_s']:7.3g} img/s")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
