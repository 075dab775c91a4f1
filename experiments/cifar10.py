"""Reproduce He et al. 2015 on CIFAR-10: one command per experiment, results as JSON, figures as PNG.

Run from the repository root. Each experiment is a table of runs (model + options) trained with
``resnetkit.train.fit`` into ``OUT/runs/EXPERIMENT/RUN-seedS/``. A run with ``summary.json`` is skipped, a run with
only its training checkpoint is resumed, so re-running the same command continues an interrupted experiment; either
way the run must have been trained with the same settings. Afterwards ``OUT/EXPERIMENT.json`` (one record per run)
and ``OUT/EXPERIMENT.png`` are written. ``OUT`` defaults to ``experiments/results/RECIPE``, so both recipes can sit
side by side. A run that two experiments both need (the ResNets of Figure 6 and Table 6, option A of the shortcut
study) is trained once and kept under ``table6``.

Checkpoints (``last``/``best``, for resuming) and a run's final ``weights.safetensors`` live in its run folder,
ignored by git and never committed; a run that must survive a change of machine takes its folder along outside git.
A finished run keeps in the repository what its results are read from: ``config.json`` (training and model config,
length, parameters), ``summary.json``, ``log.jsonl``, ``driver.json`` (the command and hardware), ``curves.png`` and
``tensorboard/``. Weights that other work needs are shipped in the package with ``publish`` before they go.

The paper's recipe (64k iterations, batch 128, lr 0.1 /10 at 32k and 48k; a GPU job)::

    python experiments/cifar10.py degradation --recipe cifar10_paper
    python experiments/cifar10.py table6 --recipe cifar10_paper --seeds 0 1 2
    python experiments/cifar10.py shortcuts --recipe cifar10_paper
    python experiments/cifar10.py distillation --recipe cifar10_paper   # ResNet-20 taught by Table 6's ResNet-56

The 2-core-CPU recipe (one-cycle, 30 epochs)::

    python experiments/cifar10.py degradation --recipe cifar10_cpu
    python experiments/cifar10.py table6 --recipe cifar10_cpu
    python experiments/cifar10.py shortcuts --recipe cifar10_cpu
    python experiments/cifar10.py distillation --recipe cifar10_cpu
    python experiments/cifar10.py jpeg --recipe cifar10_cpu   # ResNet-20 on the images saved again at q50, q25
    python experiments/cifar10.py mobile --recipe cifar10_cpu precision=bf16   # MobileNetV2 beside ResNet-20/56
    python experiments/cifar10.py variants --recipe cifar10_cpu --seeds 0 1 --only 'cifar_preact*' 'cifar_se*' \
        'cifar_wrn*'   # pre-activation, SE, wide: the new runs of each pair (fp32; bf16 only with bf16 instructions)

Accuracy against batch-1 latency of every finished run (ONNX Runtime, measured here side by side)::

    python experiments/cifar10.py tradeoff --out experiments/results/cifar10_cpu

Then the Markdown report of everything under ``experiments/results`` (``--extra-run DIR=COMMAND`` adds a run
trained on its own with ``resnetkit train``)::

    python experiments/cifar10.py report

The split is fixed (``data.split_seed``); ``--seeds`` changes initialisation and data order. One departure from
the paper: it warms ResNet-110 up at a constant lr 0.01 for about 400 iterations; here ResNet-110 warms up
linearly from 0 over 400 iterations (``WARMUP_110``), the warm-up our schedules have.

Options: ``--data PATH`` (default: the JPEG zip), ``--only PATTERN ...`` (run names, globs), ``--seeds 0 1 2``, and
``KEY=VALUE`` overrides anywhere on the line, applied to every run (e.g. ``precision=bf16 channels_last=true``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shlex
import statistics
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import plots  # experiments/plots.py and tables.py, beside this file
import tables
import torch
from PIL import Image, UnidentifiedImageError
from tables import DATA_NOTE
from tqdm.auto import tqdm

from resnetkit import create_model, runtime
from resnetkit.cli import build_parser as resnetkit_parser
from resnetkit.deploy.bench import interleaved_onnx_latencies
from resnetkit.deploy.export import export_onnx, sample_images
from resnetkit.models.complexity import count_macs
from resnetkit.train import TrainConfig, fit, load_config
from resnetkit.train.checkpoint import LAST
from resnetkit.train.report import read_log
from resnetkit.weights import list_weights
from resnetkit.weights.publish import publish_run

JPEG_ZIP = "../shared/data/cifar10-jpeg-train.zip"
SOURCE_JPEG_QUALITY = 75  # JPEG_ZIP's images: libjpeg's standard tables scaled for quality 75, 4:2:0 chroma
# He et al. 2015, Table 6: test error (%), shortcut option A, no zero-init. ResNet-110: best of 5 runs (6.61 ± 0.16).
PAPER_TEST_ERROR = {"cifar_resnet20": 8.75, "cifar_resnet32": 7.51, "cifar_resnet44": 7.17, "cifar_resnet56": 6.97,
                    "cifar_resnet110": 6.43}  # fmt: skip
IGNORED_CHANGES = {"out", "progress", "device", "data.workers", "data.eval_batch_size"}  # do not change the result


@dataclass(frozen=True)
class Run:
    model: str
    options: dict[str, Any] = field(default_factory=dict)  # ResNetConfig overrides
    label: str = ""  # the run's name where the model name alone is ambiguous
    panel: str = ""  # figure panel
    overrides: tuple[str, ...] = ()  # training options of this run alone (KEY=VALUE); {runs} and {seed} expand
    shared_with: str = ""  # the same training as that experiment's run of this model: trained once, kept there
    jpeg_quality: int | None = None  # train and validate on the --data images re-encoded as JPEG at this quality

    @property
    def name(self) -> str:
        return self.label or self.model

    def directory(self, out: Path, experiment: str, seed: int | str) -> Path:
        """Where this run's files live: ``OUT/runs/EXPERIMENT/NAME-seedS``, or the shared run's folder."""
        if self.shared_with:
            return out / "runs" / self.shared_with / f"{self.model}-seed{seed}"
        return out / "runs" / experiment / f"{self.name}-seed{seed}"


@dataclass(frozen=True)
class Experiment:
    title: str
    runs: tuple[Run, ...]
    figure: Callable[[list[dict], Path, str], Path]


DEPTHS = (20, 32, 44, 56)
# He et al. 2015, Sec. 4.2: ResNet-110 starts at lr 0.01 until training error is below 80% (about 400 iterations),
# then goes back to 0.1. Our schedules have a linear warm-up instead: from 0 to the peak over 400 iterations.
WARMUP_110 = ("optim.warmup_steps=400",)
# Hinton et al. 2015, as in the deployment issue: ResNet-20 learns from the finished ResNet-56 of Table 6, with
# the soft term weighted 0.9 (the common CIFAR setting) or 0.5 (as much cross-entropy as soft targets). The teacher
# is the run's final weights, written when it finishes (the same tensors as its last checkpoint's).
def distill_from_56(alpha: float) -> tuple[str, ...]:
    return ("distill.teacher={runs}/table6/cifar_resnet56-seed{seed}/weights.safetensors", "distill.temperature=4",
            f"distill.alpha={alpha}")  # fmt: skip


# How much does JPEG loss cost? Without the original images the first compression cannot be undone, but the cost of
# more of it can be measured: the same images and split, decoded and saved again at these lower qualities.
JPEG_QUALITIES = (50, 25)


EXPERIMENTS = {
    "degradation": Experiment(
        "Degradation: plain nets against ResNets (He et al. 2015, Figure 6)",
        (*(Run(f"cifar_plain{d}", panel="plain") for d in DEPTHS),
         *(Run(f"cifar_resnet{d}", panel="ResNet", shared_with="table6") for d in DEPTHS)),
        plots.error_curves),
    "table6": Experiment(
        "ResNets on CIFAR-10 (He et al. 2015, Table 6)",
        (*(Run(f"cifar_resnet{d}") for d in DEPTHS), Run("cifar_resnet110", overrides=WARMUP_110)),
        plots.error_vs_depth),
    "shortcuts": Experiment(
        "Shortcut options A and B, and zero_init_last, on ResNet-32",
        (Run("cifar_resnet32", label="option-A", shared_with="table6"),
         Run("cifar_resnet32", {"shortcut": "B"}, label="option-B"),
         Run("cifar_resnet32", {"zero_init_last": True}, label="option-A-zero-init"),
         Run("cifar_resnet32", {"shortcut": "B", "zero_init_last": True}, label="option-B-zero-init")),
        plots.error_curves),
    "distillation": Experiment(
        "Knowledge distillation: ResNet-20 alone and taught by ResNet-56",
        (Run("cifar_resnet56", label="teacher-resnet56", shared_with="table6"),
         Run("cifar_resnet20", label="resnet20-alone", shared_with="table6"),
         Run("cifar_resnet20", label="resnet20-distilled", overrides=distill_from_56(0.9)),
         Run("cifar_resnet20", label="resnet20-distilled-alpha0.5", overrides=distill_from_56(0.5))),
        plots.error_curves),
    "jpeg": Experiment(
        "JPEG quality: ResNet-20 on the images saved again at lower quality",
        (Run("cifar_resnet20", label=f"q{SOURCE_JPEG_QUALITY}-as-given", shared_with="table6"),
         *(Run("cifar_resnet20", label=f"q{q}", jpeg_quality=q) for q in JPEG_QUALITIES)),
        functools.partial(plots.error_vs_quality, source_quality=SOURCE_JPEG_QUALITY)),
    "variants": Experiment(
        "What the family's units buy: pre-activation, squeeze-and-excitation, width (He et al. 2016, Hu et al. 2018, "
        "Zagoruyko & Komodakis 2016)",
        (Run("cifar_resnet110", panel="pre-activation", overrides=WARMUP_110, shared_with="table6"),
         Run("cifar_preact_resnet110", panel="pre-activation", overrides=WARMUP_110),
         Run("cifar_preact_resnet164", panel="pre-activation", overrides=WARMUP_110),
         Run("cifar_resnet56", panel="squeeze-and-excitation", shared_with="table6"),
         Run("cifar_se_resnet56", panel="squeeze-and-excitation"),
         Run("cifar_wrn16_4", panel="wide and shallow (against ResNet-56 and -110 in the table)")),
        plots.error_curves),
    "mobile": Experiment(
        "Mobile residual units: MobileNetV2 (width 1.0, CIFAR strides) against ResNet-20 and ResNet-56",
        (Run("cifar_resnet20", shared_with="table6"), Run("cifar_resnet56", shared_with="table6"),
         Run("cifar_mobilenet_v2")),
        plots.error_curves),
}  # fmt: skip


# ---------------------------------------------------------------- running an experiment


def run_experiment(args: argparse.Namespace, command: str) -> list[dict]:
    runs = [r for r in EXPERIMENTS[args.experiment].runs if not args.only or any(fnmatch(r.name, p) for p in args.only)]
    if not runs:
        raise SystemExit(f"cifar10.py: no run of {args.experiment} matches {args.only}")
    jobs = [(run, seed) for run in runs for seed in args.seeds]
    for i, (run, seed) in enumerate(jobs, 1):
        run_dir = run.directory(args.out, args.experiment, seed)
        if train(run, seed, run_dir, args, command, f"[{i}/{len(jobs)}]") and i < len(jobs):
            write_results(args.experiment, args.out)  # so a session cut off later still leaves these results
    return write_results(args.experiment, args.out)


def collect(experiment: str, out: Path) -> list[dict]:
    """Records of every run of ``experiment`` under ``out`` (any seed, finished or not), in table order."""
    records = []
    for run in EXPERIMENTS[experiment].runs:
        pattern = run.directory(out, experiment, seed="*")
        run_dirs = pattern.parent.glob(pattern.name)
        for run_dir in sorted(run_dirs, key=lambda d: int(d.name.rsplit("-seed", 1)[1])):
            if not (run_dir / "config.json").is_file():  # written when a run starts; git keeps it when it ends
                continue
            # the run's own names here; the rest (command, hardware) from who trained it
            meta = _read_json(run_dir / "driver.json") | {"experiment": experiment, "run": run.name}
            records.append(run_record(run_dir, meta | {"panel": run.panel, "jpeg_quality": run.jpeg_quality}))
    return records


def run_overrides(run: Run, seed: int, args: argparse.Namespace) -> list[str]:
    """Data first, then the user's overrides, then what identifies the run (dotted options compose)."""
    options = [f"model.options.{key}={json.dumps(value)}" for key, value in run.options.items()]
    own = [item.format(runs=args.out / "runs", seed=seed) for item in run.overrides]
    quiet = [] if any(item.startswith("progress=") for item in args.overrides) else ["progress=false"]
    data = reencoded_path(args.data, run.jpeg_quality, args.out) if run.jpeg_quality else args.data
    return [f"data.dataset={data}", *quiet, *args.overrides, *own, f"model.name={run.model}",
            *options, f"seed={seed}"]  # fmt: skip


