"""``resnetkit export CKPT`` and ``resnetkit bench MODEL``. Export: a training checkpoint to ONNX, TorchScript or a torch.export program, parity-checked;
with ``--int8``, to static int8 ONNX calibrated on the checkpoint's own training images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from torch import nn

from ..models import create_model
from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from .bench import BenchSettings, Route, available_routes, bench, format_results, machine_note
from .export import EXPORTERS, Format, ParityError, ParityReport, default_input_size, sample_images
from .fuse import fuse_model, norm_names
from .quantize import Calibration, Int8ParityReport, calibration_images, export_int8

PARITY_BATCH = 8  # images in the parity check (plus one single-image batch)
INT8_CHECK_IMAGES = 64  # held-out training images the int8 check runs: one top-1 flip is 1.5%, the pass mark 95%


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint``; print the parity line; 0 if it passes (within ``args.atol`` of eager, or for
    ``--int8`` enough top-1 agreement), 1 if not."""
    fmt = Format(args.format)
    if args.int8 and fmt is not Format.ONNX:
        raise ValueError(f"--int8 writes ONNX (run by ONNX Runtime); it does not work with --format {fmt.value}")
    if args.data and not args.int8:
        raise ValueError("--data chooses the calibration images of --int8; add --int8")
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state).eval()
    exported = model
    if args.fuse:
        exported = fuse_model(model)
        before, after = len(norm_names(model)), len(norm_names(exported))
        print(f"fused {before - after} of {before} BatchNorm layers into their convolutions")
    path = Path(args.out) if args.out else default_export_path(args.checkpoint, fmt, args.fuse, args.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.int8:
            report = _export_int8(args, state, model, exported, path)
        else:
            norm = state["normalize"]
            inputs = sample_images(PARITY_BATCH, norm["input_size"], len(norm["mean"]), norm["mean"], norm["std"])
            options = {"opset": args.opset} if fmt is Format.ONNX else {}
            report = EXPORTERS[fmt](exported, path, reference=model, inputs=inputs, atol=args.atol, **options)
    except ParityError as err:
        print(err.report.line())
        print(f"resnetkit export: error: {path} does not match the eager model ({_shortfall(err.report)})",
              file=sys.stderr)  # fmt: skip
        return 1
    print(report.line())
    return 0


def default_export_path(checkpoint: str | Path, fmt: Format, fused: bool, int8: bool = False) -> Path:
    """Beside the checkpoint: ``best.pt`` -> ``best.onnx``, ``best-fused.pt2``, ``best-fused-int8.onnx``, ..."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ("-fused" if fused else "") + ("-int8" if int8 else "") + fmt.suffix)


def _export_int8(args: argparse.Namespace, state: dict, model: nn.Module, exported: nn.Module, path: Path):
    """Calibrate on the first N training images, check on the next :data:`INT8_CHECK_IMAGES`."""
    count = args.calibration_images
    if count < 2:
        raise ValueError(f"--calibration-images must be at least 2 (a few hundred in real use), got {count}")
    images = calibration_images(state, count + INT8_CHECK_IMAGES, dataset=args.data)
    calibration, held_out = images[:count], images[count:]
    dataset = args.data or state["train_config"]["data"]["dataset"]
    if len(held_out) < 2:
        raise ValueError(f"{dataset} has {len(images)} training images, too few to calibrate on {count} and check "
                         f"on {INT8_CHECK_IMAGES} more; lower --calibration-images")  # fmt: skip
    print(f"calibrating on {count} training images of {dataset} ({args.calibration}), "
          f"checking on the next {len(held_out)}")  # fmt: skip
    return export_int8(exported, path, calibration, reference=model, inputs=held_out,
                       method=Calibration(args.calibration), atol=args.atol, opset=args.opset)  # fmt: skip


def _shortfall(report: ParityReport) -> str:
    if isinstance(report, Int8ParityReport):
        return f"top-1 agreement {report.top1_agreement:.1%} < {report.min_top1_agreement:.0%}, or non-finite outputs"
    return f"max |diff| {report.max_abs_diff:.2e} > atol {report.atol:.0e}"


def cmd_bench(args: argparse.Namespace) -> int:
    """Time ``args.model`` (a registry name or a training checkpoint) along the chosen routes; table and JSON."""
    routes = parse_routes(args.routes)
    model, input_size, calibration = _bench_model(args)
    settings = BenchSettings(input_size=args.input_size or input_size, batch=args.batch_size, repeats=args.repeats,
                             warmup=args.warmup, threads=args.threads, calibration=calibration)  # fmt: skip
    results = bench(model, routes, settings, progress=sys.stderr.isatty())
    print(format_results(results))
    print(f"\nmedian of {args.repeats} calls after {args.warmup} warm-up calls; "
          f"{machine_note(args.threads or torch.get_num_threads())}")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def parse_routes(text: str) -> list[Route]:
    """``"all"`` (every installed route) or comma-separated route names."""
    if text == "all":
        return available_routes()
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = {route.value: route for route in Route}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown route {unknown[0]!r}; choose from all, {', '.join(known)}")
    return [known[name] for name in names]


def _bench_model(args: argparse.Namespace) -> tuple[torch.nn.Module, int, torch.Tensor | None]:
    """The network, its input size and int8 calibration images: real training images for a checkpoint."""
    if Path(args.model).is_file():
        state = load_checkpoint(args.model)
        calibration = None
        if args.routes == "all" or "int8" in args.routes:
            calibration = calibration_images(state, args.calibration_images)
        return model_from_checkpoint(state).eval(), state["normalize"]["input_size"], calibration
    model = create_model(args.model).eval()  # random weights: the speed of a network does not depend on them
    return model, default_input_size(model), None
