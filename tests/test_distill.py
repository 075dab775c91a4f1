"""Knowledge distillation: the loss against a hand computation, and a tiny student trained from a real teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from resnetkit import load_model
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.weights import save_weights
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.engine import build_trainer, fit
from resnetkit.workflows import evaluate_model
from resnetkit.train.losses import distillation_loss, make_loss_fn, soft_target_loss

TINY = ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "data.batch_size=32", "progress=false",
        "optim.schedule=cosine", "optim.lr=0.05", "steps=4"]  # fmt: skip


def tiny(tmp_path, *overrides):
    return load_config(recipe_path("digits"), [*TINY, f"out={tmp_path / 'run'}", *overrides])


def _softmax(xs: list[float], t: float) -> list[float]:
    exps = [math.exp(x / t) for x in xs]
    return [e / sum(exps) for e in exps]


def test_distillation_loss_matches_a_hand_computation():
    student, teacher, labels, t, alpha = [[1.0, 2.0, 0.5]], [[3.0, 0.0, 1.0]], [1], 2.0, 0.7
    p_s, p_t = _softmax(student[0], t), _softmax(teacher[0], t)
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    ce = -math.log(_softmax(student[0], 1.0)[labels[0]])
    expected = alpha * t * t * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), t, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_cross_entropy_with_smoothing_and_soft_targets():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    hard = torch.randint(0, 5, (8,), generator=g)
    soft = torch.softmax(torch.randn(8, 5, generator=g), 1)  # MixUp/CutMix targets
    for targets in (hard, soft):
        expected = F.cross_entropy(student, targets, label_smoothing=0.1)
        got = distillation_loss(student, teacher, targets, temperature=4.0, alpha=0.0, label_smoothing=0.1)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_soft_term_is_zero_when_student_equals_teacher():
    logits = torch.randn(4, 10)
    assert soft_target_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_squared_keeps_gradient_scale_comparable():
    """Hinton et al. section 2: the soft gradients scale as 1/T^2; multiplying by T^2 undoes it."""
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    norms = {}
    for t in (2.0, 4.0, 8.0, 16.0):
        x = student.clone().requires_grad_(True)
        soft_target_loss(x, teacher, t).backward()
        norms[t] = x.grad.norm().item()
    assert max(norms.values()) / min(norms.values()) < 1.5  # unscaled, 2 -> 16 would shrink them ~60x
    assert norms[16.0] / 16.0**2 < norms[2.0] / 2.0**2 / 30


def test_loss_fn_runs_the_teacher_without_gradients(tmp_path):
    teacher = torch.nn.Linear(6, 3)
    student = torch.nn.Linear(6, 3)
    loss_fn = make_loss_fn(tiny(tmp_path, "distill.teacher=unused.pt", "distill.alpha=0.5"), teacher)
    images, labels = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    loss_fn(student(images), labels, images).backward()
    assert teacher.weight.grad is None and student.weight.grad is not None


def test_config_section_parses_and_checks_ranges():
    overrides = ["model=cifar_resnet20", "distill.teacher=runs/r56/best.pt", "distill.temperature=2"]
    cfg = load_config("cifar10_cpu", overrides)
    assert (cfg.distill.teacher, cfg.distill.temperature, cfg.distill.alpha) == ("runs/r56/best.pt", 2.0, 0.9)
    assert cfg.to_dict()["distill"] == {"teacher": "runs/r56/best.pt", "temperature": 2.0, "alpha": 0.9}
    with pytest.raises(ValueError, match="distill.alpha=1.5 must be between 0 and 1"):
        load_config(None, ["distill.alpha=1.5"])
    with pytest.raises(ValueError, match="distill.temperature=0.0 must be positive"):
        load_config(None, ["distill.temperature=0"])


def test_student_trains_from_a_teacher_checkpoint_and_records_it(tmp_path, tiny_checkpoint):
    history = fit(tiny(tmp_path, f"distill.teacher={tiny_checkpoint}", "model.name=cifar_plain20"))
    assert history and math.isfinite(history[-1]["train_loss"])
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    teacher = last.train_state["teacher"]
    teacher_val = evaluate_model(str(tiny_checkpoint), split="val").meter.top1
    assert teacher["checkpoint"] == str(tiny_checkpoint)
    assert teacher["model_name"] == "cifar_resnet20"
    assert teacher["val_top1"] == pytest.approx(teacher_val)  # measured on the student's val split
    assert last.record.train_config["distill"]["teacher"] == str(tiny_checkpoint)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher"] == teacher


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file 'no/such/teacher.pt' not found"):
        build_trainer(tiny(tmp_path, "distill.teacher=no/such/teacher.pt"))


def test_teacher_with_other_classes_is_a_clear_error(tmp_path, tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    path = tmp_path / "reversed.safetensors"
    save_weights(path, model, model.record.replace(classes=tuple(reversed(model.record.classes))))
    expected = r"distill.teacher .*reversed.safetensors predicts 10 classes \[9, 8, 7, 6, ...\] but the dataset has 10 \[0, 1"
    with pytest.raises(ValueError, match=expected):
        build_trainer(tiny(tmp_path, f"distill.teacher={path}"))
