"""``resnetkit eval MODEL [--data DATASET] [--split SPLIT]``: top-1/top-5, per-class accuracy, confusion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..workflows import evaluate_model

NAME = "eval"
HELP = "evaluate a model: top-1/top-5, per-class accuracy, confusion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file (a run's best.safetensors, converted or published weights, a "
                        "torchvision checkpoint) or a registry name (resnet50.tv2_in1k)")  # fmt: skip
    parser.add_argument("--split", choices=["train", "val", "test"], default=None,
                        help="split of a resnetkit run's data (default: test if the dataset has one, else val)")  # fmt: skip
    parser.add_argument("--data", help="another dataset for a run's model (folder, .zip, cifar10, ...); for other "
                        "weights, the image folder or zip to evaluate on (required)")  # fmt: skip
    parser.add_argument("--json", help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    """Print the report; also write it as JSON if asked."""
    report = evaluate_model(args.model, split=args.split, dataset=args.data)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0
