"""SGD with the papers' options, and learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimSection, Schedule


def lr_factor(step: int, total_steps: int, cfg: OptimSection) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of a run of ``total_steps``.

    A pure function, so a resumed run needs only its step to continue the schedule exactly.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = step / max(total_steps, 1)
    if cfg.schedule is Schedule.MULTISTEP:
        return cfg.gamma ** sum(step >= round(m * total_steps) for m in cfg.milestones)
    if cfg.schedule is Schedule.COSINE:
        start = cfg.warmup_steps / max(total_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * (progress - start) / max(1.0 - start, 1e-8)))
    if cfg.schedule is Schedule.ONECYCLE:
        if progress < cfg.pct_start:
            return progress / cfg.pct_start
        return max(0.0, (1.0 - progress) / (1.0 - cfg.pct_start))
    return 1.0


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """One group, or two: weights with decay, norm parameters and biases (1-d tensors) without."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.SGD:
    groups = param_groups(model, cfg.weight_decay, cfg.no_decay_norm_bias)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
