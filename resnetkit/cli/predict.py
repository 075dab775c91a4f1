"""``resnetkit predict MODEL IMAGE [IMAGE ...] [--cam OUT.png]``: top-k classes for image files, and where in the
image the model found the top one (a class activation map)."""

from __future__ import annotations

import argparse
import sys

from ..analysis.cam import METHODS
from ..data.folder import ImageDecodeError
from ..errors import UserError
from ..workflows import Predictor

NAME = "predict"
HELP = "top-k classes for image files; --cam draws where the model found the top one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file or registry name; its record gives the preprocessing and classes")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--cam", metavar="OUT.png", help="write the image with the class activation map of its top "
                        "class over the part the model sees (one IMAGE)")  # fmt: skip
    parser.add_argument("--cam-method", choices=list(METHODS), default="gradcam",
                        help="how the map is computed (default: gradcam; scorecam is gradient-free)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """One line per image; an image that cannot be decoded is a one-line error and exit status 1, the others are
    still predicted."""
    if args.cam and len(args.images) != 1:
        raise UserError(f"--cam draws one image, got {len(args.images)}: run predict once per image")
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
        if args.cam:
            name, p = predictor.save_cam(path, args.cam, args.cam_method)
            print(f"{args.cam}: {args.cam_method} map of {name} ({100 * p:.1f}%)")
    return 1 if failures else 0