def train(run: Run, seed: int, run_dir: Path, args: argparse.Namespace, command: str, tag: str) -> bool:
    """Train, resume or skip one run; True if it trained."""
    overrides = run_overrides(run, seed, args)
    cfg = load_config(args.recipe, [*overrides, f"out={run_dir}"], check_data=False)  # made or checked later
    finished, resume = (run_dir / "summary.json").is_file(), (run_dir / LAST).is_file()
    if finished or resume:  # a finished run may have no checkpoint left: its config.json is compared
        check_unchanged(cfg, run_dir)
    if finished:
        print(f"{tag} skipped  {run_dir} (finished)", flush=True)
        return False
    if cfg.distill.teacher:
        check_teacher(Path(cfg.distill.teacher))
    if run.jpeg_quality:
        reencode_jpeg(args.data, Path(cfg.data.dataset), run.jpeg_quality)
    meta = _read_json(run_dir / "driver.json") if resume else {}
    here = hardware(cfg.device)
    meta = {"experiment": args.experiment, "run": run.name, "recipe": args.recipe,
            "command": meta.get("command", command),
            "train_command": shlex.join(["resnetkit", "train", args.recipe, *overrides, "--out", str(run_dir)]),
            "hardware": [*(h for h in meta.get("hardware", []) if h != here), here]}  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "driver.json").write_text(json.dumps(meta, indent=2))
    print(f"{tag} {'resumed' if resume else 'started'}  {run_dir}", flush=True)
    history = fit(cfg, resume=resume)
    error = _error(history[-1].get("val_top1")) if history else None
    print(f"{tag} finished {run_dir}" + (f": val error {error:.2f}%" if error is not None else ""), flush=True)
    return True


