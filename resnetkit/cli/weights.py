"""``resnetkit weights [PATTERN]``: the known pretrained weights (``name.tag``): classifiers, then detectors and
segmenters."""

from __future__ import annotations

import argparse
import sys

NAME = "weights"
HELP = "list the known pretrained weights (name.tag)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet50.*'")
    parser.add_argument("--format", choices=["text", "markdown"], default="text")


def run(args: argparse.Namespace) -> int:
    """Print the tables of the matching weights; exit status 2 if none matches."""
    from ..tasks.checkpoints import task_weights_table
    from ..weights.registry import weights_table

    markdown = args.format == "markdown"
    tables = [t for t in (weights_table(args.pattern, markdown), task_weights_table(args.pattern, markdown)) if t]
    if not tables:
        print(f"resnetkit: no weights match {args.pattern!r}", file=sys.stderr)
        return 2
    print("\n\n".join(tables))
    return 0
