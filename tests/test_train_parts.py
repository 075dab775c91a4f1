"""The engine's parts on their own: config parsing, schedules, parameter groups, metrics, checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch

from resnetkit.models import create_model
from resnetkit.train.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from resnetkit.train.config import RECIPES, OptimSection, Schedule, TrainConfig, load_config, recipe_path
from resnetkit.train.metrics import ClassificationMeter
from resnetkit.train.optim import lr_factor, param_groups


def test_every_shipped_recipe_parses():
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert names == ["cifar10_cpu", "cifar10_paper", "digits", "imagenet_resnet50_tv1"]
    for name in names:
        cfg = load_config(recipe_path(name))
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_recipe_is_the_papers():
    cfg = load_config(recipe_path("cifar10_paper"))
    o = cfg.optim
    assert (cfg.data.batch_size, o.lr, o.momentum, o.weight_decay, cfg.steps) == (128, 0.1, 0.9, 1e-4, 64000)
    lrs = [o.lr * lr_factor(s, cfg.steps, o) for s in (0, 31999, 32000, 47999, 48000, 63999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_overrides_parse_types_and_enums():
    cfg = load_config(None, ["optim.lr=0.05", "optim.schedule=cosine", "model=cifar_resnet56",
                             "model.options.zero_init_last=true", "optim.milestones=[0.3, 0.6]", "epochs=3"])  # fmt: skip
    assert cfg.optim.lr == 0.05 and cfg.optim.schedule is Schedule.COSINE and cfg.epochs == 3
    assert cfg.model.name == "cifar_resnet56" and cfg.model.options == {"zero_init_last": True}
    assert cfg.optim.milestones == (0.3, 0.6)


@pytest.mark.parametrize(
    "override, match",
    [("optim.lrr=1", "unknown option 'optim.lrr'"), ("optim.schedule=linear", "optim.schedule='linear' is not one of"),
     ("epochs=many", "epochs='many' must be int"), ("lr", "must look like key=value")],
)  # fmt: skip
def test_bad_overrides_are_one_line_errors(override, match):
    with pytest.raises(ValueError, match=match) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="shipped: cifar10_cpu, cifar10_paper, digits"):
        recipe_path("imagenet")


@pytest.mark.parametrize("schedule", list(Schedule))
def test_schedules_are_pure_and_bounded(schedule):
    cfg = OptimSection(schedule=schedule, warmup_steps=10)
    factors = [lr_factor(s, 1000, cfg) for s in range(1000)]
    assert factors == [lr_factor(s, 1000, cfg) for s in range(1000)]
    assert all(0.0 <= f <= 1.0 + 1e-9 for f in factors)
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # linear warm-up
    if schedule in (Schedule.COSINE, Schedule.ONECYCLE):
        assert factors[-1] < 0.01


def test_onecycle_peaks_at_pct_start():
    cfg = OptimSection(schedule=Schedule.ONECYCLE, pct_start=0.25)
    factors = [lr_factor(s, 100, cfg) for s in range(100)]
    assert max(range(100), key=factors.__getitem__) == 25


def test_no_decay_on_norm_and_bias():
    model = create_model("cifar_resnet20")
    decay, no_decay = param_groups(model, 5e-4, no_decay_norm_bias=True)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0 and len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_meter_topk_per_class_and_confusion():
    meter = ClassificationMeter(num_classes=3, topk=2)
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    meter.update(logits, torch.tensor([0, 2, 1, 2]), loss=1.0)
    assert meter.top1 == 0.5 and meter.top5 == 0.75 and meter.loss == 1.0
    assert meter.confusion.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert meter.per_class_accuracy() == [1.0, 0.0, 0.5]


def _state(model):
    return {"model_name": "cifar_resnet20", "model_config": model.config.to_dict(), "model": model.state_dict(),
            "ema": None, "classes": [str(i) for i in range(10)]}  # fmt: skip


def test_checkpoint_round_trip_rebuilds_model_with_no_flags(tmp_path):
    model = create_model("cifar_resnet20", num_classes=10, zero_init_last=True).eval()
    path = save_checkpoint(tmp_path / "last.pt", _state(model))
    rebuilt = model_from_checkpoint(load_checkpoint(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path):
    model = create_model("cifar_resnet20")
    path = save_checkpoint(tmp_path / "last.pt", _state(model))
    before = path.read_bytes()

    class Exploding:  # stands for a run killed half-way through writing
        def __reduce_ex__(self, protocol):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": Exploding()})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_damaged_and_foreign_files_give_one_line_errors(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", _state(create_model("cifar_resnet20")))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    for path in (truncated, foreign):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.target),))


def test_crafted_pickle_does_not_run_code(tmp_path):
    _Payload.target = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"format": "resnetkit.checkpoint/1", "model": _Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
