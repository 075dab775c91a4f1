"""The training engine: ``fit(config) -> history``, read top to bottom.

One epoch is :func:`train_epoch`; validation is :func:`evaluate`; :func:`fit` sets up, loops over epochs, logs,
checkpoints (atomically, last and best) and writes ``summary.json`` and the curves. The learning rate is a pure
function of the step, and the data order and augmentation are functions of (seed, epoch), so a run resumed from
its last checkpoint continues exactly as if it had never stopped.

The objective is one ``loss_fn(logits, targets, images)`` built once (cross-entropy, or knowledge distillation
from ``distill.teacher``; see :mod:`.losses`). With ``init_from`` the network (architecture, surgery edits and
weights) comes from any model file or registry name instead of a fresh variant.

Checkpoints are resnetkit model files (see :mod:`.checkpoint`): ``last.safetensors`` with the training state,
``best.safetensors`` and, at the end, ``weights.safetensors`` with the weights and their record alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import runtime
from ..errors import UserError
from ..io import atomic_write
from ..models import Metric, ModelRecord, Preprocess, ResNet, create_model, get_variant
from ..models.qat import prepare_qat
from ..models.surgery import surgery_of
from ..weights import load_checked, load_model
from ..weights.format import read_record
from . import distributed as D
from .checkpoint import BEST, LAST, WEIGHTS, Checkpoint, resumable_state, save_checkpoint
from .config import ModelSection, TrainConfig, resume_changes
from .data import RunData, build_data
from .losses import LossFn, check_classes, load_teacher, make_loss_fn
from .metrics import ClassificationMeter
from .optim import lr_factor, make_optimizer, set_lr
from .report import RunLog, plot_curves

LOG_EVERY = 10  # steps between loss checks and progress-bar updates


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Trainer:
    """The live objects of a run."""

    cfg: TrainConfig
    world: D.World
    device: torch.device
    data: RunData
    model: ResNet  # the bare network
    net: nn.Module  # what runs the forward pass: the model, maybe compiled and/or in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    total_steps: int
    loss_fn: LossFn  # (logits, targets, images) -> loss; see .losses
    teacher: dict[str, Any] | None = None  # distillation: the teacher's checkpoint, name and val top-1
    step: int = 0
    epoch: int = 0
    best_val: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def build_trainer(cfg: TrainConfig) -> Trainer:
    device = runtime.pick_device(cfg.device)
    world = D.setup(device)
    device = D.local_device(device, world)
    runtime.seed_everything(cfg.seed, cfg.deterministic)
    data = build_data(cfg, device, world)
    cfg, model = initial_model(cfg, data, world)
    if cfg.qat:  # before EMA, DDP and compile, which copy or wrap the modules
        prepare_qat(model)
    model.to(device, memory_format=_memory_format(cfg))
    net = D.wrap(model, world, device, cfg.sync_bn)
    if cfg.compile:
        net = torch.compile(net)
    ema = None
    if cfg.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    total_steps = cfg.steps or cfg.epochs * data.steps_per_epoch
    teacher, teacher_info = _teacher(cfg, data, device, world)
    return Trainer(cfg, world, device, data, model, net, make_optimizer(model, cfg.optim),
                   runtime.grad_scaler(device, cfg.precision), ema, total_steps, make_loss_fn(cfg, teacher),
                   teacher_info)  # fmt: skip


def initial_model(cfg: TrainConfig, data: RunData, world: D.World) -> tuple[TrainConfig, ResNet]:
    """A fresh ``cfg.model`` variant, or with ``init_from`` that model file's network and weights.

    The file decides the architecture (variant, options and surgery edits): the returned config's model section is
    the file's, replacing the recipe's (a note is printed when they differ).
    """
    if not cfg.init_from:
        return cfg, create_model(cfg.model.name, num_classes=data.num_classes, in_chans=data.in_chans,
                                 **cfg.model.options)  # fmt: skip
    model = load_model(cfg.init_from)
    check_classes(list(model.record.classes), data.classes, f"init_from {cfg.init_from}")
    section = ModelSection(model.record.arch, _options_of(model.record))
    if section != cfg.model and world.is_main:
        print(f"init_from: the architecture is {cfg.init_from}'s ({section.name}, {len(model.record.edits)} "
              f"surgery edits); the config's model section ({cfg.model.name}) is not used")  # fmt: skip
    return dataclasses.replace(cfg, model=section), model


def _options_of(record: ModelRecord) -> dict[str, Any]:
    """The model options that turn the record's variant into its config (what ``model.options`` would say)."""
    ours, default = record.config.to_dict(), get_variant(record.arch).config.to_dict()
    return {k: v for k, v in ours.items() if v != default[k] and k not in ("num_classes", "in_chans")}


