"""``resnetkit eval CKPT`` (or ``--weights NAME_OR_FILE --data FOLDER``): top-1/top-5, per-class accuracy,
confusion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "eval"
HELP = "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", help="training checkpoint (or use --weights)")
    parser.add_argument("--weights", help="weights file or registry name (resnet50.tv2_in1k), with --data")
    parser.add_argument("--split", choices=["train", "val", "test"], default=None,
                        help="split of the training data (default: test if the dataset has one, else val)")  # fmt: skip
    parser.add_argument("--data", help="evaluate on another dataset (folder, .zip, cifar10, ...) instead")
    parser.add_argument("--json", help="also write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    """Print the report of a checkpoint or of weights on a dataset; also write it as JSON if asked."""
    from ..train.evaluation import evaluate_checkpoint, evaluate_weights

    if args.weights:
        if args.checkpoint or not args.data:
            raise ValueError("with --weights, give the dataset as --data FOLDER_OR_ZIP and no checkpoint")
        report = evaluate_weights(args.weights, args.data)
    elif args.checkpoint:
        report = evaluate_checkpoint(args.checkpoint, split=args.split, dataset=args.data)
    else:
        raise ValueError("give a checkpoint, or --weights NAME_OR_FILE --data FOLDER")
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0
