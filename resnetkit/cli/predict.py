"""``resnetkit predict MODEL IMAGE [IMAGE ...] [--cam OUT.png] [--out DIR]``: top-k classes for image files, and
where in the image the model found the top one (a class activation map); for detection and segmentation models,
the objects or the class of every pixel, drawn on each image with ``--out``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..analysis.cam import METHODS
from ..data.folder import ImageDecodeError
from ..errors import UserError
from ..workflows import Predictor

NAME = "predict"
HELP = "top-k classes for image files; --cam draws where the model found the top one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file or registry name; its record gives the preprocessing and classes")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (folders too, for detection and "
                        "segmentation models)")  # fmt: skip
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--cam", metavar="OUT.png", help="write the image with the class activation map of its top "
                        "class over the part the model sees (one IMAGE)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="detection and segmentation models: write each image annotated "
                        "(boxes, masks or a class overlay with a legend) as DIR/<name>.png and its prediction as "
                        "DIR/<name>.json")  # fmt: skip
    parser.add_argument("--cam-method", choices=list(METHODS), default="gradcam",
                        help="how the map is computed (default: gradcam; scorecam is gradient-free)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """One line per image; an image that cannot be decoded is a one-line error and exit status 1, the others are
    still predicted."""
    from ..tasks.predict import is_task_file

    if is_task_file(args.model):
        return _run_task(args)
    if args.out:
        raise UserError("--out writes annotated images of detection and segmentation models; this is a classifier "
                        "(use --cam OUT.png to see where it looked)")  # fmt: skip
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


def _run_task(args: argparse.Namespace) -> int:
    """Detection or segmentation: one line per image (detections, or the classes' pixel shares) and, with
    ``--out``, an annotated picture and a JSON per image; folders are expanded to their images."""
    from ..data.layout import is_image
    from ..tasks.predict import TaskPredictor

    if args.cam:
        raise UserError("--cam is for classifiers; detection and segmentation models draw their answer with --out DIR")
    predictor = TaskPredictor.load(args.model)
    paths = []
    for item in map(Path, args.images):  # a folder of images; for a video model, a folder is one clip's frames
        images = predictor.kind != "video" and item.is_dir()
        paths += sorted(p for p in item.rglob("*") if p.is_file() and is_image(p.name)) if images else [item]
    failures = 0
    for path in tqdm(paths, desc="predict", unit="image", disable=len(paths) < 2, leave=False):
        try:
            result = predictor.predict_file(path, args.out)
        except ImageDecodeError as err:
            print(f"resnetkit predict: error: {err}", file=sys.stderr)
            failures += 1
            continue
        if "detections" in result:
            shown = ", ".join(f"{d['class']} {100 * d['score']:.0f}%" for d in result["detections"]) or "nothing"
        elif "top5" in result:
            shown = ", ".join(f"{a['class']} {100 * a['probability']:.1f}%" for a in result["top5"])
        elif "depth_m" in result:
            d = result["depth_m"]
            where = f"{args.out}/{path.stem}.png" if args.out else path.with_name(f"{path.stem}_depth.png")
            shown = f"depth {d['min']:.2f}-{d['max']:.2f} m (median {d['median']:.2f}); wrote {where}"
        else:
            shown = ", ".join(f"{name} {100 * share:.1f}%" for name, share in result["pixels"].items())
        print(f"{path}: {shown}")
    if args.out:
        print(f"wrote {len(paths) - failures} prediction(s) to {args.out}/")
    return 1 if failures else 0
