"""One model artifact: ``load_model`` reads every file resnetkit writes (this version's and 0.1's) and every
checkpoint ``convert`` accepts; a checkpoint's training state travels in the same safetensors file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision

import resnetkit
from resnetkit import ModelRecord
from resnetkit.train.checkpoint import BEST, LAST, WEIGHTS, CheckpointError, load_checkpoint, resumable_state
from resnetkit.weights import WeightsError, read_train_state, read_weights, save_weights
from resnetkit.weights.publish import publish_run

from .conftest import randomize_norms


def outputs(model: torch.nn.Module, in_chans: int = 1, size: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.linspace(-1, 1, 2 * in_chans * size * size).view(2, in_chans, size, size))


@pytest.mark.parametrize("name", [LAST, BEST, WEIGHTS])
def test_every_file_of_a_run_loads_alone(tiny_checkpoint, name):
    run = tiny_checkpoint.parent
    model = resnetkit.load_model(run / name)
    record = model.record
    assert record.arch == "cifar_resnet20" and record.config.layers == (1, 1, 1)
    assert record.classes == tuple(str(i) for i in range(10)) and record.train_config["data"]["dataset"] == "digits"
    assert record.preprocess.crop_size == 16 and len(record.preprocess.mean) == 1
    assert record.metrics[0].split.startswith("val") and 0 < record.metrics[0].top1 <= 100
    assert outputs(model).shape == (2, 10)


def test_last_holds_the_training_state_and_the_others_do_not(tiny_checkpoint):
    run = tiny_checkpoint.parent
    state = resumable_state(run / LAST).train_state
    assert state["step"] > 0 and state["epoch"] == 4 and state["optimizer"]["state"]
    assert isinstance(state["rng"]["numpy"][1], torch.Tensor) and isinstance(state["rng"]["python"], tuple)
    assert read_train_state(run / WEIGHTS) is None
    with pytest.raises(CheckpointError, match="weights only, no training state"):
        resumable_state(run / BEST)
    # the model part of last and weights is the same: publishing a run copies it
    assert all(torch.equal(v, read_weights(run / WEIGHTS)[0][k]) for k, v in read_weights(run / LAST)[0].items())


def test_training_state_round_trips_every_type(tmp_path):
    model = resnetkit.create_model("cifar_resnet20", num_classes=3)
    state = {"optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
             "rng": {"numpy": ("MT19937", np.arange(3, dtype=np.uint32), 1, 0, 0.5), "python": (3, (1, 2**40), None)},
             "best": float("-inf"), "name": "x", "flag": True, "nothing": None}  # fmt: skip
    save_weights(tmp_path / "c.safetensors", model, ModelRecord("cifar_resnet20", model.config), state)
    back = read_train_state(tmp_path / "c.safetensors")
    assert back["optimizer"]["state"][0]["momentum_buffer"].tolist() == [1.0, 1.0]
    assert back["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}]
    assert back["rng"]["python"] == (3, (1, 2**40), None) and back["rng"]["numpy"][0] == "MT19937"
    assert np.array_equal(back["rng"]["numpy"][1], np.arange(3, dtype=np.uint32))
    assert back["best"] == float("-inf") and (back["name"], back["flag"], back["nothing"]) == ("x", True, None)
    assert set(read_weights(tmp_path / "c.safetensors")[0]) == set(model.state_dict())  # state kept apart


def test_publish_copies_the_run_weights(tiny_checkpoint, tmp_path):
    entry = publish_run(tiny_checkpoint.parent, "t", "cmd", "cpu", files=tmp_path)
    published = resnetkit.load_model(tmp_path / entry["filename"])
    torch.testing.assert_close(outputs(published), outputs(resnetkit.load_model(tiny_checkpoint.parent / WEIGHTS)))
    assert read_train_state(tmp_path / entry["filename"]) is None and published.record.extra["command"] == "cmd"


# -- files of resnetkit 0.1, written as 0.1 wrote them ------------------------------------------------------------


def test_a_0_1_training_checkpoint_loads(tiny_checkpoint, tmp_path):
    """``last.pt`` of 0.1: a ``torch.save`` dict with the weights, EMA, config and normalisation as plain keys."""
    new = load_checkpoint(tiny_checkpoint)
    record = new.record
    old = {"format": "resnetkit.checkpoint/1", "model_name": record.arch, "model_config": record.config.to_dict(),
           "surgery": [], "train_config": record.train_config, "classes": list(record.classes),
           "normalize": {"mean": list(record.preprocess.mean), "std": list(record.preprocess.std), "input_size": 16},
           "model": {k: torch.zeros_like(v) for k, v in new.weights.items()}, "ema": new.weights, "ema_updates": 3,
           "metrics": {"val_top1": 0.5, "val_top5": 0.9}, "epoch": 4, "step": 40}  # fmt: skip
    torch.save(old, tmp_path / "last.pt")
    model = resnetkit.load_model(tmp_path / "last.pt")
    torch.testing.assert_close(outputs(model), outputs(resnetkit.load_model(tiny_checkpoint)), rtol=0, atol=0)
    assert model.record.train_config == record.train_config and model.record.metrics[0].top1 == 50.0
    assert model.record.preprocess == record.preprocess  # resize = crop = the training size


def test_a_0_1_run_weights_file_loads(tiny_checkpoint, tmp_path):
    """``weights.safetensors`` of a 0.1 run: the tensors with the model name, config, classes and edits."""
    weights, record = read_weights(tiny_checkpoint)
    metadata = {"format": "resnetkit", "model_name": record.arch, "model_config": json.dumps(record.config.to_dict()),
                "classes": json.dumps(list(record.classes)), "surgery": "[]"}  # fmt: skip
    safetensors.torch.save_file(weights, tmp_path / "weights.safetensors", metadata=metadata)
    model = resnetkit.load_model(tmp_path / "weights.safetensors")
    torch.testing.assert_close(outputs(model), outputs(resnetkit.load_model(tiny_checkpoint)), rtol=0, atol=0)
    assert model.record.classes == record.classes and model.record.preprocess.crop_size == 32  # CIFAR stem default


def test_a_published_file_and_a_registry_name_load(tmp_path):
    model = resnetkit.load_model("cifar_resnet20.c10jpeg_cpu30")
    assert model.record.metrics[0].dataset.startswith("CIFAR-10") and model.record.preprocess.crop_size == 32
    torch.testing.assert_close(outputs(model, 3, 32), outputs(resnetkit.create_model("cifar_resnet20", pretrained="c10jpeg_cpu30"), 3, 32))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_torchvision_checkpoint_loads_in_memory(tmp_path, suffix):
    theirs = randomize_norms(torchvision.models.resnet18()).eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save({"model": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, path)  # DDP, wrapped
    else:
        safetensors.torch.save_file(theirs.state_dict(), path)
    model = resnetkit.load_model(path)
    assert model.record.arch == "resnet18" and len(model.record.classes) == 1000
    torch.testing.assert_close(outputs(model, 3, 64), outputs(theirs, 3, 64), rtol=0, atol=1e-5)


def test_not_a_model_file_is_one_line(tmp_path):
    (tmp_path / "notes.safetensors").write_bytes(b"hello")
    with pytest.raises(WeightsError, match="not a readable safetensors file") as err:
        resnetkit.load_model(tmp_path / "notes.safetensors")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="model file 'no/such.safetensors' not found"):
        resnetkit.load_model("no/such.safetensors")


def test_weights_without_a_run_calibrate_on_a_folder(tmp_path):
    """Published or converted weights know no training data: int8 calibration reads a folder with their own
    preprocessing (here one class folder of PNGs; the labels are not used)."""
    from PIL import Image

    from resnetkit.workflows import calibration_images

    (tmp_path / "photos" / "any").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (40, 48), (40 * i, 20, 200)).save(tmp_path / "photos" / "any" / f"{i}.png")
    record = resnetkit.load_model("cifar_resnet20.c10jpeg_cpu30").record.replace(train_config={})
    images = calibration_images(record, 3, dataset=str(tmp_path / "photos"))
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="give calibration images"):
        calibration_images(record, 3)
