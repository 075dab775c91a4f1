"""``resnetkit convert SRC DST``: a torchvision/timm/Keras/training checkpoint to resnetkit weights."""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = "convert a torchvision/timm/Keras/training checkpoint to resnetkit weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help=".pth/.pt/.safetensors checkpoint or Keras .h5/.weights.h5/.keras")
    parser.add_argument("dst", help="resnetkit .safetensors file to write")
    parser.add_argument("--arch", help="variant name (default: inferred from the tensors)")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. stride_in_1x1=true")


def run(args: argparse.Namespace) -> int:
    """Convert ``args.src`` into ``args.dst``; print what was written."""
    import yaml

    from ..weights import convert

    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value, e.g. stride_in_1x1=true")
        overrides[key] = yaml.safe_load(value)
    meta = convert(args.src, args.dst, args.arch, ema=args.ema, **overrides)
    print(f"wrote {args.dst}: {meta.arch}, {len(meta.classes)} classes, tensors sha256 {meta.tensors_sha256[:16]}...")
    return 0
