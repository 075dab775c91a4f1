"""``resnetkit predict (CHECKPOINT | --weights NAME_OR_FILE) IMAGE [IMAGE ...]``: top-k classes for image files."""

from __future__ import annotations

import argparse
import sys

NAME = "predict"
HELP = "top-k classes for image files"
USAGE = "resnetkit predict (CHECKPOINT | --weights NAME_OR_FILE) IMAGE [IMAGE ...]"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a training checkpoint, then images")
    parser.add_argument("--weights", help="weights file or registry name: its own preprocessing; all PATHs are images")
    parser.add_argument("--topk", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    """One line per image; an image that cannot be decoded is a one-line error and exit status 1, the others are
    still predicted."""
    from ..data.folder import ImageDecodeError
    from ..inference import Predictor

    if args.weights:
        predictor, images = Predictor.from_weights(args.weights), args.paths
    else:
        predictor, images = Predictor.from_checkpoint(args.paths[0]), args.paths[1:]
    if not images:
        raise ValueError("no image given")
    failures = 0
    for path in images:
        try:
            prediction = predictor.predict_file(path, topk=args.topk)
        except ImageDecodeError as err:
            print(f"resnetkit predict: error: {err}", file=sys.stderr)
            failures += 1
            continue
        shown = ", ".join(f"{name} {100 * p:.1f}%" for name, p in prediction.top)
        print(f"{path}: {shown}")
    return 1 if failures else 0
