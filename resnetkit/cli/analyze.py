"""``resnetkit analyze KIND MODEL [--compare MODEL ...] [KEY=VALUE ...] --out DIR``: why a residual network works,
measured on it (lesion studies, paths, loss landscape, feature reuse, gradient flow, class activation maps)."""

from __future__ import annotations

import argparse
import time

import yaml

from ..errors import UserError
from ..workflows.analyze import KINDS, analyze, headline

NAME = "analyze"
HELP = "lesion studies, paths, loss landscape, feature reuse, gradient flow, class activation maps: JSON + PNG"
USAGE = f"resnetkit analyze {{{','.join(KINDS)},all}} MODEL [--compare MODEL ...] [--seed S] [KEY=VALUE ...] --out DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=[*KINDS, "all"], help="the analysis; all runs each in turn")
    parser.add_argument("model", help="a model file (a run's best.safetensors, published weights) or a registry "
                        "name (cifar_resnet110)")  # fmt: skip
    parser.add_argument("--compare", action="append", default=[], metavar="MODEL",
                        help="another model drawn in the same figures, e.g. the plain twin (cifar_plain20); repeatable")  # fmt: skip
    parser.add_argument("--data", help="another dataset for a run's model; for other weights, the image folder or "
                        "zip to draw images from (required)")  # fmt: skip
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="split of the run's data (default: val; train for landscape and gradients)")  # fmt: skip
    parser.add_argument("--images", type=int, help="how many images, drawn at random (default: the analysis's own)")
    parser.add_argument("--seed", type=int, default=0, help="fixes every random draw (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    parser.add_argument("--out", required=True, help="folder for KIND.json and KIND.png")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="the analysis's options, e.g. draws=5 steps=21; " + "; ".join(
                            f"{k}: {', '.join(f'{o}={v}' for o, v in spec.options.items()) or 'none'}"
                            for k, spec in KINDS.items()))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Each analysis asked for: its JSON and PNG, and one line of its numbers per model."""
    options = parse_options(args.overrides)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    known = {name for kind in kinds for name in KINDS[kind].options}
    if unknown := sorted(set(options) - known):
        raise UserError(f"{args.kind} has no option {unknown[0]!r}; it takes {', '.join(sorted(known)) or 'none'}")
    for kind in kinds:
        started = time.perf_counter()
        own = {k: v for k, v in options.items() if k in KINDS[kind].options} if args.kind == "all" else options
        report = analyze(kind, [args.model, *args.compare], args.out, dataset=args.data, split=args.split,
                         images=args.images, seed=args.seed, device=args.device, options=own)  # fmt: skip
        for result in report["results"]:
            print(f"{kind} {headline(kind, result)}")
        print(f"wrote {args.out}/{kind}.json and {kind}.png ({time.perf_counter() - started:.0f} s)")
    return 0


def parse_options(overrides: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs, each value read as a YAML scalar (``3``, ``0.5``, ``gradcam``)."""
    options = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"an option is KEY=VALUE, got {item!r}")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"{item!r}: the value is not a number or a word") from None
    return options
