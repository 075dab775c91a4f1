"""The ``resnetkit`` command line: ``resnetkit <command> [options]``; ``resnetkit <command> -h`` for help.

Commands parse their arguments into library calls and print; all the work lives in the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .models.complexity import ModelRow, model_table
from .models.variants import Metric


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:.0f}"


def _paper_number(value: float) -> str:
    """A published figure as printed in its paper: 0.27M, 3.6G."""
    return f"{value / 1e9:g}G" if value >= 1e9 else f"{value / 1e6:g}M"


def _row_cells(row: ModelRow, with_source: bool) -> list[str]:
    cells = [row.name, str(row.input_size), _si(row.params), _si(row.macs)]
    if row.paper_metric is None:
        return cells + ["", "", ""] + ([""] if with_source else [])
    paper = f"{_paper_number(row.paper_value)} {row.paper_metric.value}"
    ours = _si(row.ours_in_paper_setting) + (f" ({row.paper_setting})" if row.paper_setting else "")
    cells += [paper, ours, f"{row.paper_diff:+.1%}"]
    return cells + ([row.paper_source] if with_source else [])


HEADER = ["model", "input", "params", "MACs", "paper", "ours as in paper", "diff"]


def format_table(rows: list[ModelRow], markdown: bool = False) -> str:
    """The model table as aligned text, or as a Markdown table with the paper sources."""
    header = HEADER + (["source"] if markdown else [])
    body = [_row_cells(r, with_source=markdown) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c) for c in column) for column in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *body])


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_table(args.pattern, progress=sys.stderr.isatty())
    if not rows:
        print(f"resnetkit: no model matches {args.pattern!r}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps([_row_json(r) for r in rows], indent=2))
    else:
        print(format_table(rows, markdown=args.format == "markdown"))
        if args.format == "text":
            print("\nMACs: multiply-accumulates for one image at the input size (torch.utils.flop_counter).")
            print("'ours as in paper': our count in the paper's setting (in brackets: the overrides that give it).")
    return 0


def _row_json(row: ModelRow) -> dict:
    return {
        "name": row.name,
        "input_size": row.input_size,
        "params": row.params,
        "macs": row.macs,
        "paper": None
        if row.paper_metric is None
        else {"metric": row.paper_metric.value, "value": row.paper_value, "ours": row.ours_in_paper_setting,
              "diff": row.paper_diff, "source": row.paper_source, "setting": row.paper_setting},  # fmt: skip
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnetkit", description="Residual networks: define, count, train, deploy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    models = commands.add_parser("models", help="list the model zoo with parameter and MAC counts")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'cifar_*' (default: all)")
    models.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="output format")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"resnetkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