def _teacher(cfg: TrainConfig, data: RunData, device: torch.device, world: D.World) -> tuple[nn.Module | None, Any]:
    """The frozen distillation teacher and its record (with its top-1 on this run's val split), or ``None``s."""
    if not cfg.distill.teacher:
        return None, None
    teacher, info = load_teacher(cfg.distill.teacher, data.classes, device, _memory_format(cfg))
    if world.is_main:
        info["val_top1"] = evaluate(teacher, data.val_batches(), data.num_classes, device, cfg).top1
        if cfg.progress:
            d = cfg.distill
            print(f"distilling from {info['checkpoint']} ({info['model_name']}, val top-1 "
                  f"{100 * info['val_top1']:.2f}%), T={d.temperature:g}, alpha={d.alpha:g}")  # fmt: skip
    return teacher, info


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.preserve_format


def train_epoch(t: Trainer) -> dict[str, float]:
    """One pass over the training batches (stopping early at the run's last step)."""
    cfg, seen, start = t.cfg, 0, time.perf_counter()
    loss_sum, correct = torch.zeros((), device=t.device), torch.zeros((), device=t.device)  # summed on the device
    t.net.train()
    steps = min(t.data.steps_per_epoch, t.total_steps - t.step)
    bar = tqdm(total=steps, desc=f"epoch {t.epoch + 1}/{epochs_of(t)}", unit="step",
               disable=not (cfg.progress and t.world.is_main), leave=False, dynamic_ncols=True)  # fmt: skip
    for i, (images, targets) in enumerate(t.data.train_batches(t.epoch)):
        if i == steps:
            break
        set_lr(t.optimizer, cfg.optim.lr * lr_factor(t.step, t.total_steps, cfg.optim))
        with runtime.autocast(t.device, cfg.precision):
            logits = t.net(images)
            loss = t.loss_fn(logits, targets, images)
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            t.scaler.unscale_(t.optimizer)
            nn.utils.clip_grad_norm_(t.model.parameters(), cfg.optim.grad_clip)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        t.step += 1
        loss_sum += loss.detach()
        hard = targets.argmax(1) if targets.ndim == 2 else targets  # MixUp/CutMix: the dominant class
        correct += (logits.detach().argmax(1) == hard).sum()
        seen += len(images) * t.world.size
        if (i + 1) % LOG_EVERY == 0 or i + 1 == steps:
            mean_loss = loss_sum.item() / (i + 1)
            _check_finite(mean_loss, t)
            bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}",
                            lr=f"{t.optimizer.param_groups[0]['lr']:.4g}")  # fmt: skip
            bar.update((i + 1) - bar.n)
    bar.close()
    elapsed = time.perf_counter() - start
    loss = float(D.all_reduce_mean(loss_sum / max(steps, 1), t.world))
    top1 = float(D.all_reduce_mean(correct * t.world.size / max(seen, 1), t.world))
    return {"train_loss": loss, "train_top1": top1, "images_per_s": seen / elapsed, "epoch_time_s": elapsed}


def _check_finite(loss: float, t: Trainer) -> None:
    if not math.isfinite(loss):
        last = t.out / LAST
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss became {loss} at step {t.step} (epoch {t.epoch + 1}); stopped; {kept}. "
                               "Try a lower optim.lr or optim.grad_clip")  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, batches, num_classes: int, device: torch.device, cfg: TrainConfig) -> ClassificationMeter:
    """Loss, top-1/top-5 and confusion matrix of ``model`` (a module, put in eval mode, or any function from
    images to logits) over ``batches`` (no augmentation)."""
    if isinstance(model, nn.Module):
        model.eval()
    meter = ClassificationMeter(num_classes)
    for images, labels in batches:
        with runtime.autocast(device, cfg.precision):
            logits = model(images)
        meter.update(logits, labels, F.cross_entropy(logits.float(), labels).item())
    return meter


def epochs_of(t: Trainer) -> int:
    return math.ceil(t.total_steps / t.data.steps_per_epoch)


