"""``resnetkit compress CKPT``: drop units, prune, factorise, sparsify, fine-tune (optionally distilled) and quantise
a checkpoint, and report every stage's validation accuracy, cost and latency."""

from __future__ import annotations

import argparse

from ..deploy.quantize import Calibration
from .chain import ChainPlan, compress_checkpoint, format_stages
from .prune import Criterion


def cmd_compress(args: argparse.Namespace) -> int:
    """Run the chain the flags describe on ``args.checkpoint`` into ``args.out``; print the stage table."""
    plan = ChainPlan(prune_depth=args.prune_depth, lesion_images=args.lesion_images, prune=args.prune,
                     criterion=Criterion(args.criterion), channel_multiple=args.channel_multiple,
                     factorize=args.factorize, sparsity=args.sparsity, finetune_epochs=args.finetune_epochs,
                     distill=args.distill, int8=args.int8, calibration_images=args.calibration_images,
                     calibration=Calibration(args.calibration), overrides=tuple(args.overrides),
                     latency_repeats=args.repeats, latency_threads=args.threads)  # fmt: skip
    if not (plan.prune_depth or plan.prune or plan.factorize or plan.sparsity or plan.finetune_epochs or plan.int8):
        raise ValueError("nothing to do: give at least one of --prune-depth, --prune, --factorize, --sparsity, "
                         "--finetune-epochs, --int8")
    if plan.distill and not plan.finetune_epochs:
        raise ValueError("--distill needs fine-tuning; add --finetune-epochs N")
    stages = compress_checkpoint(args.checkpoint, args.out, plan, split=args.split)
    print()
    print(format_stages(stages))
    print(f"\nwrote {args.out}/compress.json")
    return 0
