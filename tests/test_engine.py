"""The engine end to end on real data (scikit-learn's digits), small enough for a CPU test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from resnetkit.cli import main
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train import engine
from resnetkit.train import task as task_module
from resnetkit.train.engine import TrainingDiverged, fit
from resnetkit.train.report import read_log

TINY = ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "data.batch_size=32", "progress=false",
        "optim.schedule=cosine", "optim.lr=0.05"]  # fmt: skip


def tiny(tmp_path, *overrides, name="run"):
    """The digits recipe (what `resnetkit train` runs by default), made tiny."""
    return load_config(recipe_path("digits"), [*TINY, f"out={tmp_path / name}", *overrides])


def weights(path):
    """The raw (not EMA) weights of a checkpoint."""
    checkpoint = load_checkpoint(path)
    return checkpoint.train_state["model"] or checkpoint.weights


def summary_steps(run) -> int:
    return json.loads((run / "summary.json").read_text())["steps"]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def test_one_batch_overfits(tmp_path):
    """The smallest end-to-end check: repeated steps on one batch drive its loss near zero."""
    from resnetkit.train.engine import build_trainer

    t = build_trainer(tiny(tmp_path, "epochs=1", "optim.lr=0.05"))
    images, labels = next(iter(t.data.train_batches(0)))
    t.model.train()
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(t.model(images), labels)
        t.optimizer.zero_grad()
        loss.backward()
        t.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0]


def test_fit_writes_everything_and_learns(tmp_path):
    cfg = tiny(tmp_path, "epochs=3")
    history = fit(cfg)
    out = tmp_path / "run"
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("last.safetensors", "best.safetensors", "weights.safetensors", "config.json", "log.jsonl",
                 "curves.png", "summary.json"):  # fmt: skip
        assert (out / name).is_file(), name
    from safetensors.torch import load_file

    assert_same_weights(load_file(out / "weights.safetensors"), weights(out / "last.safetensors"))
    config = json.loads((out / "config.json").read_text())
    assert config["total_steps"] == summary_steps(out) and config["model_config"]["layers"] == [1, 1, 1]
    assert list((out / "tensorboard").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["images_per_s"] > 0 and summary["wall_time_s"] > 0
    assert "logical CPUs" in summary["hardware"] or torch.cuda.is_available()  # what the number was measured on
    assert set(summary["metrics"]) == {"val", "test"} and summary["metrics"]["test"]["top1"] > 0.5
    assert len(summary["metrics"]["test"]["per_class_top1"]) == 10


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    options = ["epochs=3", "deterministic=true", "ema_decay=0.9", "optim.warmup_steps=5"]
    fit(tiny(tmp_path, *options, name="straight"))

    save_epoch = engine._end_of_epoch

    def interrupt_after_epoch_2(t, record, log):  # Ctrl-C right after the second checkpoint is written
        save_epoch(t, record, log)
        if t.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_end_of_epoch", interrupt_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(tmp_path, *options, name="resumed"))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed" / "last.safetensors").train_state["epoch"] == 2
    fit(tiny(tmp_path, *options, name="resumed"), resume=True)

    a = load_checkpoint(tmp_path / "straight" / "last.safetensors")
    b = load_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert a.train_state["step"] == b.train_state["step"] == 3 * 39
    assert_same_weights(a.train_state["model"], b.train_state["model"])  # the raw weights
    assert_same_weights(a.weights, b.weights)  # the EMA
    assert [r["epoch"] for r in read_log(tmp_path / "resumed" / "log.jsonl")] == [1, 2, 3]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    fit(tiny(tmp_path, "epochs=1"))
    good = (tmp_path / "run" / "last.safetensors").read_bytes()
    monkeypatch.setattr(task_module, "make_loss_fn", lambda cfg, teacher: lambda logits, targets, images: logits.sum() * torch.nan)
    with pytest.raises(TrainingDiverged, match="loss became nan.*last good checkpoint is"):
        fit(tiny(tmp_path, "epochs=2"), resume=True)
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == good


def test_cli_train_eval_predict(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", *TINY, "epochs=2", "--out", str(out)]) == 0
    assert main(["eval", str(out / "best.safetensors")]) == 0
    report = capsys.readouterr().out
    assert "[test], 359 images: top-1" in report and "confusion matrix" in report
    from resnetkit.data import load_digits
    from PIL import Image

    digit = load_digits().images[0, 0].numpy()
    Image.fromarray(digit).save(tmp_path / "digit.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(out / "last.safetensors"), str(tmp_path / "broken.png"), str(tmp_path / "digit.png")]) == 1
    captured = capsys.readouterr()
    assert "digit.png: " in captured.out and captured.out.count("%") == 5
    assert "broken.png" in captured.err and len(captured.err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes on gloo; GroupNorm so that no statistic depends on how the batch is split.

    The all-reduce sums gradients in another order than one process does; that fp32 rounding grows with every
    step (here 4 steps stay within 1e-6, 8 steps reach 6e-5), so the run is kept short and the tolerance tight.
    """
    common = [*TINY, "epochs=1", "steps=4", "model.options={layers: [1, 1, 1], norm: group}", "optim.schedule=constant"]
    fit(load_config(recipe_path("digits"), [*common, f"out={tmp_path / 'single'}"]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={_free_port()}",
           "-m", "resnetkit", "train", *common, "--out", str(tmp_path / "ddp")]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_weights(weights(tmp_path / "single" / "last.safetensors"), weights(tmp_path / "ddp" / "last.safetensors"),
                        atol=1e-5)  # fmt: skip


def test_resume_continues_with_the_runs_own_config(tmp_path, capsys, monkeypatch):
    """`train --out D --resume` needs no recipe: the stored config is used; only length and reporting may change."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "epochs=1", "optim.lr=0.02", "--out", str(out)]) == 0
    assert main(["train", "--out", str(out), "--resume", "epochs=2"]) == 0
    captured = capsys.readouterr()
    assert "resume: epochs 1 -> 2" in captured.out
    stored = load_checkpoint(out / "last.safetensors").record.train_config
    assert (stored["epochs"], stored["optim"]["lr"], stored["data"]["input_size"]) == (2, 0.02, 16)
    assert [r["epoch"] for r in read_log(out / "log.jsonl")] == [1, 2]

    def never(cfg):
        raise AssertionError("the config is compared before any data is read")

    monkeypatch.setattr(engine, "build_trainer", never)
    assert main(["train", "--out", str(out), "--resume", "epochs=3", "optim.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.02 -> 0.1" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=r"data.input_size: 16 -> 32"):
        fit(tiny(tmp_path, "epochs=3", "data.input_size=32", "optim.lr=0.02"), resume=True)