def fit(cfg: TrainConfig, resume: bool = False) -> list[dict[str, Any]]:
    """Train ``cfg`` into ``cfg.out`` and return the per-epoch history.

    Writes ``config.json`` at the start; every epoch ``last.safetensors`` (weights and training state) and, when
    validation top-1 improves, ``best.safetensors``; ``log.jsonl``, TensorBoard scalars and ``curves.png``; at the
    end ``summary.json`` and the final weights alone as ``weights.safetensors``. With ``resume``, continues from
    ``last.safetensors`` in ``cfg.out``.
    """
    if resume:
        cfg = _resumed(cfg)
    t = build_trainer(cfg)
    started = time.perf_counter()
    if t.world.is_main:
        remove_stale_temporaries(t.out)
    checkpoint = resumable_state(t.out / LAST) if resume else None
    if checkpoint is not None:
        _restore(t, checkpoint)
    log = RunLog(t.out, resume=resume, until=t.epoch if resume else None) if t.world.is_main else None
    if log and checkpoint is not None and not any(r.get("epoch") == t.epoch for r in log.records):
        log.write(checkpoint.train_state["metrics"])  # killed after the checkpoint, before its log line
    if t.world.is_main:
        _write_run_config(t)
    t.history = list(log.records) if log else []
    try:
        while t.step < t.total_steps:
            record = {"epoch": t.epoch + 1, **train_epoch(t)}
            t.epoch += 1
            if t.world.is_main and (t.epoch % cfg.eval_every == 0 or t.step >= t.total_steps):
                val = evaluate(t.eval_model, t.data.val_batches(), t.data.num_classes, t.device, cfg)
                record |= {"val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5}
            record |= {"step": t.step, "lr": t.optimizer.param_groups[0]["lr"]}
            if t.world.is_main:
                _end_of_epoch(t, record, log)
            D.barrier(t.world)
    finally:
        if log:
            log.close()
    if t.world.is_main:
        _finish(t, time.perf_counter() - started)
    D.teardown(t.world)
    return t.history


def _write_run_config(t: Trainer) -> None:
    """``config.json``: what the run is (training config, model config and edits, classes, length), readable
    without the checkpoint, which a finished run may no longer keep."""
    record = {"train_config": t.cfg.to_dict(), "model_config": t.model.config.to_dict(), "edits": surgery_of(t.model),
              "classes": list(t.data.classes), "total_steps": t.total_steps,
              "params": sum(p.numel() for p in t.model.parameters())}  # fmt: skip
    atomic_write(t.out / "config.json", lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files that writes cut off by a kill left in the run folder (``.last.safetensors.*.tmp``,
    each as large as a checkpoint); only the process that writes the run's files may call this."""
    stale = [p for p in out.glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _resumed(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` if it is the config the run in ``cfg.out`` was trained with, but for what may change on resuming
    (a longer ``epochs``, ...: printed); a one-line error before anything is built otherwise."""
    stored = TrainConfig.from_dict(read_record(Path(cfg.out) / LAST).train_config)
    for key, (old, new) in resume_changes(stored, cfg).items():
        print(f"resume: {key} {old!r} -> {new!r}")
    return cfg


def _end_of_epoch(t: Trainer, record: dict[str, Any], log: RunLog) -> None:
    t.history.append(record)
    is_best = record.get("val_top1", -1.0) > t.best_val
    t.best_val = max(t.best_val, record.get("val_top1", -1.0))
    weights, model_record = _eval_weights(t), _record(t, record)
    save_checkpoint(t.out / LAST, weights, model_record, _train_state(t, record))
    if is_best:
        save_checkpoint(t.out / BEST, weights, model_record)
    log.write(record)  # after the checkpoint: a resumed run drops log lines past its checkpoint, never repeats one
    plot_curves(t.history, t.out / "curves.png", title=f"{t.cfg.model.name} on {t.cfg.data.dataset}")
    if t.cfg.progress:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k in ("train_loss", "val_loss", "val_top1"))
        tqdm.write(f"epoch {t.epoch}/{epochs_of(t)}: {shown}")


def _eval_weights(t: Trainer) -> dict[str, torch.Tensor]:
    """The weights a checkpoint offers for evaluation and deployment: the EMA when the run keeps one."""
    return t.eval_model.state_dict()


def _record(t: Trainer, epoch_record: dict[str, Any]) -> ModelRecord:
    """What the run's weights are: architecture and edits, data preprocessing, classes, this epoch's validation
    accuracy on the run's own split, and the training config that rebuilds that split."""
    d = t.cfg.data
    metrics = ()
    if "val_top1" in epoch_record:
        split = f"val ({int(d.val_size) if d.val_size >= 1 else f'{d.val_size:.0%}'} held out, split_seed {d.split_seed})"
        top5 = 100 * epoch_record["val_top5"] if "val_top5" in epoch_record else None
        metrics = (Metric(d.dataset, split, 100 * epoch_record["val_top1"], top5),)
    return ModelRecord(
        t.cfg.model.name, t.model.config, Preprocess.square(d.input_size, t.data.mean, t.data.std), tuple(t.data.classes),
        metrics, recipe_summary(t.cfg), source=f"resnetkit training run {t.out}",
        extra={"epoch": t.epoch, "step": t.step, "ema": t.ema is not None}, edits=tuple(surgery_of(t.model)),
        train_config=t.cfg.to_dict(),
    )  # fmt: skip


def recipe_summary(cfg: TrainConfig) -> str:
    """The recipe in one line: optimizer, schedule, batch, length, augmentation, precision."""
    o, d = cfg.optim, cfg.data
    length = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs"
    text = (f"SGD lr {o.lr} ({o.schedule.value}), momentum {o.momentum}, wd {o.weight_decay}, batch {d.batch_size}, "
            f"{length}, {d.augment.value} augmentation")  # fmt: skip
    return text if cfg.precision.value == "fp32" else f"{text}, {cfg.precision.value} autocast"


def _train_state(t: Trainer, record: dict[str, Any]) -> dict[str, Any]:
    """Everything ``--resume`` needs besides the evaluation weights."""
    return {
        "model": t.model.state_dict() if t.ema is not None else None,  # the raw weights, when the EMA is saved
        "ema_updates": int(t.ema.n_averaged) if t.ema is not None else 0,
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict(),
        "total_steps": t.total_steps,
        "rng": runtime.rng_state(),
        "step": t.step,
        "epoch": t.epoch,
        "best_val_top1": t.best_val,
        "metrics": record,
        "teacher": t.teacher,
    }


def _restore(t: Trainer, checkpoint: Checkpoint) -> None:
    state = checkpoint.train_state
    if t.ema is not None:
        t.ema.module.load_state_dict(checkpoint.weights)
        t.ema.n_averaged.fill_(state["ema_updates"])
    load_checked(t.model, state["model"] if state["model"] is not None else checkpoint.weights, f"{t.out / LAST}")
    t.optimizer.load_state_dict(state["optimizer"])
    t.scaler.load_state_dict(state["scaler"])
    runtime.set_rng_state(state["rng"])
    t.step, t.epoch, t.best_val = state["step"], state["epoch"], state["best_val_top1"]


def _finish(t: Trainer, wall_time: float) -> dict[str, Any]:
    """Final metrics on every split with the final weights (EMA if used); summary.json and the summary line."""
    final = {}
    for split, batches in t.data.eval_splits().items():
        meter = evaluate(t.eval_model, batches, t.data.num_classes, t.device, t.cfg)
        final[split] = {**meter.summary(), "per_class_top1": meter.per_class_accuracy(),
                        "skipped_images": t.data.skipped(split)}  # fmt: skip
    train_images_per_s = [r["images_per_s"] for r in t.history if "images_per_s" in r]
    summary = {
        "model": t.cfg.model.name,
        "dataset": t.cfg.data.dataset,
        "epochs": t.epoch,
        "steps": t.step,
        "total_steps": t.total_steps,
        "wall_time_s": wall_time,
        "images_per_s": sum(train_images_per_s) / max(len(train_images_per_s), 1),
        "device": str(t.device),
        "hardware": runtime.hardware_name(t.device),
        "world_size": t.world.size,
        "metrics": final,
        "best_val_top1": t.best_val,
        "init_from": t.cfg.init_from or None,
        "teacher": t.teacher,
        "checkpoint": str(t.out / LAST),
    }
    save_checkpoint(t.out / WEIGHTS, _eval_weights(t), _record(t, t.history[-1] if t.history else {}))
    atomic_write(t.out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    line = ", ".join(f"{split} top-1 {100 * m['top1']:.2f}%" for split, m in final.items())
    print(f"done: {t.cfg.model.name} on {t.cfg.data.dataset}, {t.epoch} epochs in {wall_time:.0f} s; {line}; "
          f"wrote {t.out}/")  # fmt: skip
    return summary
