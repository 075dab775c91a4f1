"""``resnetkit compress``: a chain of compression steps applied to a model trained by resnetkit, with the
validation accuracy, cost and batch-1 latency of every stage measured the same way.

The chain runs in a fixed order, each step optional: depth pruning (whole residual units, chosen by a lesion study
on training images) to a MAC fraction, structured channel pruning to a MAC fraction, low-rank factorisation to a
MAC fraction, unstructured magnitude pruning to a sparsity, fine-tuning (optionally distilled from the original
model), then static int8 quantization of the BatchNorm-fused result. Every intermediate network is written as a
model file in ``out`` (``compressed.safetensors``, ``finetune/last.safetensors``; its record lists the edits, so
``load_model`` rebuilds it) and the int8 model as ``model-int8.onnx``, so any stage can be evaluated, exported or
fine-tuned again on its own. The fine-tuning run is an ordinary ``resnetkit train`` run: its recipe is written to
``out/finetune.yaml`` (the original run's config, ``init_from`` the compressed model, a short cosine schedule) and
``KEY=VALUE`` overrides apply on top.

The chain combines compression, deployment, training and evaluation, so it is a workflow, above all of them.
Running the same command again reuses a finished fine-tuning and resumes a cut-off one (``out/plan.json`` records
the plan; an ``out`` holding another plan is refused).

Latency is ONNX Runtime's at batch 1, fp32 for the PyTorch stages (their exports are kept as ``out/<stage>.onnx``)
and int8 for the last, timed side by side at the end: after warm-up the timed calls alternate between the files,
so the speed-ups compare like with like on the same machine state (median of ``latency_repeats`` calls each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..compress.depth import drop_units
from ..compress.lowrank import factorize
from ..compress.prune import Criterion, magnitude_prune, make_permanent, prune_channels
from ..deploy.bench import interleaved_onnx_latencies
from ..deploy.export import Format, export_onnx, load_runner, sample_images
from ..deploy.fuse import fuse_model
from ..deploy.quantize import Calibration, export_int8
from ..models import ModelRecord, ResNet
from ..models.complexity import count_macs, count_params
from ..models.surgery import surgery_of
from ..train.checkpoint import LAST
from ..train.config import load_config
from ..train.engine import fit
from ..weights import load_model, save_weights
from .calibrate import calibration_images
from .evaluate import evaluate_model

FINETUNE_DEFAULTS = ("optim.schedule=cosine", "optim.lr=0.02", "optim.warmup_steps=0", "ema_decay=0.0")


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A plan field with its command-line help and, if needed, ``metavar``, ``flag`` or ``positional`` (see
    :mod:`resnetkit.cli.fields`)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class ChainPlan:
    """Which steps to run; a fraction of 0 (or ``finetune_epochs`` 0, ``int8`` False) skips that step.

    Each field is also an option of ``resnetkit compress``, which generates its flags from these fields.
    """

    prune_depth: float = _option(0.0, "drop whole residual units (least harmful first, by a lesion study) to this "
                                 "fraction of the MACs", metavar="FRACTION")  # fmt: skip
    lesion_images: int = _option(256, "training images the lesions are scored on")
    prune: float = _option(0.0, "structured pruning of branch channels to this fraction of the MACs (e.g. 0.5)",
                           metavar="FRACTION")  # fmt: skip
    criterion: Criterion = _option(Criterion.L1, "which channels to keep: filter L1 norm or BatchNorm |gamma| "
                                   "(default: l1)")  # fmt: skip
    channel_multiple: int = _option(1, "round kept widths to a multiple of this")
    factorize: float = _option(0.0, "low-rank factorisation (Tucker-2 / SVD) to this fraction of the MACs",
                               metavar="FRACTION")  # fmt: skip
    sparsity: float = _option(0.0, "unstructured magnitude pruning of this fraction of weights")
    finetune_epochs: int = _option(0, "fine-tune for N epochs (the original recipe, cosine from optim.lr=0.02 "
                                   "unless overridden)")  # fmt: skip
    distill: bool = _option(False, "fine-tune with the original model as the teacher")
    int8: bool = _option(False, "finish with static int8 ONNX (BatchNorm fused first)")
    calibration_images: int = _option(512, "training images for int8 calibration")
    calibration: Calibration = _option(Calibration.PERCENTILE, "how int8 activation ranges are chosen "
                                       "(default: percentile)")  # fmt: skip
    overrides: tuple[str, ...] = _option((), "for the fine-tuning run, e.g. optim.lr=0.05", positional=True,
                                         metavar="KEY=VALUE")  # fmt: skip
    # timing only: neither of these changes a stage
    latency_repeats: int = _option(50, "timed calls per latency (median reported)", flag="--repeats")
    latency_threads: int = _option(0, "ONNX Runtime threads for the latencies (default: all cores)",
                                   flag="--threads")  # fmt: skip


@dataclass
class Stage:
    """One network of the chain: accuracy on the validation split, cost, file and batch-1 latency."""

    name: str
    path: str
    val_top1: float
    macs: int
    params: int
    file_bytes: int
    onnx: str  # the file whose latency is measured (fp32 ONNX, or the int8 one)
    latency_ms: float = 0.0  # filled in by compress_model, all stages side by side
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compress_model(source: str | Path, out: str | Path, plan: ChainPlan, split: str = "val") -> list[Stage]:
    """Run ``plan`` on the model file ``source`` (a resnetkit run's: its data gives the accuracy and the fine-tuning),
    writing every stage into ``out``; the stages, first the original.

    Also writes ``out/compress.json`` (the plan and the stages).
    """
    source, out = Path(source), Path(out)
    model = load_model(source).eval()
    record: ModelRecord = model.record
    if not record.train_config:
        raise ValueError(f"{source} was not trained by resnetkit: the chain needs the model's own data to measure "
                         "and fine-tune; train or fine-tune it with `resnetkit train` first")  # fmt: skip
    _claim(out, source, plan)
    stages = [_measure("original", source, out, split)]
    details = _edit(model, plan, record)
    current = source
    if details:
        current = out / "compressed.safetensors"
        save_weights(current, model, record.replace(edits=tuple(surgery_of(model)), metrics=(), source=f"resnetkit "
                                                    f"compress of {source}", extra={"compression": details}))  # fmt: skip
        stages.append(_measure("compressed", current, out, split, details))
    if plan.finetune_epochs:
        current = _finetune(source, current, out, plan)
        stages.append(_measure("fine-tuned", current, out, split))
    if plan.int8:
        stages.append(_int8_stage(current, out, split, plan))
    latencies = interleaved_onnx_latencies([s.onnx for s in stages], record.preprocess.crop_size,
                                           record.config.in_chans, plan.latency_repeats,
                                           threads=plan.latency_threads)  # fmt: skip
    for stage, latency in zip(stages, latencies):
        stage.latency_ms = latency
    document = {"model": str(source), "split": split, "plan": _plain(plan), "stages": [s.to_dict() for s in stages]}
    (out / "compress.json").write_text(json.dumps(document, indent=2) + "\n")
    return stages


def _claim(out: Path, source: Path, plan: ChainPlan) -> None:
    """Write ``out/plan.json``; refuse an ``out`` that holds another chain (its fine-tuning would be resumed)."""
    out.mkdir(parents=True, exist_ok=True)
    timing = ("latency_repeats", "latency_threads")
    steps = {key: value for key, value in _plain(plan).items() if key not in timing}
    record = json.loads(json.dumps({"model": str(source), **steps}))
    path = out / "plan.json"
    if path.is_file() and json.loads(path.read_text()) != record:
        raise ValueError(f"{out} holds the stages of another chain (see its plan.json); choose another --out")
    path.write_text(json.dumps(record, indent=2) + "\n")


def _edit(model: nn.Module, plan: ChainPlan, record: ModelRecord) -> dict[str, Any]:
    """The architecture and weight edits of ``plan``, in place; their reports as JSON-ready dicts."""
    details = {}
    if plan.prune_depth:
        report = drop_units(model, plan.prune_depth, calibration_images(record, plan.lesion_images))
        print(report)
        details["prune_depth"] = report.as_dict()
    if plan.prune:
        report = prune_channels(model, plan.prune, plan.criterion, channel_multiple=plan.channel_multiple)
        print(report)
        details["prune"] = report.as_dict()
    if plan.factorize:
        report = factorize(model, plan.factorize)
        print(report)
        details["factorize"] = report.as_dict()
    if plan.sparsity:
        report = magnitude_prune(model, plan.sparsity)
        print(report.table())
        details["sparsity"] = report.as_dict()
    return details


def _finetune(original: Path, start: Path, out: Path, plan: ChainPlan) -> Path:
    """Fine-tune ``start`` with the original run's recipe (short cosine schedule, overrides on top)."""
    recipe = out / "finetune.yaml"
    recipe.write_text(yaml.safe_dump(load_model(original).record.train_config, sort_keys=False))
    teacher = [f"distill.teacher={original}"] if plan.distill else []
    overrides = [*FINETUNE_DEFAULTS, f"epochs={plan.finetune_epochs}", "steps=0", *teacher, *plan.overrides,
                 f"init_from={start}", f"out={out / 'finetune'}"]  # fmt: skip
    run = out / "finetune"
    if not (run / "summary.json").is_file():  # finished runs are kept; a cut-off one resumes from its last checkpoint
        fit(load_config(recipe, overrides), resume=(run / LAST).is_file())
    final = run / LAST
    if plan.sparsity:  # masks were kept while fine-tuning; fold them into plain weights now
        model = load_model(final)
        make_permanent(model)
        final = out / "finetuned-sparse.safetensors"
        save_weights(final, model, model.record.replace(edits=tuple(surgery_of(model))))
    return final


def _measure(name: str, path: Path, out: Path, split: str, details: dict | None = None) -> Stage:
    """Accuracy and cost of a model file, and its fp32 ONNX export (``out/<name>.onnx``) for the latency."""
    model = load_model(path).eval()
    size, in_chans = _input(model)
    top1 = evaluate_model(str(path), split=split).meter.top1
    onnx = out / f"{name}.onnx"
    export_onnx(model, onnx, inputs=sample_images(4, size, in_chans))  # parity-checked against eager
    print(f"{name}: {split} top-1 {100 * top1:.2f}%")
    return Stage(name, str(path), top1, count_macs(model, size, in_chans), count_params(model), onnx.stat().st_size,
                 str(onnx), details=details or {})  # fmt: skip


def _int8_stage(path: Path, out: Path, split: str, plan: ChainPlan) -> Stage:
    """Static int8 ONNX of the BatchNorm-fused model, calibrated on its training images, evaluated in ORT."""
    model = load_model(path).eval()
    onnx = out / "model-int8.onnx"
    calibration = calibration_images(model.record, plan.calibration_images)
    report = export_int8(fuse_model(model), onnx, calibration, reference=model, method=plan.calibration)
    print(report.line())
    top1 = evaluate_model(str(path), split=split, runner=load_runner(Format.ONNX, onnx)).meter.top1
    print(f"int8: {split} top-1 {100 * top1:.2f}%")
    size, in_chans = _input(model)
    return Stage("int8", str(onnx), top1, count_macs(model, size, in_chans), count_params(model), onnx.stat().st_size,
                 str(onnx), details={"calibration": plan.calibration.value, "calibration_images": len(calibration)})  # fmt: skip


def _input(model: ResNet) -> tuple[int, int]:
    return model.record.preprocess.crop_size, model.config.in_chans


def _plain(plan: ChainPlan) -> dict[str, Any]:
    values = asdict(plan)
    values["criterion"], values["calibration"] = plan.criterion.value, plan.calibration.value
    return values


def format_stages(stages: list[Stage]) -> str:
    """The chain as a table: accuracy, change from the original, MACs, params, file size, latency, speed-up."""
    first = stages[0]
    header = ["stage", "val top-1", "change", "MACs", "params", "file", "batch-1 ms", "speed-up"]
    rows = [[s.name, f"{100 * s.val_top1:.2f}%", f"{100 * (s.val_top1 - first.val_top1):+.2f} pt",
             f"{s.macs / 1e6:.1f}M", f"{s.params / 1e6:.3f}M", f"{s.file_bytes / 1e6:.2f} MB", f"{s.latency_ms:.3f}",
             f"{first.latency_ms / s.latency_ms:.2f}x"] for s in stages]  # fmt: skip
    widths = [max(len(c) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])

