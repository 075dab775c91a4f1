"""The engine's parts on their own: config parsing, schedules, parameter groups, metrics, checkpoints."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from resnetkit.data import DeviceLoader
from resnetkit.models import ModelRecord, create_model
from resnetkit.train.checkpoint import load_checkpoint, save_checkpoint
from resnetkit.train.config import RECIPES, OptimSection, Schedule, TrainConfig, load_config, recipe_path
from resnetkit.train.data import build_data
from resnetkit.train.distributed import World
from resnetkit.train.metrics import ClassificationMeter
from resnetkit.train.optim import lr_factor, param_groups


def test_every_shipped_recipe_parses(tmp_path):
    from resnetkit.tasks import task_for

    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert names == ["balloon_maskrcnn", "camvid_deeplabv3", "cifar10_cpu", "cifar10_paper", "depth_folder", "digits",
                     "imagenet_resnet50_tv1", "video_clips"]  # fmt: skip
    tasks = {}
    for name in names:
        builtin = load_config(recipe_path(name), check_data=False).data.dataset in ("digits", "cifar10")
        folder = [] if builtin else [f"data.dataset={tmp_path}"]  # their paths are placeholders or shared data
        cfg = load_config(recipe_path(name), folder)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
        tasks[name] = task_for(cfg).name
    assert tasks["balloon_maskrcnn"] == "detection" and tasks["camvid_deeplabv3"] == "segmentation"
    assert (tasks["depth_folder"], tasks["video_clips"], tasks["digits"]) == ("depth", "video", "classification")
    with pytest.raises(FileNotFoundError, match="/path/to/imagenet/train does not exist"):
        load_config(recipe_path("imagenet_resnet50_tv1"))


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
    [("optim.lrr=1", "unknown option 'optim.lrr'; did you mean optim.lr?"),
     ("model.options=2", "model.options=2 must be a mapping"),
     ("optim.schedule=linear", "optim.schedule='linear' is not one of"),
     ("epochs=many", "epochs='many' must be int"), ("lr", "must look like key=value")],
)  # fmt: skip
def test_bad_overrides_are_one_line_errors(override, match):
    with pytest.raises(ValueError, match=match) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "override, error, match",
    [("model.options={widht: 2}", TypeError, "unknown model option 'widht'; valid options: .*width_per_group"),
     ("model.name=resnet5", KeyError, "unknown model 'resnet5'; did you mean resnet50"),
     ("model.options={shortcut: D}", ValueError, "shortcut='D' is not one of"),
     ("data.dataset=/no/such.zip", FileNotFoundError, "/no/such.zip does not exist"),
     ("data.dataset=cifar-10", KeyError, "unknown dataset 'cifar-10'; did you mean cifar10?")],
)  # fmt: skip
def test_model_and_dataset_fail_when_the_config_loads(tmp_path, override, error, match):
    """Checked by load_config, before any data is read: with a dataset that could not even be decoded, the model
    typo is what is reported."""
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(error, match=match) as info:
        load_config("digits", [f"data.dataset={broken}", override])
    assert "\n" not in str(info.value)


def test_named_datasets_and_existing_paths_load(tmp_path):
    for dataset in ("digits", "cifar10", "cifar100", str(tmp_path)):
        assert load_config(None, [f"data.dataset={dataset}"]).data.dataset == dataset
    later = tmp_path / "made-later.zip"  # e.g. re-encoded once the config is known
    assert load_config(None, [f"data.dataset={later}"], check_data=False).data.dataset == str(later)
    with pytest.raises(TypeError, match="widht"):  # the model is checked all the same
        load_config(None, [f"data.dataset={later}", "model.options={widht: 2}"], check_data=False)


def test_init_from_decides_the_architecture_so_the_model_section_is_not_checked(tmp_path):
    cfg = load_config(None, ["model.name=not_a_model", f"init_from={tmp_path / 'last.pt'}"])
    assert cfg.model.name == "not_a_model"


def test_build_data_picks_the_loader_from_the_augmentation():
    """Whole-batch augmentation on the device where it exists; per-sample transforms in a DataLoader otherwise."""
    for augment, loader in (("cifar", DeviceLoader), ("imagenet", DataLoader)):
        cfg = load_config("digits", [f"data.augment={augment}", "data.workers=0", "progress=false"])
        assert isinstance(build_data(cfg, torch.device("cpu"), World()).train, loader)


def test_build_data_lets_an_error_of_the_device_loader_through(monkeypatch):
    """A ValueError from building the device loader is a bug to see, not a reason to pick the slow path."""

    def training_loader_bug(*args, drop_last=False, **kwargs):
        if drop_last:  # only the training loader drops its last batch
            raise ValueError("a bug in the training loader")
        return DeviceLoader(*args, drop_last=drop_last, **kwargs)

    monkeypatch.setattr("resnetkit.train.data.DeviceLoader", training_loader_bug)
    with pytest.raises(ValueError, match="a bug in the training loader"):
        build_data(load_config("digits", ["progress=false"]), torch.device("cpu"), World())


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="shipped: balloon_maskrcnn, camvid_deeplabv3, cifar10_cpu, cifar10_paper, depth_folder, digits"):
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


def _record(model) -> ModelRecord:
    return ModelRecord("cifar_resnet20", model.config, classes=[str(i) for i in range(10)])


def test_checkpoint_round_trip_rebuilds_model_with_no_flags(tmp_path):
    model = create_model("cifar_resnet20", num_classes=10, zero_init_last=True).eval()
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model.state_dict(), _record(model), {"step": 7})
    checkpoint = load_checkpoint(path)
    rebuilt = checkpoint.record.build().eval()
    rebuilt.load_state_dict(checkpoint.weights)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    assert checkpoint.train_state == {"step": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"], "temporary file left behind"


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = create_model("cifar_resnet20")
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, model.state_dict(), _record(model))
    before = path.read_bytes()

    def killed(*args, **kwargs):  # stands for a run killed half-way through writing
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model.state_dict(), _record(model))
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_curves_leave_out_a_detectors_missing_validation_loss(tmp_path):
    import math
    import warnings

    from resnetkit.train.report import plot_curves

    records = [{"epoch": 1, "train_loss": 2.0},  # before the first validation pass
               {"epoch": 2, "train_loss": 1.5, "val_loss": math.nan, "val_bbox_map50": 0.2}]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        for n in (1, 2):  # after the first epoch, then after the first validation pass
            path = plot_curves(records[:n], tmp_path / f"curves{n}.png", metric="bbox_map50")
            assert path.stat().st_size > 1000
