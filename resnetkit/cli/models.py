"""``resnetkit models [PATTERN]``: the model zoo with parameter and MAC counts, beside the papers' figures."""

from __future__ import annotations

import argparse
import json
import sys

from ..models.complexity import ModelRow, model_table

NAME = "models"
HELP = "list the model zoo with parameter and MAC counts"
HEADER = ["model", "input", "params", "MACs", "paper", "ours as in paper", "diff"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'cifar_*' "
                        "(default: all)")  # fmt: skip
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="output format")


def run(args: argparse.Namespace) -> int:
    """Print the table (text, Markdown or JSON); exit status 2 if no model matches."""
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


def format_table(rows: list[ModelRow], markdown: bool = False) -> str:
    """The model table as aligned text, or as a Markdown table with the paper sources."""
    header = HEADER + (["source"] if markdown else [])
    body = [_row_cells(r, with_source=markdown) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c) for c in column) for column in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header, *body])


def _row_cells(row: ModelRow, with_source: bool) -> list[str]:
    cells = [row.name, str(row.input_size), _si(row.params), _si(row.macs)]
    if row.paper_metric is None:
        return cells + ["", "", ""] + ([""] if with_source else [])
    paper = f"{_paper_number(row.paper_value)} {row.paper_metric.value}"
    ours = _si(row.ours_in_paper_setting) + (f" ({row.paper_setting})" if row.paper_setting else "")
    cells += [paper, ours, f"{row.paper_diff:+.1%}"]
    return cells + ([row.paper_source] if with_source else [])


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:.0f}"


def _paper_number(value: float) -> str:
    """A published figure as printed in its paper: 0.27M, 3.6G."""
    return f"{value / 1e9:g}G" if value >= 1e9 else f"{value / 1e6:g}M"


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
