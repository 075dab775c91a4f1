"""``resnetkit export MODEL``: a model file or registry name to ONNX, TorchScript, a torch.export program, Keras,
LiteRT, Core ML or TensorRT, parity-checked (Core ML: described, since it runs on macOS only; TensorRT: on a CUDA
GPU); with ``--int8``, to int8 ONNX, LiteRT or TensorRT calibrated on the model's own training images (or
``--data``)."""

from __future__ import annotations

import argparse
import enum
import sys
from pathlib import Path

from torch import nn

from ..deploy.export import EXPORTERS, Format, ParityError, ParityReport, sample_images
from ..deploy.fuse import fuse_model, norm_names
from ..deploy.quantize import DEFAULT_CALIBRATION, Calibration, Int8ParityReport, export_int8
from ..models import ResNet
from ..weights import load_model
from ..workflows import calibration_images

NAME = "export"
HELP = "export a model to ONNX, TorchScript, torch.export, Keras, LiteRT, Core ML or TensorRT, checked against eager"
KERAS = "keras"  # not an EXPORTERS format: resnetkit.deploy.keras_export builds the Keras model itself
TFLITE = "tflite"  # resnetkit.deploy.litert (optional litert-torch), run in the LiteRT interpreter
COREML = "coreml"  # resnetkit.deploy.coreml (optional coremltools); its predictions run on macOS only
TENSORRT = "tensorrt"  # resnetkit.deploy.tensorrt (optional torch-tensorrt); needs a CUDA GPU
PARITY_BATCH = 8  # images in the parity check (plus one single-image batch)
INT8_CHECK_IMAGES = 64  # held-out training images the int8 check runs: one top-1 flip is 1.5%, the pass mark 95%


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file (a run's best.safetensors, converted or published weights) or a "
                        "registry name")  # fmt: skip
    parser.add_argument("--format", choices=[*(f.value for f in Format), KERAS, TFLITE, COREML, TENSORRT],
                        default=Format.ONNX.value, help="onnx (run by ONNX Runtime), torchscript (traced), exported "
                        "(torch.export .pt2), keras (a Keras 3 .keras model, checked under Keras' torch backend), "
                        "tflite (LiteRT, checked in its interpreter), coreml (an ML Program .mlpackage taking "
                        "raw-pixel images; checked for its interface, not run: Core ML predicts on macOS only) or "
                        "tensorrt (Torch-TensorRT engines in an .ep file, checked on the GPU; CUDA only)")  # fmt: skip
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convolutions first")
    parser.add_argument("--out", help="file to write (default: beside the model file, e.g. best.onnx, best-fused.pt2, "
                        "best-int8.onnx; for a registry name, in the current folder)")  # fmt: skip
    parser.add_argument("--atol", type=float, default=1e-4, help="largest max |output difference| from eager that "
                        "passes; exit status 1 above it (default: 1e-4; with --int8: the fp32 step's)")  # fmt: skip
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or later (default: 18)")
    parser.add_argument("--int8", action="store_true", help="static int8 ONNX (ONNX Runtime QDQ, per-channel "
                        "weights), LiteRT (full-integer) or TensorRT (Model Optimizer Q/DQ) calibrated on training "
                        "images; passes on top-1 agreement with eager")  # fmt: skip
    parser.add_argument("--int8-mode", choices=["static", "dynamic"], default="static", help="with --format tflite "
                        "--int8: static (full-integer, calibrated; default) or dynamic (dynamic-range: int8 weights, "
                        "activations quantized per call)")  # fmt: skip
    parser.add_argument("--fp16", action="store_true", help="with --format coreml or tensorrt: float16 weights and "
                        "arithmetic (TensorRT: passes on top-1 agreement with eager)")  # fmt: skip
    parser.add_argument("--calibration-images", type=int, default=512, metavar="N",
                        help="with --int8: calibrate on the first N training images (default: 512)")  # fmt: skip
    calibration = DEFAULT_CALIBRATION.value
    parser.add_argument("--calibration", choices=[c.value for c in Calibration], default=calibration,
                        help=f"with --int8 (ONNX): how activation ranges are chosen (default: {calibration})")  # fmt: skip
    parser.add_argument("--data", help="with --int8: calibrate on this dataset (folder, .zip, cifar10, ...) "
                        "instead of the model's own; needed for weights not trained by resnetkit")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Export ``args.model``; print the parity line; 0 if it passes (within ``args.atol`` of eager, or for
    ``--int8`` enough top-1 agreement), 1 if not."""
    if args.int8 and args.format not in (Format.ONNX.value, TFLITE, TENSORRT):
        raise ValueError(f"--int8 writes ONNX, LiteRT or TensorRT (--format onnx, tflite or tensorrt), not --format "
                         f"{args.format}")  # fmt: skip
    if args.int8_mode != "static" and not (args.int8 and args.format == TFLITE):
        raise ValueError("--int8-mode chooses how --int8 --format tflite quantizes; add --int8 --format tflite")
    if args.fp16 and args.format not in (COREML, TENSORRT):
        raise ValueError(f"--fp16 is for --format coreml or tensorrt; it does not work with --format {args.format}")
    if args.fp16 and args.int8:
        raise ValueError("--fp16 and --int8 are two precisions; choose one")
    if args.format == KERAS:
        return _export_keras(args)
    if args.format == TFLITE:
        return _export_tflite(args)
    if args.format == COREML:
        return _export_coreml(args)
    if args.format == TENSORRT:
        return _export_tensorrt(args)
    fmt = Format(args.format)
    if args.data and not args.int8:
        raise ValueError("--data chooses the calibration images of --int8; add --int8")
    from ..tasks.predict import is_task_file

    if is_task_file(args.model):
        return _export_task(args, fmt)
    model = load_model(args.model).eval()
    exported = model
    if args.fuse:
        exported = fuse_model(model)
        before, after = len(norm_names(model)), len(norm_names(exported))
        print(f"fused {before - after} of {before} BatchNorm layers into their convolutions")
    path = Path(args.out) if args.out else default_export_path(args.model, fmt, args.fuse, args.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.int8:
            report = _export_int8(args, model, exported, path)
        else:
            pre = model.record.preprocess
            inputs = sample_images(PARITY_BATCH, pre.crop_size, len(pre.mean), pre.mean, pre.std)
            options = {"opset": args.opset} if fmt is Format.ONNX else {}
            report = EXPORTERS[fmt](exported, path, reference=model, inputs=inputs, atol=args.atol, **options)
    except ParityError as err:
        return _failed(err.report, path)
    print(report.line())
    return 0


def _export_keras(args: argparse.Namespace) -> int:
    """A classifier to a Keras 3 ``.keras`` file, built from its modules, loaded back and checked against eager."""
    from ..deploy.keras_export import KerasFormat, export_keras
    from ..tasks.predict import is_task_file

    if is_task_file(args.model):
        raise ValueError("detection and segmentation models export to fp32 ONNX (--format onnx), not Keras")
    model = load_model(args.model).eval()
    exported = fuse_model(model) if args.fuse else model
    path = Path(args.out) if args.out else default_export_path(args.model, KerasFormat.KERAS, args.fuse)
    path.parent.mkdir(parents=True, exist_ok=True)
    pre = model.record.preprocess
    inputs = sample_images(PARITY_BATCH, pre.crop_size, len(pre.mean), pre.mean, pre.std)
    try:
        report = export_keras(exported, path, reference=model, inputs=inputs, atol=args.atol)
    except ParityError as err:
        return _failed(err.report, path)
    print(report.line())
    return 0


def _export_tflite(args: argparse.Namespace) -> int:
    """A classifier to LiteRT: fp32 checked within ``--atol`` in the LiteRT interpreter, or int8 (static: calibrated
    on the first N training images, checked on the next :data:`INT8_CHECK_IMAGES`; dynamic: checked on them)."""
    from ..deploy.litert import Int8Mode, LiteRTFormat, export_tflite, export_tflite_int8

    model = _edge_model(args, "LiteRT")
    exported = fuse_model(model) if args.fuse else model
    path = Path(args.out) if args.out else default_export_path(args.model, LiteRTFormat.TFLITE, args.fuse, args.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.int8:
            mode = Int8Mode(args.int8_mode)
            calibration, held_out = _calibration_split(args, model, static=mode is Int8Mode.STATIC)
            report = export_tflite_int8(exported, path, calibration, mode=mode, reference=model, inputs=held_out)
        else:
            pre = model.record.preprocess
            inputs = sample_images(PARITY_BATCH, pre.crop_size, len(pre.mean), pre.mean, pre.std)
            report = export_tflite(exported, path, reference=model, inputs=inputs, atol=args.atol)
    except ParityError as err:
        return _failed(err.report, path)
    print(report.line())
    return 0


def _export_coreml(args: argparse.Namespace) -> int:
    """A classifier to a Core ML ML Program taking raw-pixel images, its preprocessing and labels inside; prints
    what the saved package says about itself (its predictions need macOS)."""
    from ..deploy.coreml import CoreMLFormat, export_coreml

    model = _edge_model(args, "Core ML")
    exported = fuse_model(model) if args.fuse else model
    exported.record = model.record
    path = Path(args.out) if args.out else default_export_path(args.model, CoreMLFormat.COREML, args.fuse)
    path.parent.mkdir(parents=True, exist_ok=True)
    print(export_coreml(exported, path, fp16=args.fp16).line())
    return 0


def _export_tensorrt(args: argparse.Namespace) -> int:
    """A classifier to TensorRT engines (fp32, ``--fp16`` or ``--int8`` calibrated like LiteRT's), checked against
    eager PyTorch on the GPU."""
    from ..deploy.tensorrt import Precision, TensorRTFormat, export_tensorrt, require_tensorrt

    require_tensorrt()  # a CUDA GPU and torch-tensorrt, before any calibration images are read
    model = _edge_model(args, "TensorRT")
    exported = fuse_model(model) if args.fuse else model
    precision = Precision.INT8 if args.int8 else Precision.FP16 if args.fp16 else Precision.FP32
    fmt = TensorRTFormat.TENSORRT
    path = Path(args.out) if args.out else default_export_path(args.model, fmt, args.fuse, args.int8)
    if args.fp16 and not args.out:
        path = path.with_name(path.stem + "-fp16" + path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    pre = model.record.preprocess
    calibration, inputs = None, sample_images(PARITY_BATCH, pre.crop_size, len(pre.mean), pre.mean, pre.std)
    if args.int8:
        calibration, inputs = _calibration_split(args, model)
    try:
        report = export_tensorrt(exported, path, precision, calibration=calibration, reference=model, inputs=inputs,
                                 atol=args.atol)  # fmt: skip
    except ParityError as err:
        return _failed(err.report, path)
    print(report.line())
    return 0


def _edge_model(args: argparse.Namespace, route: str) -> nn.Module:
    from ..tasks.predict import is_task_file

    if is_task_file(args.model):
        raise ValueError(f"task models (detection, segmentation, video, depth) export to ONNX (--format onnx), "
                         f"not {route}")  # fmt: skip
    return load_model(args.model).eval()


def _calibration_split(args: argparse.Namespace, model: nn.Module, static: bool = True, method: str = ""):
    """The first ``--calibration-images`` training images and the next :data:`INT8_CHECK_IMAGES` to check on; for
    dynamic-range int8 (no calibration) of weights that do not name their data and no ``--data``, image-like
    samples to check on."""
    count = args.calibration_images
    if count < 2:
        raise ValueError(f"--calibration-images must be at least 2 (a few hundred in real use), got {count}")
    if not static and not model.record.train_config and not args.data:
        pre = model.record.preprocess
        images = sample_images(INT8_CHECK_IMAGES, pre.crop_size, len(pre.mean), pre.mean, pre.std)
        return images, images
    images = calibration_images(model.record, count + INT8_CHECK_IMAGES, dataset=args.data)
    calibration, held_out = images[:count], images[count:]
    dataset = args.data or model.record.train_config["data"]["dataset"]
    if len(held_out) < 2:
        raise ValueError(f"{dataset} has {len(images)} training images, too few to calibrate on {count} and check "
                         f"on {INT8_CHECK_IMAGES} more; lower --calibration-images")  # fmt: skip
    if static:
        print(f"calibrating on {count} training images of {dataset}{method}, checking on the next {len(held_out)}")
    return calibration, held_out


def default_export_path(model: str | Path, fmt: Format | enum.Enum, fused: bool, int8: bool = False) -> Path:
    """Beside the model file: ``best.safetensors`` -> ``best.onnx``, ``best-fused.pt2``, ``best-fused-int8.onnx``,
    ...; a registry name ``resnet50.tv2_in1k`` -> ``resnet50.tv2_in1k.onnx`` in the current folder."""
    path = Path(model)
    stem = path.stem if path.is_file() else path.name
    return path.with_name(stem + ("-fused" if fused else "") + ("-int8" if int8 else "") + fmt.suffix)


def _export_int8(args: argparse.Namespace, model: ResNet, exported: nn.Module, path: Path):
    """Calibrate on the first N training images, check on the next :data:`INT8_CHECK_IMAGES`."""
    calibration, held_out = _calibration_split(args, model, method=f" ({args.calibration})")
    return export_int8(exported, path, calibration, reference=model, inputs=held_out,
                       method=Calibration(args.calibration), atol=args.atol, opset=args.opset)  # fmt: skip


def _failed(report: ParityReport, path: Path) -> int:
    """Print the failing parity line and a one-line error; exit status 1 (the file stays, for inspection)."""
    print(report.line())
    print(f"resnetkit export: error: {path} does not match the eager model ({_shortfall(report)})", file=sys.stderr)
    return 1


def _shortfall(report: ParityReport) -> str:
    if isinstance(report, Int8ParityReport):
        return f"top-1 agreement {report.top1_agreement:.1%} < {report.min_top1_agreement:.0%}, or non-finite outputs"
    return f"max |diff| {report.max_abs_diff:.2e} > atol {report.atol:.0e}"


def _export_task(args: argparse.Namespace, fmt: Format) -> int:
    """A task model file to ONNX, checked in ONNX Runtime: a segmentation model's logits or a depth map at its
    training scale, a video model's logits for its clip length (dynamic batch), or a detector taking one image of
    any size."""
    import torch

    from ..tasks.export import SegmentationLogits, export_detector_onnx
    from ..tasks.predict import TaskPredictor

    if fmt is not Format.ONNX or args.int8 or args.fuse:
        raise ValueError("detection, segmentation, video and depth models export to fp32 ONNX (--format onnx, no --int8 "
                         "or --fuse)")  # fmt: skip
    predictor = TaskPredictor.load(args.model)
    path = Path(args.out) if args.out else default_export_path(args.model, fmt, False)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    if predictor.kind == "detection":
        images = [torch.rand(3, h, w, generator=generator) for h, w in ((320, 416), (288, 384), (352, 320))]
        report = export_detector_onnx(predictor.model, path, images)
        print(report.line())
        return 0 if report.ok else 1
    record = predictor.model.record
    size = record.task.get("base_size") or record.preprocess.crop_size
    if predictor.kind == "video":  # clips (B, 3, T, H, W) -> logits
        exported, shape = predictor.model, (4, 3, record.task["clip"]["frames"], size, size)
    else:  # segmentation logits, or depth (B, 1, H, W) in metres, at the training scale
        exported = SegmentationLogits(predictor.model) if predictor.kind == "segmentation" else predictor.model
        shape = (PARITY_BATCH, 3, size, size * 4 // 3)
    try:
        report = EXPORTERS[fmt](exported, path, inputs=torch.randn(*shape, generator=generator), atol=args.atol,
                                opset=args.opset)  # fmt: skip
    except ParityError as err:
        return _failed(err.report, path)
    print(report.line())
    return 0
