"""Publishing a training run as shipped weights, and the registry entries that come from the manifest."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from resnetkit import create_model
from resnetkit.io import file_digest
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.train.config import TrainConfig
from resnetkit.train.engine import recipe_summary
from resnetkit.weights import model_with, read_weights
from resnetkit.weights.publish import publish_run, run_wall_time
from resnetkit.weights.registry import MANIFEST, SHIPPED, SHIPPED_ENTRIES, entry_from_dict


def test_publish_run_writes_weights_and_manifest(tiny_checkpoint, tmp_path):
    run_dir = tiny_checkpoint.parent
    entry = publish_run(run_dir, "test_tag", "resnetkit train digits ...", "a test CPU", files=tmp_path)
    path = tmp_path / entry["filename"]
    assert entry["sha256"] == file_digest(path, "sha256")
    state, meta = read_weights(path)
    last = load_checkpoint(tiny_checkpoint)
    epoch = last.train_state["epoch"]
    assert meta.metrics[0].top1 == pytest.approx(100 * last.train_state["metrics"]["val_top1"])
    assert meta.extra["epochs"] == epoch and meta.extra["hardware"] == "a test CPU"
    assert meta.extra["wall_time_s"] == pytest.approx(run_wall_time(run_dir, epoch), abs=0.1)
    assert meta.extra["wall_time_s"] > 0 and meta.train_config == last.record.train_config
    assert all(torch.equal(state[k], v) for k, v in last.weights.items())  # the final weights, not the best epoch's
    manifest = json.loads((tmp_path / MANIFEST.name).read_text())
    assert [(e["arch"], e["tag"]) for e in manifest] == [(entry["arch"], "test_tag")]
    entry_from_dict(manifest[0])  # the registry can read what was written


def test_publish_again_replaces_the_entry(tiny_checkpoint, tmp_path):
    for tag in ("a", "b", "a"):
        publish_run(tiny_checkpoint.parent, tag, "cmd", "cpu", files=tmp_path)
    assert [e["tag"] for e in json.loads((tmp_path / MANIFEST.name).read_text())] == ["a", "b"]


def test_half_precision_weights_load_into_a_float32_model(tiny_checkpoint, tmp_path):
    entry = publish_run(tiny_checkpoint.parent, "half", "cmd", "cpu", files=tmp_path, half=True)
    state, meta = read_weights(tmp_path / entry["filename"])
    assert meta.extra["stored_dtype"] == "float16"
    assert {v.dtype for k, v in state.items() if not k.endswith("num_batches_tracked")} == {torch.float16}
    last = load_checkpoint(tiny_checkpoint)
    model, full = model_with(meta, state).eval(), model_with(last.record, last.weights).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(2, 1, 16, 16)  # digits: grey images
    with torch.no_grad():
        torch.testing.assert_close(model(x), full(x), atol=0.02, rtol=0.01)


def test_recipe_says_when_a_run_trained_in_mixed_precision(tiny_checkpoint):
    config = load_checkpoint(tiny_checkpoint).record.train_config
    assert config["precision"] == "fp32" and "autocast" not in recipe_summary(TrainConfig.from_dict(config))
    assert recipe_summary(TrainConfig.from_dict({**config, "precision": "bf16"})).endswith(", bf16 autocast")


def test_wall_time_counts_a_resumed_epoch_once(tmp_path):
    lines = [{"epoch": 1, "epoch_time_s": 10.0}, {"epoch": 2, "epoch_time_s": 99.0}, {"epoch": 2, "epoch_time_s": 11.0},
             {"epoch": 3, "epoch_time_s": 12.0}]  # epoch 2 was cut off once and run again after the resume
    (tmp_path / "log.jsonl").write_text("\n".join(map(json.dumps, lines)))
    assert run_wall_time(tmp_path, 2) == 21.0
    assert run_wall_time(tmp_path, 3) == 33.0


@pytest.mark.parametrize("entry", SHIPPED_ENTRIES, ids=lambda e: e.name)
def test_shipped_weights_load_offline_and_match_the_manifest(entry):
    assert file_digest(SHIPPED / entry.filename, "sha256") == entry.sha256
    model = create_model(entry.arch, pretrained=entry.tag).eval()
    meta = model.record
    assert meta.extra["epochs"] > 0 and meta.extra["command"] and meta.extra["hardware"]
    assert meta.metrics[0].top1 == entry.metrics[0].top1
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    if not SHIPPED_ENTRIES:
        pytest.skip("no weights shipped yet")
    from resnetkit.weights import hub

    entry = SHIPPED_ENTRIES[0]
    damaged = tmp_path / entry.filename
    shutil.copy(SHIPPED / entry.filename, damaged)
    with open(damaged, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    monkeypatch.setattr(hub, "SHIPPED", tmp_path)
    with pytest.raises(hub.WeightsError, match="damaged"):
        hub.fetch(entry)
