"""The training engine: ``fit(config) -> history``, read top to bottom.

One epoch is :func:`train_epoch`; validation is the task's ``evaluate``; :func:`fit` sets up, loops over epochs,
logs, checkpoints (atomically, last and best) and writes ``summary.json`` and the curves. The learning rate is a
pure function of the step, and the data order and augmentation are functions of (seed, epoch), so a run resumed
from its last checkpoint continues exactly as if it had never stopped.

What is learned is a :class:`~.task.Task`: its data, model, loss, metric and record. The default is
:class:`~.task.Classification` (cross-entropy or knowledge distillation from ``distill.teacher``, see
:mod:`.losses`; with ``init_from`` the network comes from any model file or registry name);
:mod:`resnetkit.tasks.training` adds detection and segmentation, run by this same loop.

Checkpoints are resnetkit model files (see :mod:`.checkpoint`): ``last.safetensors`` with the training state,
``best.safetensors`` and, at the end, ``weights.safetensors`` with the weights and their record alone.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .. import runtime
from ..errors import UserError
from ..io import atomic_write
from ..models.qat import prepare_qat
from ..weights import load_checked
from ..weights.format import read_record
from . import distributed as D
from .checkpoint import BEST, LAST, WEIGHTS, Checkpoint, resumable_state, save_checkpoint
from .config import TrainConfig, resume_changes
from .data import RunData
from .optim import lr_factor, make_optimizer, set_lr
from .report import RunLog, plot_curves
from .task import Classification, Task, evaluate, memory_format, recipe_summary  # noqa: F401 (evaluate, recipe_summary: re-exported)

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
    model: nn.Module  # the bare network
    net: nn.Module  # what runs the forward pass: the model, maybe compiled and/or in DDP
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    total_steps: int
    task: Task
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

    @property
    def teacher(self) -> dict[str, Any] | None:
        """Distillation: the teacher's checkpoint, name and validation top-1 (classification only)."""
        return getattr(self.task, "teacher", None)

    @property
    def val_metric(self) -> str:
        """The epoch-record key that picks ``best.safetensors``: ``val_top1``, ``val_miou``, ..."""
        return f"val_{self.task.metric}"


def build_trainer(cfg: TrainConfig, task: Task | None = None) -> Trainer:
    """The run's live objects; ``task`` is classification unless given (see :mod:`resnetkit.tasks.training`)."""
    task = task or Classification()
    task.check(cfg)
    device = runtime.pick_device(cfg.device)
    world = D.setup(device)
    device = D.local_device(device, world)
    runtime.seed_everything(cfg.seed, cfg.deterministic)
    data = task.build_data(cfg, device, world)
    cfg, model = task.build_model(cfg, data, world)
    if cfg.qat:  # before EMA, DDP and compile, which copy or wrap the modules
        prepare_qat(model)
    model.to(device, memory_format=memory_format(cfg))
    net = D.wrap(model, world, device, cfg.sync_bn)
    if cfg.compile:
        net = torch.compile(net)
    ema = None
    if cfg.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    total_steps = cfg.steps or cfg.epochs * data.steps_per_epoch
    t = Trainer(cfg, world, device, data, model, net, make_optimizer(model, cfg.optim),
                runtime.grad_scaler(device, cfg.precision), ema, total_steps, task)  # fmt: skip
    task.setup(t)
    return t


def train_epoch(t: Trainer) -> dict[str, float]:
    """One pass over the training batches (stopping early at the run's last step)."""
    cfg, seen, start = t.cfg, 0, time.perf_counter()
    loss_sum, correct = torch.zeros((), device=t.device), None  # summed on the device
    t.net.train()
    steps = min(t.data.steps_per_epoch, t.total_steps - t.step)
    bar = tqdm(total=steps, desc=f"epoch {t.epoch + 1}/{epochs_of(t)}", unit="step",
               disable=not (cfg.progress and t.world.is_main), leave=False, dynamic_ncols=True)  # fmt: skip
    for i, (images, targets) in enumerate(t.data.train_batches(t.epoch)):
        if i == steps:
            break
        set_lr(t.optimizer, cfg.optim.lr * lr_factor(t.step, t.total_steps, cfg.optim))
        with runtime.autocast(t.device, cfg.precision):
            loss, hits = t.task.train_loss(t, images, targets)
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
        if hits is not None:
            correct = hits if correct is None else correct + hits
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
    record = {"train_loss": loss, "images_per_s": seen / elapsed, "epoch_time_s": elapsed}
    if correct is not None:
        record["train_top1"] = float(D.all_reduce_mean(correct * t.world.size / max(seen, 1), t.world))
    return record


