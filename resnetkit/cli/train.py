"""``resnetkit train [RECIPE] [KEY=VALUE ...]``: train a model from a recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "train"
HELP = "train a model from a recipe (default: the embedded digits demo)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe file or shipped recipe name (digits, cifar10_paper, "
                        "cifar10_cpu, imagenet_resnet50_tv1, camvid_deeplabv3, balloon_maskrcnn, video_clips, "
                        "depth_folder); default: digits")  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="e.g. optim.lr=0.05 model.name=cifar_resnet56")  # fmt: skip
    parser.add_argument("--out", help="run directory (checkpoints, log, plot, summary.json)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors with the run's own "
                        "config (no recipe needed; a longer epochs=N may be given)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Load the recipe with its overrides (every option checked before any data is read), then train."""
    from ..tasks.training import task_for
    from ..train.config import DEFAULT_RECIPE, load_config
    from ..train.engine import fit

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe and "=" in recipe:  # `resnetkit train optim.lr=0.05`: no recipe, only overrides
        recipe, overrides = None, [recipe, *overrides]
    overrides += [f"out={json.dumps(args.out)}"] if args.out else []  # quoted: a folder named 2024 stays a name
    if args.resume and not recipe:  # the run's own config, which fit() would insist on anyway
        recipe = stored_config(args.out)
    config = load_config(recipe or DEFAULT_RECIPE, overrides)
    try:
        fit(config, resume=args.resume, task=task_for(config))
    except KeyboardInterrupt:
        raise KeyboardInterrupt("continue with --resume") from None
    return 0


def stored_config(out: str | None) -> dict:
    """The training config stored in ``OUT/last.safetensors``."""
    from ..train.checkpoint import LAST
    from ..weights.format import read_record

    if not out:
        raise ValueError("--resume needs the run folder: --out DIR")
    return read_record(Path(out) / LAST).train_config
