"""Starting a run from a model file (``init_from``), and model files of architecture-edited (compressed) models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from resnetkit import load_model
from resnetkit.models.surgery import apply_surgery, record_surgery, register_op, surgery_of
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.engine import build_trainer, evaluate, fit
from resnetkit.weights import save_weights
from resnetkit.workflows import Predictor, evaluate_model

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


def save_edited(model: nn.Module, path) -> None:
    """Save an edited model as a compression step would: its record says which edits to replay."""
    save_weights(path, model, model.record.replace(edits=tuple(surgery_of(model)), extra={"fc_rank": 4}))


@pytest.fixture(scope="module")
def edited_checkpoint(tmp_path_factory, tiny_checkpoint):
    """``tiny_checkpoint`` with its classifier factored to rank 4, saved as a model file."""
    model = factor_fc(load_model(tiny_checkpoint), rank=4)
    path = tmp_path_factory.mktemp("edited") / "factored.safetensors"
    save_edited(model, path)
    return path


def test_edited_checkpoint_rebuilds_with_identical_outputs(tiny_checkpoint, edited_checkpoint):
    model = factor_fc(load_model(tiny_checkpoint), rank=4).eval()
    rebuilt = load_model(edited_checkpoint).eval()
    assert rebuilt.record.edits == ({"op": "test_factor_fc", "rank": 4},) and rebuilt.record.extra == {"fc_rank": 4}
    assert rebuilt.surgery == [{"op": "test_factor_fc", "rank": 4}] and isinstance(rebuilt.fc, nn.Sequential)
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_eval_and_predict_work_for_an_edited_model(tiny_checkpoint, edited_checkpoint):
    original = evaluate_model(str(tiny_checkpoint), split="val").meter.top1
    factored = evaluate_model(str(edited_checkpoint), split="val").meter.top1
    assert factored > original - 0.2  # rank 4 of 10 keeps most of a digits classifier (seen: 87% -> 76%)
    assert isinstance(Predictor.load(edited_checkpoint).model.fc, nn.Sequential)


def test_unknown_op_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown surgery op 'no_such_op'"):
        apply_surgery(nn.Linear(2, 2), [{"op": "no_such_op"}])


def test_init_from_starts_from_the_checkpoint_weights_with_a_fresh_optimizer(tmp_path, tiny_checkpoint):
    t = build_trainer(tiny(tmp_path, f"init_from={tiny_checkpoint}", "model.name=cifar_resnet56"))
    source = load_model(tiny_checkpoint).state_dict()
    for key, value in t.model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)
    assert t.cfg.model.name == "cifar_resnet20" and t.cfg.model.options == {"layers": [1, 1, 1]}  # the checkpoint's
    assert t.step == 0 and not t.optimizer.state
    val = evaluate(t.model, t.data.val_batches(), t.data.num_classes, t.device, t.cfg).top1
    assert val == pytest.approx(evaluate_model(str(tiny_checkpoint), split="val").meter.top1)


def test_init_from_an_edited_checkpoint_keeps_training_it(tmp_path, edited_checkpoint):
    fit(tiny(tmp_path, f"init_from={edited_checkpoint}"))
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert last.record.edits == ({"op": "test_factor_fc", "rank": 4},)
    assert last.record.train_config["init_from"] == str(edited_checkpoint)
    before = load_model(edited_checkpoint).state_dict()
    assert not torch.equal(last.weights["fc.0.weight"], before["fc.0.weight"])  # it trained
    assert isinstance(load_model(tmp_path / "run" / "last.safetensors").fc, nn.Sequential)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["init_from"] == str(edited_checkpoint)


def test_init_from_with_other_classes_is_a_clear_error(tmp_path, tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    path = tmp_path / "renamed.safetensors"
    save_weights(path, model, model.record.replace(classes=tuple(f"class{i}" for i in range(10))))
    with pytest.raises(ValueError, match=r"init_from .*renamed.safetensors predicts 10 classes \[class0, .*same classes"):
        build_trainer(tiny(tmp_path, f"init_from={path}"))
