"""Mobile networks as resnetkit files: the record holds a MobileConfig, load_model rebuilds it, training resumes."""

from __future__ import annotations

import json

import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.cli import main
from resnetkit.models import MobileConfig, ModelRecord
from resnetkit.models.record import Preprocess
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.engine import fit
from resnetkit.weights.format import read_record, save_weights

from .conftest import randomize_norms

# cifar_mobilenet_v2 cut to two small stages, so that an epoch on the digits takes a second on one core
TINY_MOBILE = ["model.name=cifar_mobilenet_v2", ("model.options={stem_width: 8, head_width: 32, stages: [{channels: 8, "
               "units: 1, stride: 1, expansion: 1}, {channels: 16, units: 2, stride: 2, expansion: 2}]}"),
               "data.input_size=16", "progress=false", "optim.schedule=cosine", "optim.lr=0.05"]  # fmt: skip


@pytest.mark.parametrize("name", ["cifar_mobilenet_v2", "cifar_shufflenet_v2_x0_5"])
def test_a_mobile_model_file_round_trips(tmp_path, name):
    model = randomize_norms(create_model(name)).eval()
    record = ModelRecord(name, model.config, Preprocess.square(32, (0.5,) * 3, (0.25,) * 3), tuple("abcdefghij"))
    save_weights(tmp_path / "m.safetensors", model, record)
    header = json.loads(json.dumps(read_record(tmp_path / "m.safetensors").to_dict()))
    assert header["config"]["unit"] == model.config.unit.value  # what tells a mobile record from a ResNet's
    loaded = load_model(tmp_path / "m.safetensors").eval()
    assert type(loaded) is type(model) and isinstance(loaded.record.config, MobileConfig)
    assert loaded.record.config == model.config and loaded.record.classes == record.classes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_mobile_model_trains_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    fit(load_config(recipe_path("digits"), [*TINY_MOBILE, "epochs=1", f"out={out}"]))
    model = load_model(out / "best.safetensors")
    assert isinstance(model.record.config, MobileConfig) and model.record.arch == "cifar_mobilenet_v2"
    assert model.record.config.in_chans == 1 and model.record.preprocess.crop_size == 16
    assert main(["train", "--out", str(out), "--resume", "epochs=2"]) == 0
    assert load_checkpoint(out / "last.safetensors").train_state["epoch"] == 2
    # a new run from the file keeps its architecture (the options that make it differ from the variant)
    again = load_config(recipe_path("digits"), ["data.input_size=16", "progress=false", "epochs=1",
                                                f"out={tmp_path / 'again'}", f"init_from={out / 'best.safetensors'}"])  # fmt: skip
    fit(again)
    assert load_model(tmp_path / "again" / "best.safetensors").record.config == model.record.config
