"""``resnetkit weights [PATTERN]``: the known pretrained weights (``name.tag``)."""

from __future__ import annotations

import argparse
import sys

NAME = "weights"
HELP = "list the known pretrained weights (name.tag)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet50.*'")
    parser.add_argument("--format", choices=["text", "markdown"], default="text")


def run(args: argparse.Namespace) -> int:
    """Print the table of the matching weights; exit status 2 if none matches."""
    from ..weights.registry import weights_table

    table = weights_table(args.pattern, markdown=args.format == "markdown")
    if not table:
        print(f"resnetkit: no weights match {args.pattern!r}", file=sys.stderr)
        return 2
    print(table)
    return 0
