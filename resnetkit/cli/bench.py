"""``resnetkit bench MODEL``: latency and throughput of every inference route, with MACs, params and file size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..deploy.bench import (
    BenchSettings,
    Route,
    available_routes,
    bench,
    format_results,
    machine_note,
    unavailable_reason,
)
from ..deploy.export import default_input_size
from ..models import create_model
from ..weights import load_model
from ..workflows import calibration_images

NAME = "bench"
HELP = ("latency and throughput of every inference route (eager, fused, compiled, ONNX Runtime, OpenVINO, LiteRT, "
        "int8), with MACs, params and file size")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model name (random weights: speed does not depend on them), a weights name "
                        "(resnet50.tv2_in1k) or a model file")  # fmt: skip
    parser.add_argument("--routes", default="all", help="comma-separated: " + ",".join(r.value for r in Route)
                        + " (default: all installed)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32, help="the larger batch, for throughput (default: 32)")
    parser.add_argument("--input-size", type=int, help="image side (default: the weights', 32 for CIFAR "
                        "stems, 224 otherwise)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=0, help="threads for every runtime (default: all cores)")
    parser.add_argument("--calibration-images", type=int, default=512, help="int8 calibration images (a resnetkit "
                        "run's model; random images otherwise)")  # fmt: skip
    parser.add_argument("--image-size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="a detector's input image (default: 480 640)")
    parser.add_argument("--json", help="also write the results as a JSON list to this file")


def run(args: argparse.Namespace) -> int:
    """Time ``args.model`` (a model or weights name, or a model file) along the chosen routes; table and JSON."""
    routes = parse_routes(args.routes)
    model, input_size, calibration = _bench_model(args, routes)
    settings = BenchSettings(input_size=args.input_size or input_size, batch=args.batch_size, repeats=args.repeats,
                             warmup=args.warmup, threads=args.threads, calibration=calibration)  # fmt: skip
    if _is_detector(model):
        results = _bench_detector(model, routes, settings, tuple(args.image_size), args.routes)
    else:
        results = bench(model, routes, settings, progress=sys.stderr.isatty())
    print(format_results(results))
    print(f"\nmedian of {args.repeats} calls after {args.warmup} warm-up calls; "
          f"{machine_note(args.threads or torch.get_num_threads())}")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _is_detector(model: torch.nn.Module) -> bool:
    from ..tasks.training import HEADS

    task = getattr(getattr(model, "record", None), "task", None)
    return bool(task) and HEADS[task["head"]][0] == "detection"


def _bench_detector(model, routes: list[Route], settings: BenchSettings, size: tuple[int, int], asked: str):
    """A detector takes one image of any size per call: eager and ONNX Runtime (the routes its export supports)."""
    import tempfile

    from ..workflows.bench import bench_detector

    supported = (Route.EAGER, Route.ONNXRUNTIME)
    if asked != "all" and any(route not in supported for route in routes):
        raise ValueError("a detector runs on the eager and onnxruntime routes (its ONNX graph is the legacy "
                         "exporter's, which the other runtimes and int8 do not take)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        return bench_detector(model, size, settings, Path(tmp), tuple(r.value for r in routes if r in supported))


def parse_routes(text: str) -> list[Route]:
    """``"all"`` (every installed route) or comma-separated route names."""
    if text == "all":
        return available_routes()
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {route.value: route for route in Route}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown route {unknown[0]!r}; choose from all, {', '.join(known)}")
    for name in names:
        reason = unavailable_reason(known[name])
        if reason:
            raise ValueError(f"route {name!r} cannot run here: {reason}")
    return [known[name] for name in names]


def _bench_model(args: argparse.Namespace, routes: list[Route]) -> tuple[torch.nn.Module, int, torch.Tensor | None]:
    """The network, its input size and int8 calibration images: real training images for a model trained by
    resnetkit, read only when an int8 route will use them."""
    from ..tasks.predict import TaskPredictor, is_task_file

    if is_task_file(args.model):  # a segmentation model: its logits, at its training scale; a detector as it is
        predictor = TaskPredictor.load(args.model)
        if predictor.kind == "detection":
            return predictor.model, 0, None
        if any(route.is_int8 for route in routes):
            raise ValueError("resnetkit bench times segmentation models on fp32 routes; int8 is for classifiers")
        from ..tasks.export import SegmentationLogits

        record = predictor.model.record
        return SegmentationLogits(predictor.model), record.task.get("base_size") or record.preprocess.crop_size, None
    if not (Path(args.model).is_file() or "." in args.model):
        model = create_model(args.model).eval()  # random weights: the speed of a network does not depend on them
        return model, default_input_size(model), None
    model = load_model(args.model).eval()
    calibration = None
    if model.record.train_config and any(route.is_int8 for route in routes):
        calibration = calibration_images(model.record, args.calibration_images)
    return model, model.record.preprocess.crop_size, calibration