def _check_finite(loss: float, t: Trainer) -> None:
    if not math.isfinite(loss):
        last = t.out / LAST
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss became {loss} at step {t.step} (epoch {t.epoch + 1}); stopped; {kept}. "
                               "Try a lower optim.lr or optim.grad_clip")  # fmt: skip


def epochs_of(t: Trainer) -> int:
    return math.ceil(t.total_steps / t.data.steps_per_epoch)


def fit(cfg: TrainConfig, resume: bool = False, task: Task | None = None) -> list[dict[str, Any]]:
    """Train ``cfg`` into ``cfg.out`` and return the per-epoch history; ``task`` is classification unless given.

    Writes ``config.json`` at the start; every epoch ``last.safetensors`` (weights and training state) and, when
    the task's validation metric improves, ``best.safetensors``; ``log.jsonl``, TensorBoard scalars and ``curves.png``; at the
    end ``summary.json`` and the final weights alone as ``weights.safetensors``. With ``resume``, continues from
    ``last.safetensors`` in ``cfg.out``.
    """
    if resume:
        cfg = _resumed(cfg)
    t = build_trainer(cfg, task)
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
                val = t.task.evaluate(t.eval_model, t.data.val_batches(), t.data, cfg)
                record |= {f"val_{k}": v for k, v in val.summary().items() if k != "count"}
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
    record = {"train_config": t.cfg.to_dict(), "task": t.task.name, **t.task.model_config(t.model),
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
    value = record.get(t.val_metric, -1.0)
    is_best = value > t.best_val  # NaN (nothing to measure yet) is never best
    t.best_val = t.best_val if math.isnan(value) else max(t.best_val, value)
    weights, model_record = _eval_weights(t), t.task.record(t, record)
    save_checkpoint(t.out / LAST, weights, model_record, _train_state(t, record))
    if is_best:
        save_checkpoint(t.out / BEST, weights, model_record)
    log.write(record)  # after the checkpoint: a resumed run drops log lines past its checkpoint, never repeats one
    plot_curves(t.history, t.out / "curves.png", title=f"{t.cfg.model.name} on {t.cfg.data.dataset}",
                metric=t.task.metric)  # fmt: skip
    if t.cfg.progress:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k in ("train_loss", "val_loss", t.val_metric))
        tqdm.write(f"epoch {t.epoch}/{epochs_of(t)}: {shown}")


def _eval_weights(t: Trainer) -> dict[str, torch.Tensor]:
    """The weights a checkpoint offers for evaluation and deployment: the EMA when the run keeps one."""
    return t.eval_model.state_dict()


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
        meter = t.task.evaluate(t.eval_model, batches, t.data, t.cfg)
        final[split] = {**meter.summary(), **meter.details(), "skipped_images": t.data.skipped(split)}
    train_images_per_s = [r["images_per_s"] for r in t.history if "images_per_s" in r]
    summary = {
        "task": t.task.name,
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
        f"best_{t.val_metric}": t.best_val,
        "init_from": t.cfg.init_from or None,
        "teacher": t.teacher,
        "checkpoint": str(t.out / LAST),
    }
    save_checkpoint(t.out / WEIGHTS, _eval_weights(t), t.task.record(t, t.history[-1] if t.history else {}))
    atomic_write(t.out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    label = "top-1" if t.task.metric == "top1" else t.task.metric
    line = ", ".join(f"{split} {label} {100 * m[t.task.metric]:.2f}%" for split, m in final.items())
    print(f"done: {t.cfg.model.name} on {t.cfg.data.dataset}, {t.epoch} epochs in {wall_time:.0f} s; {line}; "
          f"wrote {t.out}/")  # fmt: skip
    return summary