def check_teacher(teacher: Path) -> None:
    """Refuse to distil from a teacher run that has not finished, or whose weights are not on this machine."""
    if not (teacher.parent / "summary.json").is_file():
        raise SystemExit(f"cifar10.py: the teacher {teacher} has not finished training; run it first")
    if not teacher.is_file():  # finished elsewhere: git keeps the run's results, not its weights
        raise SystemExit(f"cifar10.py: the teacher {teacher} is not here (run weights are not committed); "
                         "copy it from the machine that trained it")  # fmt: skip


def reencoded_path(data: str, quality: int, out: Path) -> Path:
    """Where the ``jpeg`` experiment keeps ``data`` re-encoded at ``quality`` (git-ignored)."""
    return out / "reencoded" / f"{Path(data).stem}-q{quality}.zip"


def reencode_jpeg(source: str | Path, target: Path, quality: int) -> Path:
    """Write ``target``, the image zip ``source`` with every image decoded and saved again as JPEG at ``quality``
    (Pillow's 4:2:0 chroma subsampling, as the shared zip's); names are kept, and a member that does not decode is
    copied as it is (training reports and skips it). Nothing is done if ``target`` exists; written atomically."""
    if target.is_file():
        return target
    if not Path(source).is_file() or not zipfile.is_zipfile(source):
        raise SystemExit(f"cifar10.py: the jpeg experiment re-encodes a zip of images; {source} is not one "
                         "(pass its path with --data)")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    before, after = [], []  # scan bytes of each image, as given and as saved again
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(partial, "w") as dst:
        for member in tqdm(src.infolist(), desc=f"JPEG quality {quality}", unit="image", mininterval=2):
            data = src.read(member)
            if not member.is_dir():
                try:
                    with Image.open(io.BytesIO(data)) as image:
                        saved = io.BytesIO()
                        image.convert("RGB").save(saved, "JPEG", quality=quality)
                        before.append(scan_bytes(data))
                        data = saved.getvalue()
                        after.append(scan_bytes(data))
                except (OSError, UnidentifiedImageError):
                    pass
            dst.writestr(member, data)  # stored, as in the source: JPEG does not compress further
    os.replace(partial, target)
    print(f"wrote {target}: mean bytes of JPEG scan data per image {_mean(after):.0f}, "
          f"against {_mean(before):.0f} in {source}", flush=True)
    return target


