"""Training objectives: cross-entropy and knowledge distillation, as pure functions plus the ``loss_fn`` a run uses.

The engine calls one ``loss_fn(logits, targets, images)`` built once by :func:`make_loss_fn`, so distillation is a
different function rather than a branch in the training loop. ``targets`` are class indices, or class
probabilities under MixUp/CutMix.

Knowledge distillation follows Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015):
the student matches the teacher's temperature-softened distribution, and the soft term is multiplied by ``T^2``
because its gradients scale as ``1/T^2`` (section 2), so changing ``T`` does not change the balance with the
cross-entropy term.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_model
from .config import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets, images) -> loss


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch (in float32)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s objective: ``alpha * soft_target_loss + (1 - alpha) * cross_entropy``.

    Args:
        student_logits: ``(N, K)`` logits being trained.
        teacher_logits: ``(N, K)`` logits of the teacher on the same images (no gradient needed).
        targets: ``(N,)`` class indices or ``(N, K)`` class probabilities (MixUp/CutMix).
        temperature: ``T``; larger values soften both distributions.
        alpha: weight of the soft term, in ``[0, 1]``; 0 gives plain cross-entropy.
        label_smoothing: applied to the cross-entropy term only.
    """
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    return alpha * soft + (1.0 - alpha) * hard


def make_loss_fn(cfg: TrainConfig, teacher: nn.Module | None = None) -> LossFn:
    """The run's objective: cross-entropy, or distillation from ``teacher`` when one is given.

    Called inside the training step's autocast, so the teacher's forward runs under the same precision.
    """
    smoothing = cfg.optim.label_smoothing
    if teacher is None:
        return lambda logits, targets, images: F.cross_entropy(logits, targets, label_smoothing=smoothing)
    d = cfg.distill

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(images)
        return distillation_loss(logits, teacher_logits, targets, d.temperature, d.alpha, smoothing)

    return loss_fn


def load_teacher(
    path: str | Path,
    classes: list[str],
    device: torch.device,
    memory_format: torch.memory_format = torch.preserve_format,
) -> tuple[nn.Module, dict[str, Any]]:
    """A frozen teacher in eval mode on ``device`` from any model file or registry name, and a record of where it
    came from.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the teacher does not predict ``classes`` (same names, same order).
    """
    teacher = load_model(path)
    check_classes(list(teacher.record.classes), classes, f"distill.teacher {path}")
    teacher = teacher.to(device, memory_format=memory_format).eval()
    teacher.requires_grad_(False)
    return teacher, {"checkpoint": str(path), "model_name": teacher.record.arch}


def check_classes(theirs: list[str], ours: list[str], what: str) -> None:
    """One-line error unless a checkpoint's classes are the dataset's, in the same order."""
    if list(theirs) != list(ours):
        raise ValueError(f"{what} predicts {len(theirs)} classes {_few(theirs)} but the dataset has {len(ours)} "
                         f"{_few(ours)}; they must be the same classes in the same order")  # fmt: skip


def _few(names: list[str]) -> str:
    return "[" + ", ".join(names[:4]) + (", ...]" if len(names) > 4 else "]")
