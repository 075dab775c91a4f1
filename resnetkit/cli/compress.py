"""``resnetkit compress MODEL``: drop units, prune, factorise, sparsify, fine-tune (optionally distilled) and quantise
a model trained by resnetkit, and report every stage's validation accuracy, cost and latency.

The options of the chain are the fields of :class:`~resnetkit.workflows.compress.ChainPlan`, spelled there once."""

from __future__ import annotations

import argparse

from ..workflows.compress import ChainPlan, compress_model, format_stages
from . import fields

NAME = "compress"
HELP = "prune / factorise / fine-tune / distil / int8 a model; accuracy, MACs, size and latency of every stage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file of a resnetkit run (its dataset gives the validation split)")
    parser.add_argument("--out", required=True, help="folder for every stage's model file, the int8 ONNX and "
                        "compress.json")  # fmt: skip
    fields.add_arguments(parser, ChainPlan)
    parser.add_argument("--split", choices=["val", "test"], default="val", help="split the accuracy is measured on")


def run(args: argparse.Namespace) -> int:
    """Run the chain the flags describe on ``args.model`` into ``args.out``; print the stage table."""
    plan = fields.from_args(ChainPlan, args)
    if not (plan.prune_depth or plan.prune or plan.factorize or plan.sparsity or plan.finetune_epochs or plan.int8):
        raise ValueError("nothing to do: give at least one of --prune-depth, --prune, --factorize, --sparsity, "
                         "--finetune-epochs, --int8")  # fmt: skip
    if plan.distill and not plan.finetune_epochs:
        raise ValueError("--distill needs fine-tuning; add --finetune-epochs N")
    stages = compress_model(args.model, args.out, plan, split=args.split)
    print()
    print(format_stages(stages))
    print(f"\nwrote {args.out}/compress.json")
    return 0
