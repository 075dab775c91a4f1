"""``resnetkit predict MODEL IMAGE [IMAGE ...]``: top-k classes for image files."""

from __future__ import annotations

import argparse
import sys

from ..data.folder import ImageDecodeError
from ..workflows import Predictor

NAME = "predict"
HELP = "top-k classes for image files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file or registry name; its record gives the preprocessing and classes")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    """One line per image; an image that cannot be decoded is a one-line error and exit status 1, the others are
    still predicted."""
    predictor = Predictor.load(args.model)
    failures = 0
    for path in args.images:
        try:
            prediction = predictor.predict_file(path, topk=args.topk)
        except ImageDecodeError as err:
            print(f"resnetkit predict: error: {err}", file=sys.stderr)
            failures += 1
            continue
        shown = ", ".join(f"{name} {100 * p:.1f}%" for name, p in prediction.top)
        print(f"{path}: {shown}")
    return 1 if failures else 0