def scan_bytes(jpeg: bytes) -> int | None:
    """The size of a baseline JPEG's entropy-coded data, headers and tables left out (these are most of a 32x32
    image's file): what a quality setting keeps of an image. None if ``jpeg`` is not a JPEG."""
    start = jpeg.find(b"\xff\xda")  # start of scan; its header's length follows
    if jpeg[:2] != b"\xff\xd8" or start < 0:
        return None
    return len(jpeg) - start - 2 - int.from_bytes(jpeg[start + 2:start + 4], "big") - 2  # - end-of-image marker


def mean_scan_bytes(path: str | Path) -> float:
    """The mean :func:`scan_bytes` of the JPEGs in a zip."""
    with zipfile.ZipFile(path) as archive:
        return _mean([scan_bytes(archive.read(member)) for member in archive.infolist()])


def _mean(sizes: list[int | None]) -> float:
    known = [size for size in sizes if size is not None]
    return sum(known) / max(len(known), 1)


def check_unchanged(cfg, run_dir: Path) -> None:
    """Refuse to skip or resume a run that was trained with other settings (its config.json's)."""
    new = _flatten(cfg.to_dict())
    # a setting added to resnetkit after the run started was trained at its default
    old = _flatten(TrainConfig().to_dict()) | _flatten(run_config(run_dir)["train_config"])
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
               if k not in IGNORED_CHANGES and old.get(k) != new.get(k)]  # fmt: skip
    if changed:
        raise SystemExit(f"cifar10.py: {run_dir} was trained with other settings ({'; '.join(changed)}); "
                         "run the same command again, or choose another --out")  # fmt: skip


