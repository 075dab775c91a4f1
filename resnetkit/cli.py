"""The ``resnetkit`` command line: ``resnetkit <command> [options]``; ``resnetkit <command> -h`` for help.

Commands parse their arguments into library calls and print; all the work lives in the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .compress.cli import cmd_compress
from .compress.prune import Criterion
from .deploy.bench import Route
from .deploy.cli import cmd_bench, cmd_export
from .deploy.quantize import DEFAULT_CALIBRATION, Calibration
from .models.complexity import ModelRow, model_table


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


def cmd_train(args: argparse.Namespace) -> int:
    from .train.config import DEFAULT_RECIPE, load_config
    from .train.engine import fit

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    fit(load_config(args.recipe or DEFAULT_RECIPE, overrides), resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .train.evaluation import evaluate_checkpoint, evaluate_weights

    if args.weights:
        if args.checkpoint or not args.data:
            raise ValueError("with --weights, give the dataset as --data FOLDER_OR_ZIP and no checkpoint")
        report = evaluate_weights(args.weights, args.data)
    elif args.checkpoint:
        report = evaluate_checkpoint(args.checkpoint, split=args.split, dataset=args.data)
    else:
        raise ValueError("give a checkpoint, or --weights NAME_OR_FILE --data FOLDER")
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .data.folder import ImageDecodeError
    from .inference import Predictor

    if args.weights:
        predictor, images = Predictor.from_weights(args.weights), args.paths
    else:
        predictor, images = Predictor.from_checkpoint(args.paths[0]), args.paths[1:]
    if not images:
        raise ValueError("no image given")
    failures = 0
    for path in images:
        try:
            prediction = predictor.predict_file(path, topk=args.topk)
        except ImageDecodeError as err:
            print(f"resnetkit predict: error: {err}", file=sys.stderr)
            failures += 1
            continue
        shown = ", ".join(f"{name} {100 * p:.1f}%" for name, p in prediction.top)
        print(f"{path}: {shown}")
    return 1 if failures else 0


def cmd_convert(args: argparse.Namespace) -> int:
    import yaml

    from .weights import convert

    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value, e.g. stride_in_1x1=true")
        overrides[key] = yaml.safe_load(value)
    meta = convert(args.src, args.dst, args.arch, ema=args.ema, **overrides)
    print(f"wrote {args.dst}: {meta.arch}, {len(meta.classes)} classes, tensors sha256 {meta.tensors_sha256[:16]}...")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from .weights.registry import weights_table

    table = weights_table(args.pattern, markdown=args.format == "markdown")
    if not table:
        print(f"resnetkit: no weights match {args.pattern!r}", file=sys.stderr)
        return 2
    print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnetkit", description="Residual networks: define, count, train, deploy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train a model from a recipe (default: the embedded digits demo)")
    train.add_argument("recipe", nargs="?", help="recipe file or shipped recipe name (digits, cifar10_paper, "
                       "cifar10_cpu, imagenet_resnet50_tv1); default: digits")  # fmt: skip
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.lr=0.05 model.name=cifar_resnet56")
    train.add_argument("--out", help="run directory (checkpoints, log, plot, summary.json)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.set_defaults(func=cmd_train)
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion")
    evaluate.add_argument("checkpoint", nargs="?", help="training checkpoint (or use --weights)")
    evaluate.add_argument("--weights", help="weights file or registry name (resnet50.tv2_in1k), with --data")
    evaluate.add_argument("--split", choices=["train", "val", "test"], default=None,
                          help="split of the training data (default: test if the dataset has one, else val)")  # fmt: skip
    evaluate.add_argument("--data", help="evaluate on another dataset (folder, .zip, cifar10, ...) instead")
    evaluate.add_argument("--json", help="also write the report as JSON to this file")
    evaluate.set_defaults(func=cmd_eval)
    predict = commands.add_parser("predict", help="top-k classes for image files",
                                  usage="resnetkit predict (CHECKPOINT | --weights NAME_OR_FILE) IMAGE [IMAGE ...]")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="a training checkpoint, then images")
    predict.add_argument("--weights", help="weights file or registry name: its own preprocessing; all PATHs are images")
    predict.add_argument("--topk", type=int, default=5)
    predict.set_defaults(func=cmd_predict)
    convert = commands.add_parser("convert", help="convert a torchvision/timm/Keras/training checkpoint to resnetkit weights")
    convert.add_argument("src", help=".pth/.pt/.safetensors checkpoint or Keras .h5/.weights.h5")
    convert.add_argument("dst", help="resnetkit .safetensors file to write")
    convert.add_argument("--arch", help="variant name (default: inferred from the tensors)")
    convert.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint")
    convert.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. stride_in_1x1=true")
    convert.set_defaults(func=cmd_convert)
    weights = commands.add_parser("weights", help="list the known pretrained weights (name.tag)")
    weights.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet50.*'")
    weights.add_argument("--format", choices=["text", "markdown"], default="text")
    weights.set_defaults(func=cmd_weights)
    export = commands.add_parser("export", help="export a checkpoint to ONNX, TorchScript or torch.export, "
                                 "checked against eager PyTorch")  # fmt: skip
    export.add_argument("checkpoint", help="training checkpoint")
    export.add_argument("--format", choices=["onnx", "torchscript", "exported"], default="onnx",
                        help="onnx (run by ONNX Runtime), torchscript (traced) or exported (torch.export .pt2)")  # fmt: skip
    export.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convolutions first")
    export.add_argument("--out", help="file to write (default: beside the checkpoint, e.g. best.onnx, best-fused.pt2, "
                        "best-int8.onnx)")  # fmt: skip
    export.add_argument("--atol", type=float, default=1e-4, help="largest max |output difference| from eager that "
                        "passes; exit status 1 above it (default: 1e-4; with --int8: the fp32 step's)")  # fmt: skip
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or later (default: 18)")
    export.add_argument("--int8", action="store_true", help="static int8 ONNX (ONNX Runtime QDQ, per-channel "
                        "weights) calibrated on training images; passes on top-1 agreement with eager")  # fmt: skip
    export.add_argument("--calibration-images", type=int, default=512, metavar="N",
                        help="with --int8: calibrate on the first N training images (default: 512)")  # fmt: skip
    calibration = DEFAULT_CALIBRATION.value
    export.add_argument("--calibration", choices=[c.value for c in Calibration], default=calibration,
                        help=f"with --int8: how activation ranges are chosen (default: {calibration})")  # fmt: skip
    export.add_argument("--data", help="with --int8: calibrate on this dataset (folder, .zip, cifar10, ...) "
                        "instead of the checkpoint's own")  # fmt: skip
    export.set_defaults(func=cmd_export)
    bench = commands.add_parser("bench", help="latency and throughput of every inference route (eager, fused, "
                                "compiled, ONNX Runtime, OpenVINO, int8), with MACs, params and file size")  # fmt: skip
    bench.add_argument("model", help="registry name (random weights: speed does not depend on them) or checkpoint")
    bench.add_argument("--routes", default="all", help="comma-separated: " + ",".join(r.value for r in Route)
                       + " (default: all installed)")  # fmt: skip
    bench.add_argument("--batch-size", type=int, default=32, help="the larger batch, for throughput (default: 32)")
    bench.add_argument("--input-size", type=int, help="image side (default: the checkpoint's, 32 for CIFAR "
                       "stems, 224 otherwise)")  # fmt: skip
    bench.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median reported)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    bench.add_argument("--threads", type=int, default=0, help="threads for every runtime (default: all cores)")
    bench.add_argument("--calibration-images", type=int, default=512, help="int8 calibration images (checkpoint)")
    bench.add_argument("--json", help="also write the results as a JSON list to this file")
    bench.set_defaults(func=cmd_bench)
    compress = commands.add_parser("compress", help="prune / factorise / fine-tune / distil / int8 a checkpoint; "
                            "accuracy, MACs, size and latency of every stage")  # fmt: skip
    compress.add_argument("checkpoint", help="training checkpoint (its dataset gives the validation split)")
    compress.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="for the fine-tuning run, e.g. optim.lr=0.05")
    compress.add_argument("--out", required=True, help="folder for every stage's checkpoint, the int8 ONNX and compress.json")
    compress.add_argument("--prune-depth", type=float, default=0.0, metavar="FRACTION",
                   help="drop whole residual units (least harmful first, by a lesion study) to this fraction of the MACs")
    compress.add_argument("--lesion-images", type=int, default=256, help="training images the lesions are scored on")
    compress.add_argument("--prune", type=float, default=0.0, metavar="FRACTION",
                   help="structured pruning of branch channels to this fraction of the MACs (e.g. 0.5)")
    compress.add_argument("--criterion", choices=[c.value for c in Criterion], default="l1",
                   help="which channels to keep: filter L1 norm or BatchNorm |gamma| (default: l1)")
    compress.add_argument("--channel-multiple", type=int, default=1, help="round kept widths to a multiple of this")
    compress.add_argument("--factorize", type=float, default=0.0, metavar="FRACTION",
                   help="low-rank factorisation (Tucker-2 / SVD) to this fraction of the MACs")
    compress.add_argument("--sparsity", type=float, default=0.0, help="unstructured magnitude pruning of this fraction of weights")
    compress.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune for N epochs (the original recipe, "
                   "cosine from optim.lr=0.02 unless overridden)")
    compress.add_argument("--distill", action="store_true", help="fine-tune with the original checkpoint as the teacher")
    compress.add_argument("--int8", action="store_true", help="finish with static int8 ONNX (BatchNorm fused first)")
    compress.add_argument("--calibration-images", type=int, default=512, help="training images for int8 calibration")
    compress.add_argument("--calibration", choices=[c.value for c in Calibration], default=Calibration.PERCENTILE.value)
    compress.add_argument("--split", choices=["val", "test"], default="val", help="split the accuracy is measured on")
    compress.add_argument("--repeats", type=int, default=50, help="timed calls per latency (median reported)")
    compress.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads for the latencies "
                          "(default: all cores)")  # fmt: skip
    compress.set_defaults(func=cmd_compress)
    models = commands.add_parser("models", help="list the model zoo with parameter and MAC counts")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'cifar_*' (default: all)")
    models.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="output format")
    models.set_defaults(func=cmd_models)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse the command line; ``KEY=VALUE`` overrides may also follow the flags (``--out X epochs=3``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "train" and args.recipe and "=" in args.recipe:
        args.overrides, args.recipe = [args.recipe, *args.overrides], None  # `resnetkit train optim.lr=0.05`
    try:
        return args.func(args)
    except KeyboardInterrupt:
        resume = " (continue with --resume)" if args.command == "train" else ""
        print(f"resnetkit {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except (KeyError, ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"resnetkit {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
