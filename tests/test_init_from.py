"""Starting a run from a checkpoint (``init_from``), and checkpoints of architecture-edited (compressed) models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from resnetkit.compress.surgery import apply_surgery, record_surgery, register_op
from resnetkit.inference import Predictor
from resnetkit.train.checkpoint import (checkpoint_from_model, export_safetensors, load_checkpoint,
                                        model_from_checkpoint, save_checkpoint)  # fmt: skip
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.engine import build_trainer, evaluate, fit
from resnetkit.train.evaluation import evaluate_checkpoint

TINY = ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "data.batch_size=32", "progress=false",
        "optim.schedule=cosine", "optim.lr=0.05", "steps=3"]  # fmt: skip


def tiny(tmp_path, *overrides, name="run"):
    return load_config(recipe_path("digits"), [*TINY, f"out={tmp_path / name}", *overrides])


@register_op("test_factor_fc")
def _factor_fc(model: nn.Module, record: dict) -> None:
    """A test-local edit: the classifier becomes two linear maps through ``rank`` features (shapes only)."""
    fc, rank = model.fc, record["rank"]
    model.fc = nn.Sequential(nn.Linear(fc.in_features, rank, bias=False), nn.Linear(rank, fc.out_features))


def factor_fc(model: nn.Module, rank: int) -> nn.Module:
    """Edit ``model`` like a compression function would: change the architecture, set weights, record the edit."""
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(model.fc.weight, full_matrices=False)
        bias = model.fc.bias.clone()
        record = {"op": "test_factor_fc", "rank": rank}
        _factor_fc(model, record)
        model.fc[0].weight.copy_(vh[:rank])
        model.fc[1].weight.copy_(u[:, :rank] * s[:rank])
        model.fc[1].bias.copy_(bias)
    record_surgery(model, record)
    return model


@pytest.fixture(scope="module")
def edited_checkpoint(tmp_path_factory, tiny_checkpoint):
    """``tiny_checkpoint`` with its classifier factored to rank 4, saved with checkpoint_from_model."""
    state = load_checkpoint(tiny_checkpoint)
    model = factor_fc(model_from_checkpoint(state), rank=4)
    path = tmp_path_factory.mktemp("edited") / "factored.pt"
    save_checkpoint(path, checkpoint_from_model(model, state, compression={"fc_rank": 4}))
    return path


def test_edited_checkpoint_rebuilds_with_identical_outputs(tiny_checkpoint, edited_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    model = factor_fc(model_from_checkpoint(state), rank=4).eval()
    saved = load_checkpoint(edited_checkpoint)
    assert saved["surgery"] == [{"op": "test_factor_fc", "rank": 4}] and saved["compression"] == {"fc_rank": 4}
    rebuilt = model_from_checkpoint(saved).eval()
    assert rebuilt.surgery == saved["surgery"] and isinstance(rebuilt.fc, nn.Sequential)
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_eval_predict_and_safetensors_work_for_an_edited_checkpoint(tiny_checkpoint, edited_checkpoint, tmp_path):
    original = evaluate_checkpoint(str(tiny_checkpoint), split="val").meter.top1
    factored = evaluate_checkpoint(str(edited_checkpoint), split="val").meter.top1
    assert factored > original - 0.2  # rank 4 of 10 keeps most of a digits classifier (seen: 87% -> 76%)
    assert isinstance(Predictor.from_checkpoint(edited_checkpoint).model.fc, nn.Sequential)
    path = export_safetensors(load_checkpoint(edited_checkpoint), tmp_path / "w.safetensors")
    with safe_open(path, "pt") as f:
        assert json.loads(f.metadata()["surgery"]) == [{"op": "test_factor_fc", "rank": 4}]


def test_unknown_op_is_a_clear_error_even_without_the_builtin_op_modules():
    with pytest.raises(ValueError, match="unknown surgery op 'no_such_op'"):
        apply_surgery(nn.Linear(2, 2), [{"op": "no_such_op"}])


def test_init_from_starts_from_the_checkpoint_weights_with_a_fresh_optimizer(tmp_path, tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    t = build_trainer(tiny(tmp_path, f"init_from={tiny_checkpoint}", "model.name=cifar_resnet56"))
    source = model_from_checkpoint(state).state_dict()
    for key, value in t.model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    assert t.cfg.model.name == "cifar_resnet20" and t.cfg.model.options == {"layers": [1, 1, 1]}  # the checkpoint's
    assert t.step == 0 and not t.optimizer.state
    val = evaluate(t.model, t.data.val_batches(), t.data.num_classes, t.device, t.cfg).top1
    assert val == pytest.approx(evaluate_checkpoint(str(tiny_checkpoint), split="val").meter.top1)


def test_init_from_an_edited_checkpoint_keeps_training_it(tmp_path, edited_checkpoint):
    fit(tiny(tmp_path, f"init_from={edited_checkpoint}"))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["surgery"] == [{"op": "test_factor_fc", "rank": 4}]
    assert state["train_config"]["init_from"] == str(edited_checkpoint)
    before = load_checkpoint(edited_checkpoint)["model"]
    assert not torch.equal(state["model"]["fc.0.weight"], before["fc.0.weight"])  # it trained
    assert isinstance(model_from_checkpoint(state).fc, nn.Sequential)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["init_from"] == str(edited_checkpoint)


def test_init_from_with_other_classes_is_a_clear_error(tmp_path, tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    state["classes"] = [f"class{i}" for i in range(10)]
    path = save_checkpoint(tmp_path / "renamed.pt", state)
    with pytest.raises(ValueError, match=r"init_from .*renamed.pt predicts 10 classes \[class0, .*same classes"):
        build_trainer(tiny(tmp_path, f"init_from={path}"))