def hardware(device: str) -> str:
    threads = torch.get_num_threads()
    return f"{runtime.hardware_name(runtime.pick_device(device))}, {threads} thread{'s' * (threads != 1)}"


# ---------------------------------------------------------------- records


def run_record(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """One run as a JSON record from the files git keeps of it: config.json, summary.json (if finished) and
    log.jsonl, with ``meta`` (who trained it: driver.json's command and hardware, and its names in the table)."""
    config, summary, log = run_config(run_dir), _read_json(run_dir / "summary.json"), read_log(run_dir / "log.jsonl")
    cfg = config["train_config"]
    epochs, steps, best_val_top1 = _progress(summary, log)
    history = [{"epoch": r["epoch"], "step": r["step"], "train_error_pct": _error(r.get("train_top1")),
                "val_error_pct": _error(r.get("val_top1"))} for r in log]  # fmt: skip
    val_top1 = next((r["val_top1"] for r in log[::-1] if "val_top1" in r), None)
    val_top1 = summary["metrics"]["val"]["top1"] if summary else val_top1
    recorded = summary.get("hardware", summary.get("device")) if summary else None  # older summaries: device only
    hardware_used = meta.get("hardware") or [recorded or "not recorded"]
    return {
        "experiment": meta.get("experiment"), "run": meta.get("run", run_dir.name), "panel": meta.get("panel", ""),
        "jpeg_quality": meta.get("jpeg_quality"),  # re-encoded at this quality (None: the images as given)
        "model": cfg["model"]["name"], "options": cfg["model"]["options"], "seed": cfg["seed"],
        "params": config["params"], "recipe": meta.get("recipe"), "dataset": cfg["data"]["dataset"],
        "val_size": cfg["data"]["val_size"], "epochs": epochs, "steps": steps,
        "total_steps": config["total_steps"], "finished": bool(summary),
        "train_time_s": sum(r.get("epoch_time_s", 0.0) for r in log),  # all sessions, training epochs only
        "wall_time_s": summary.get("wall_time_s") if summary else None,  # the last session only, with evaluation
        "device": summary.get("device") if summary else None, "hardware": " + ".join(hardware_used),
        "train_error_pct": history[-1]["train_error_pct"] if history else None,
        "val_error_pct": _error(val_top1), "best_val_error_pct": _error(best_val_top1),
        "paper_test_error_pct": None if cfg["model"]["options"] else PAPER_TEST_ERROR.get(cfg["model"]["name"]),
        "command": meta.get("command"), "train_command": meta.get("train_command"), "run_dir": str(run_dir),
        "history": history,
    }  # fmt: skip


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json, which the engine writes when a run starts: what was trained, and for how long."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise SystemExit(f"cifar10.py: {run_dir} has no config.json, so how it was trained is unknown; "
                         "choose another --out")  # fmt: skip
    return json.loads(path.read_text())


