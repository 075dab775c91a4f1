"""Bad input refused in one line before any training (issue 22, items 6 and 7): overrides that are not YAML or carry
tags, values no run can use (each named by its key), and CIFAR batches that are not what the official archive
holds. Every shipped recipe still loads."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from resnetkit.cli import main
from resnetkit.data.cifar import CIFAR_FILES, Cifar, CifarFormatError, load_cifar
from resnetkit.data.transforms import AugmentConfig
from resnetkit.train import engine
from resnetkit.train.config import RECIPES, load_config


def load_error(overrides: list[str], recipe: str | Path | None = None) -> str:
    """The message of the ``ValueError`` that loading refuses ``overrides`` with; it must be one line."""
    with pytest.raises(ValueError) as info:
        load_config(recipe, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- item 6: one line instead of a traceback -------------------------------------------------------------------------


def test_an_override_that_is_not_yaml_names_the_override():
    message = load_error(["epochs=[1"])
    assert message.startswith("override 'epochs=[1' is not valid YAML: expected ',' or ']'")


def test_yaml_tags_are_refused_in_overrides_and_recipes(tmp_path):
    marker = tmp_path / "ran"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    assert "python/object/apply:os.system" in load_error([f"seed={tag}"]) and "no tags" in load_error([f"seed={tag}"])
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"epochs: 1\nseed: {tag}\n")
    message = load_error([], recipe)
    assert message.startswith(f"recipe {str(recipe)!r} is not valid YAML") and "(line 2, column 7)" in message
    assert not marker.exists()


def test_an_override_below_a_plain_value_is_refused():
    assert load_error(["optim.lr.x=1"], "digits") == "cannot set optim.lr.x: optim.lr=0.1 is a value, not a section"


def test_model_options_need_names_as_keys():
    assert "model.options={1: 2} must be a mapping with names as keys" in load_error(["model.options={1: 2}"])


# -- item 7: values refused at load time, each naming its key --------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [(["eval_every=0"], "eval_every=0 must be >= 1"),
     (["epochs=0"], "epochs=0 must be >= 1 (or give steps)"),
     (["epochs=-3"], "epochs=-3 must be >= 1"),
     (["steps=-1"], "steps=-1 must be >= 0"),
     (["epochs=true"], "epochs=True must be int"),
     (["seed=false"], "seed=False must be int"),
     (["data.val_size=0"], "data.val_size=0.0 leaves no validation images"),
     (["data.dataset=cifar10", "data.val_size=2.5"], "data.val_size=2.5 must be a fraction in (0, 1) or a whole count"),
     (["data.val_size=0.5", "data.test_size=0.5"], "data.val_size=0.5 and data.test_size must add up to less than 1"),
     (["data.test_size=-0.1"], "data.test_size=-0.1 must be a fraction in [0, 1)"),
     (["optim.milestones=abc"], "optim.milestones='abc' must be float"),
     (["optim.milestones=[0.5, x]"], "optim.milestones='x' must be float"),
     (["optim.milestones=[32000, 48000]"], r"optim.milestones=[32000.0, 48000.0] must be fractions of the run"),
     (["data.mixup_alpha=-0.2"], "data.mixup_alpha=-0.2 must be > 0"),
     (["data.cutmix_alpha=-1"], "data.cutmix_alpha=-1.0 must be > 0"),
     (["data.batch_size=0"], "data.batch_size=0 must be >= 1"),
     (["data.eval_batch_size=-1"], "data.eval_batch_size=-1 must be >= 1"),
     (["data.workers=-1"], "data.workers=-1 must be >= 0"),
     (["data.input_size=0"], "data.input_size=0 must be >= 1"),
     (["data.random_erasing=1.5"], "data.random_erasing=1.5 must be a probability"),
     (["data.augment=lsj", "model.head=deeplabv3"], "data.augment='lsj' is detection's large-scale jitter"),
     (["optim.lr=-0.1"], "optim.lr=-0.1 must be a finite number >= 0"),
     (["optim.lr=.nan"], "optim.lr=nan must be a finite number"),
     (["optim.momentum=1"], "optim.momentum=1.0 must lie in [0, 1)"),
     (["optim.nesterov=true", "optim.momentum=0"], "optim.nesterov=True needs optim.momentum > 0"),
     (["optim.weight_decay=-1e-4"], "optim.weight_decay=-0.0001 must be >= 0"),
     (["optim.gamma=0"], "optim.gamma=0.0 must be > 0"),
     (["optim.pct_start=1.5"], "optim.pct_start=1.5 must be a fraction of the run"),
     (["optim.warmup_steps=-5"], "optim.warmup_steps=-5 must be >= 0"),
     (["optim.label_smoothing=1"], "optim.label_smoothing=1.0 must lie in [0, 1)"),
     (["optim.label_smoothing=-0.1"], "optim.label_smoothing=-0.1 must lie in [0, 1)"),
     (["optim.grad_clip=-1"], "optim.grad_clip=-1.0 must be >= 0"),
     (["ema_decay=1"], "ema_decay=1.0 must lie in [0, 1)")],
)  # fmt: skip
def test_values_no_run_can_use_are_refused_naming_the_key(overrides, match):
    assert match in load_error(overrides)


def test_values_at_the_edges_still_load():
    cfg = load_config(None, ["epochs=0", "steps=5", "optim.lr=0", "optim.momentum=0", "optim.milestones=[0, 1]",
                             "optim.label_smoothing=0.99", "data.val_size=1", "data.dataset=cifar10",
                             "data.mixup_alpha=0.01", "deterministic=true", "optim.weight_decay=0"])  # fmt: skip
    assert (cfg.steps, cfg.optim.milestones, cfg.data.val_size, cfg.deterministic) == (5, (0.0, 1.0), 1.0, True)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_every_shipped_recipe_loads(recipe):
    load_config(recipe, check_data=False)


def test_augment_config_refuses_mix_alphas_torch_would_refuse_only_per_run():
    with pytest.raises(ValueError, match=r"mixup_alpha=-1 and cutmix_alpha=1.0 must be > 0"):
        AugmentConfig(mixup_alpha=-1)
    with pytest.raises(ValueError, match=r"cutmix_alpha=0 must be > 0"):
        AugmentConfig(cutmix_alpha=0)


# -- through the command line: exit status 2, one line, nothing trained ----------------------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("fit was reached: the config should have been refused when it loaded")

    monkeypatch.setattr(engine, "fit", fit)


@pytest.mark.parametrize(
    "override, match",
    [("epochs=[1", "override 'epochs=[1' is not valid YAML"),
     ("seed=!!python/object/apply:os.system [true]", "no tags"),
     ("eval_every=0", "eval_every=0 must be >= 1"),
     ("epochs=true", "epochs=True must be int"),
     ("data.val_size=0", "data.val_size=0.0 leaves no validation images")],
)  # fmt: skip
def test_the_cli_refuses_in_one_line_with_status_2(no_training, capsys, tmp_path, override, match):
    assert main(["train", "digits", override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("resnetkit train: error: ") and match in err, err
    assert not (tmp_path / "run").exists()


# -- a tampered CIFAR batch ------------------------------------------------------------------------------------------


SPEC = CIFAR_FILES[Cifar.CIFAR10]


def cifar10_folder(root: Path) -> Path:
    """``root/cifar-10-batches-py`` as the official archive lays it out, two images per batch."""
    folder = root / SPEC.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in SPEC.train + SPEC.test:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 7]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))  # the official files: protocol 2, byte keys
    (folder / SPEC.meta).write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, 2))
    return folder


class System:
    """Pickles as a call of ``os.system``; a loader that honoured it would create the marker file."""

    def __init__(self, marker: Path):
        self.command = f"touch {marker}"

    def __reduce__(self):
        return os.system, (self.command,)


def tampered_batches(marker: Path) -> dict[str, bytes]:
    good = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    return {
        "os.system": pickle.dumps({"data": System(marker), "labels": [0, 1]}, protocol=2),
        "truncated": pickle.dumps(good, protocol=2)[:-40],
        "not a dict": pickle.dumps([good], protocol=2),
        "wrong shape": pickle.dumps({**good, "data": np.zeros((2, 32, 32, 3), np.uint8)}, protocol=2),
        "wrong dtype": pickle.dumps({**good, "data": np.zeros((2, 3072), np.float32)}, protocol=2),
        "a label too many": pickle.dumps({**good, "labels": [0, 1, 2]}, protocol=2),
        "labels not ints": pickle.dumps({**good, "labels": ["cat", "dog"]}, protocol=2),
        "label out of range": pickle.dumps({**good, "labels": [0, 10]}, protocol=2),
        "no labels": pickle.dumps({"data": good["data"]}, protocol=2),
        "garbage": b"\x80\x02}q\x00(X\x04\x00\x00\x00data\xff\xfe",
    }


def test_the_official_layout_loads(tmp_path):
    cifar10_folder(tmp_path)
    train = load_cifar(tmp_path, download=False)
    assert len(train) == 10 and train.classes[3] == "c3" and train.labels[:2].tolist() == [3, 7]


@pytest.mark.parametrize("tamper", list(tampered_batches(Path("unused"))))
def test_a_tampered_cifar_batch_is_one_line_naming_the_file(tmp_path, tamper):
    marker = tmp_path / "ran"
    batch = cifar10_folder(tmp_path / "root") / "data_batch_1"
    batch.write_bytes(tampered_batches(marker)[tamper])
    with pytest.raises(CifarFormatError) as info:
        load_cifar(tmp_path / "root", download=False)
    message = str(info.value)
    assert message.startswith(str(batch)) and "\n" not in message and "re-extract" in message, message
    assert isinstance(info.value, pickle.UnpicklingError) and not marker.exists()


def test_tampered_class_names_are_one_line(tmp_path):
    folder = cifar10_folder(tmp_path)
    (folder / SPEC.meta).write_bytes(pickle.dumps({"label_names": b"not a list"}, protocol=2))
    with pytest.raises(CifarFormatError, match="batches.meta must hold 'label_names' as a list of class names"):
        load_cifar(tmp_path, download=False)


def test_the_cli_reports_a_tampered_cifar_batch_in_one_line(capsys, tmp_path):
    batch = cifar10_folder(tmp_path / "root") / "data_batch_1"
    batch.write_bytes(tampered_batches(tmp_path / "ran")["os.system"])
    status = main(["train", "digits", "data.dataset=cifar10", f"data.root={tmp_path / 'root'}", "data.download=false",
                   "data.val_size=2", "epochs=1", "progress=false", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and f"{batch} is not a CIFAR pickle" in err, err
    assert "posix.system is not allowed" in err or "os.system is not allowed" in err
    assert not (tmp_path / "ran").exists()
