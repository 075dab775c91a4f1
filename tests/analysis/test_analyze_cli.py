"""``resnetkit analyze``: every kind from the command line on a run's model and its plain twin, images from the
run's own split, JSON + PNG written, the same numbers for the same seed; bad options are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from resnetkit.cli import main
from resnetkit.models import ModelRecord, Preprocess, ResNet, Shortcut, model_config
from resnetkit.weights import save_weights
from resnetkit.weights.format import read_record
from resnetkit.workflows.analyze import KINDS, analyze

SMALL = {"lesion": ["draws=1"], "paths": ["samples=2"], "landscape": ["steps=3"], "reuse": [],
         "gradients": ["batch_size=8"], "cam": ["methods=gradcam"]}  # fmt: skip


@pytest.fixture(scope="module")
def plain_twin(tiny_checkpoint, tmp_path_factory):
    """The run's network without shortcuts (random weights), with the run's record: the same data and classes."""
    record = read_record(tiny_checkpoint)
    config = record.config.replace(shortcut=Shortcut.NONE)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("plain") / "plain.safetensors"
    save_weights(path, ResNet.from_config(config), record.replace(arch="plain_twin", config=config))
    return path


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_runs_from_the_cli_and_writes_json_and_png(kind, tiny_checkpoint, plain_twin, tmp_path, capsys):
    compare = [] if kind == "paths" else ["--compare", str(plain_twin)]  # a plain net has a single path
    argv = ["analyze", kind, str(tiny_checkpoint), *compare, "--images", "12", "--out", str(tmp_path), *SMALL[kind]]
    assert main(argv) == 0
    report = json.loads((tmp_path / f"{kind}.json").read_text())
    assert (tmp_path / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["kind"] == kind and report["images"] == 12 and report["split"] == ("train" if kind in (
        "landscape", "gradients") else "val")  # fmt: skip
    labels = {r["label"] for r in report["results"]}
    assert labels == ({"cifar_resnet20"} if kind == "paths" else {"cifar_resnet20", "plain_twin"})
    assert f"wrote {tmp_path}/{kind}.json" in capsys.readouterr().out


def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_draws(tiny_checkpoint, tmp_path):
    runs = [analyze("lesion", [str(tiny_checkpoint)], tmp_path / str(seed), images=16, seed=seed,
                    options={"draws": 2})["results"] for seed in (0, 0, 1)]  # fmt: skip
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]  # other images drawn


def test_the_gradients_compare_a_fresh_initialisation_with_the_trained_weights(tiny_checkpoint, tmp_path):
    results = analyze("gradients", [str(tiny_checkpoint)], tmp_path, images=8, options={"batch_size": 8})["results"]
    assert [r["when"] for r in results] == ["init", "trained"]
    assert results[0]["layers"] != results[1]["layers"]


@pytest.mark.parametrize("kind, option, message", [
    ("lesion", "steps=3", "lesion has no option 'steps'; it takes draws"),
    ("all", "nope=1", "all has no option 'nope'; it takes batch_size, draws, methods, samples, span, steps"),
    ("reuse", "=3", "an option is KEY=VALUE, got '=3'"),
])  # fmt: skip
def test_bad_options_are_one_line_errors(kind, option, message, tiny_checkpoint, tmp_path, capsys):
    assert main(["analyze", kind, str(tiny_checkpoint), "--out", str(tmp_path), option]) == 2
    assert capsys.readouterr().err.strip() == f"resnetkit analyze: error: {message}"


def test_weights_without_a_run_need_data(tmp_path, capsys):
    model = ResNet.from_config(model_config("cifar_resnet20").replace(layers=(1, 1, 1)))
    path = tmp_path / "w.safetensors"
    save_weights(path, model, ModelRecord("cifar_resnet20", model.config, Preprocess.square(32, (0.5,) * 3, (0.5,) * 3)))
    assert main(["analyze", "reuse", str(path), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("resnetkit analyze: error: cifar_resnet20 does not say what data it was "
                                               "trained on; give the images (--data FOLDER_OR_ZIP)")  # fmt: skip