def _progress(summary: dict[str, Any], log: list[dict[str, Any]]) -> tuple[int, int, float | None]:
    """Epochs, steps and best validation top-1 so far: summary.json's once finished, else log.jsonl's."""
    if summary:
        return summary["epochs"], summary["steps"], summary["best_val_top1"]
    last = log[-1] if log else {"epoch": 0, "step": 0}
    return last["epoch"], last["step"], max((r["val_top1"] for r in log if "val_top1" in r), default=None)


def write_results(experiment: str, out: Path) -> list[dict]:
    """``OUT/EXPERIMENT.json`` and ``.png`` from every run of the experiment under ``out``."""
    records = collect(experiment, out)
    document = {"experiment": experiment, "title": EXPERIMENTS[experiment].title, "note": DATA_NOTE,
                "records": records}  # fmt: skip
    (out / f"{experiment}.json").write_text(json.dumps(document, indent=1))
    if records:
        EXPERIMENTS[experiment].figure(records, out / f"{experiment}.png", EXPERIMENTS[experiment].title)
    print(f"wrote {out / experiment}.json and {out / experiment}.png", flush=True)
    return records


def extra_record(path: str, command: str) -> dict[str, Any]:
    """A run trained on its own with ``resnetkit train``; its recipe is read from the command."""
    words = shlex.split(command)
    recipe = "?"
    if "train" in words:
        recipe = resnetkit_parser().parse_args(words[words.index("train"):]).recipe or "digits"
    return run_record(Path(path), {"experiment": "single", "run": Path(path).name, "recipe": recipe,
                                   "command": command})  # fmt: skip


def _error(top1: float | None) -> float | None:
    return None if top1 is None else 100.0 * (1.0 - top1)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in d.items():
        flat |= _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


# ---------------------------------------------------------------- accuracy against latency


