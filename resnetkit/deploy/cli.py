"""``resnetkit export CKPT``: a training checkpoint to ONNX, TorchScript or a torch.export program, parity-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..train.checkpoint import load_checkpoint, model_from_checkpoint
from .export import EXPORTERS, Format, ParityError, sample_images
from .fuse import fuse_model, norm_names

PARITY_BATCH = 8  # images in the parity check (plus one single-image batch)


def cmd_export(args: argparse.Namespace) -> int:
    """Export ``args.checkpoint``; print the parity line; 0 if within ``args.atol`` of eager, 1 if not."""
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state).eval()
    norm = state["normalize"]
    inputs = sample_images(PARITY_BATCH, norm["input_size"], len(norm["mean"]), norm["mean"], norm["std"])
    exported = model
    if args.fuse:
        exported = fuse_model(model)
        before, after = len(norm_names(model)), len(norm_names(exported))
        print(f"fused {before - after} of {before} BatchNorm layers into their convolutions")
    fmt = Format(args.format)
    path = Path(args.out) if args.out else default_export_path(args.checkpoint, fmt, args.fuse)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"opset": args.opset} if fmt is Format.ONNX else {}
    try:
        report = EXPORTERS[fmt](exported, path, reference=model, inputs=inputs, atol=args.atol, **options)
    except ParityError as err:
        print(err.report.line())
        print(f"resnetkit export: error: {path} does not match the eager model (max |diff| "
              f"{err.report.max_abs_diff:.2e} > atol {args.atol:.0e})", file=sys.stderr)  # fmt: skip
        return 1
    print(report.line())
    return 0


def default_export_path(checkpoint: str | Path, fmt: Format, fused: bool) -> Path:
    """Beside the checkpoint: ``best.pt`` -> ``best.onnx``, ``best-fused.pt2``, ..."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ("-fused" if fused else "") + fmt.suffix)