def tradeoff(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``OUT/tradeoff.json``, ``.png`` and ``.md`` (a table): every finished run of every experiment under ``--out`` (the images as
    given; the ``jpeg`` experiment's re-encoded ones left out), one point per run name: validation accuracy
    (mean ± std over seeds) against batch-1 latency in ONNX Runtime, measured here side by side for every
    architecture; with params, MACs, and the training images/s and time of the machines that trained it."""
    runs: dict[str, dict[str, Any]] = {}
    for name in EXPERIMENTS:
        for r in _read_json(args.out / f"{name}.json").get("records", []):
            if r["finished"] and not r.get("jpeg_quality") and (r["run_dir"] not in runs or r["run"] == r["model"]):
                runs[r["run_dir"]] = r  # a shared run under its own (model) name
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs.values():
        groups.setdefault(r["run"], []).append(r)
    if not groups:
        raise SystemExit(f"cifar10.py: no finished runs under {args.out}; train an experiment first")
    archs = list(dict.fromkeys(_arch_key(g[0]) for g in groups.values()))
    latency = dict(zip(archs, _latencies(archs, args.threads, args.repeats)))
    shipped = {name.split(".")[0] for name in list_weights("cifar_*")}
    points = [_point(run, group, latency[_arch_key(group[0])], shipped) for run, group in groups.items()]
    document = {"title": "CIFAR-10: validation accuracy against batch-1 latency", "note": DATA_NOTE,
                "latency": f"ONNX Runtime, batch 1, {args.threads} thread(s), median of {args.repeats} calls "
                           f"interleaved over every architecture, on {runtime.hardware_name()}",
                "command": shlex.join(["python", "experiments/cifar10.py", *sys.argv[1:]]), "points": points}  # fmt: skip
    (args.out / "tradeoff.json").write_text(json.dumps(document, indent=1))
    (args.out / "tradeoff.md").write_text("\n".join(tables.tradeoff_markdown(document)))
    plots.accuracy_vs_latency(points, args.out / "tradeoff.png", document["title"], document["latency"])
    for p in sorted(points, key=lambda p: p["latency_ms"]):
        print(f"{p['run']:<28} {p['val_top1_mean']:6.2f}% ± {p['val_top1_std']:.2f} ({len(p['seeds'])} seed(s))  "
              f"{p['latency_ms']:6.2f} ms  {p['macs'] / 1e6:7.1f} M MACs  {p['params'] / 1e6:5.2f} M params")
    print(f"wrote {args.out / 'tradeoff.json'}, .png and .md", flush=True)
    return points


def _arch_key(record: dict[str, Any]) -> str:
    return json.dumps([record["model"], record["options"]], sort_keys=True)


def _latencies(archs: list[str], threads: int, repeats: int) -> list[float]:
    """Batch-1 ONNX Runtime latency (ms) of each architecture (random weights: the time does not depend on them)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, key in enumerate(tqdm(archs, desc="exporting", unit="model")):
            model, options = json.loads(key)
            paths.append(Path(tmp) / f"{i}.onnx")
            # random weights: a deep plain net's logits reach the thousands, so the parity check is relative here
            network = create_model(model, **options).eval()
            with torch.no_grad():
                scale = float(network(sample_images(2, 32)).abs().max())
            export_onnx(network, paths[-1], inputs=sample_images(2, 32), atol=max(1e-4, 1e-5 * scale))
        return interleaved_onnx_latencies(paths, 32, repeats=repeats, threads=threads)


def _point(run: str, group: list[dict[str, Any]], latency_ms: float, shipped: set[str]) -> dict[str, Any]:
    first = group[0]
    accuracy = [100.0 - r["val_error_pct"] for r in group]
    rates = [run_config(Path(r["run_dir"]))["train_config"]["data"]["batch_size"] * r["steps"] / r["train_time_s"]
             for r in group if r["train_time_s"]]  # fmt: skip
    macs = count_macs(create_model(first["model"], **first["options"]), 32, 3)
    return {"run": run, "model": first["model"], "options": first["options"], "seeds": [r["seed"] for r in group],
            "val_top1_mean": statistics.fmean(accuracy), "val_top1_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "params": first["params"], "macs": macs, "latency_ms": latency_ms,
            "train_images_per_s": statistics.fmean(rates) if rates else None,
            "train_time_s": statistics.fmean(r["train_time_s"] for r in group),
            "hardware": sorted({r["hardware"] for r in group}), "recipe": first["recipe"],
            "shipped": first["model"] in shipped and not first["options"] and run == first["model"]}  # fmt: skip


# ---------------------------------------------------------------- the report


def report(args: argparse.Namespace) -> Path:
    """``RESULTS.md``: a table per experiment JSON under ``--out`` (and one level below), figures embedded."""
    extra_path = args.out / "extra.json"
    commands = {r["run_dir"]: r["command"] for r in _read_json(extra_path).get("records", [])}
    commands |= dict(spec.split("=", 1) for spec in args.extra_run)
    extra = [extra_record(path, cmd) for path, cmd in commands.items() if (Path(path) / "config.json").is_file()]
    if extra:
        extra_path.parent.mkdir(parents=True, exist_ok=True)
        extra_path.write_text(json.dumps({"experiment": "single", "note": DATA_NOTE, "records": extra}, indent=1))
    sections = [(experiment.title, json.loads(path.read_text())["records"], path)
                for name, experiment in EXPERIMENTS.items()
                for path in [args.out / f"{name}.json", *sorted(args.out.glob(f"*/{name}.json"))] if path.is_file()]
    if extra:
        sections.append(("Single runs, trained on their own", extra, None))
    lines = tables.results_markdown(sections, args.out, args.markdown)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n".join(lines))
    print(f"wrote {args.markdown}", flush=True)
    return args.markdown


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifar10.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="experiment", required=True)
    for name, experiment in EXPERIMENTS.items():
        p = commands.add_parser(name, help=experiment.title)
        p.add_argument("--recipe", default="cifar10_paper", help="cifar10_paper (default), cifar10_cpu or a file")
        p.add_argument("--data", default=JPEG_ZIP, help=f"dataset for data.dataset (default: {JPEG_ZIP})")
        p.add_argument("--seeds", type=int, nargs="+", default=[0])
        p.add_argument("--only", nargs="+", metavar="PATTERN", help="run only these runs (names or globs)")
        p.add_argument("--out", type=Path, help="results folder (default: experiments/results/RECIPE)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every run, anywhere")
    p = commands.add_parser("report", help="write RESULTS.md from the JSON under --out")
    p.add_argument("--out", type=Path, default=Path("experiments/results"))
    p.add_argument("--markdown", type=Path, default=Path("experiments/RESULTS.md"))
    p.add_argument("--extra-run", action="append", default=[], metavar="PATH=COMMAND",
                   help="a run directory trained on its own, and the command that trained it (remembered)")  # fmt: skip
    p = commands.add_parser("tradeoff", help="accuracy against batch-1 latency of every finished run under --out")
    p.add_argument("--out", type=Path, default=Path("experiments/results/cifar10_cpu"))
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per architecture")
    p = commands.add_parser("publish", help="ship a finished run's weights in the package as MODEL.TAG")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--tag", required=True, help="e.g. c10jpeg_cpu30 (the short CPU recipe) or c10jpeg_paper")
    p.add_argument("--command", help="how it was trained (default: driver.json's train_command)")
    p.add_argument("--hardware", help="what it was trained on (default: driver.json's, else this machine)")
    p.add_argument("--half", action="store_true", help="store the weights in float16 (half the file)")
    if argv and argv[0] in EXPERIMENTS:  # KEY=VALUE may follow --seeds/--only, whose nargs would swallow it
        overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
        args = parser.parse_args([a for a in argv if a not in overrides])
        args.overrides = overrides
        args.out = args.out or Path("experiments/results") / Path(args.recipe).stem
        return args
    return parser.parse_args(argv)


def publish(args: argparse.Namespace) -> None:
    """Ship a finished run's final weights inside the package as ``<model>.<tag>``, a task run's as
    ``<head>_<model>.<tag>`` (see resnetkit.weights.publish)."""
    meta = _read_json(args.run_dir / "driver.json")
    command = args.command or meta.get("train_command")
    if not command:
        raise SystemExit(f"cifar10.py: {args.run_dir} has no driver.json; say how it was trained with --command")
    if not (args.run_dir / "summary.json").is_file():
        raise SystemExit(f"cifar10.py: {args.run_dir} has not finished (no summary.json); resume it first")
    machine = args.hardware or " + ".join(meta.get("hardware", [])) or hardware("auto")
    entry = publish_run(args.run_dir, args.tag, command, machine, half=args.half)
    if "name" in entry:  # a detector or segmenter (resnetkit train camvid_deeplabv3, balloon_maskrcnn)
        name, score = entry["name"], "; ".join(f"{k} {v:.4f}" for m in entry["metrics"].values() for k, v in m.items())
    else:
        name, score = f"{entry['arch']}.{entry['tag']}", f"val top-1 {entry['metrics'][0]['top1']:.2f}%"
    print(f"published {name}: {score}, {entry['file_mb']} MB, sha256 {entry['sha256'][:12]}...", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.experiment == "report":
        report(args)
    elif args.experiment == "publish":
        publish(args)
    elif args.experiment == "tradeoff":
        tradeoff(args)
    else:
        run_experiment(args, shlex.join(["python", "experiments/cifar10.py", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
