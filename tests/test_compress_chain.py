"""``resnetkit compress``: the chain prune -> fine-tune (distilled) -> int8 on a real tiny checkpoint; every stage
is written as a model file, reloadable and measured."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from resnetkit.cli import main, parse_args
from resnetkit import load_model
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.workflows.compress import ChainPlan, compress_model, format_stages


@pytest.fixture(scope="module")
def chain(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress")
    plan = ChainPlan(prune=0.5, finetune_epochs=3, distill=True, int8=True, calibration_images=64, latency_repeats=2,
                     overrides=("progress=false",))  # fmt: skip
    return out, compress_model(tiny_checkpoint, out, plan)


def test_every_stage_is_measured(chain):
    out, stages = chain
    assert [s.name for s in stages] == ["original", "compressed", "fine-tuned", "int8"]
    original, compressed, tuned, int8 = stages
    assert 0.45 <= compressed.macs / original.macs <= 0.5  # pruned to half the MACs
    assert tuned.macs == compressed.macs == int8.macs and tuned.params < original.params
    assert all(0.0 <= s.val_top1 <= 1.0 and s.latency_ms > 0 for s in stages)
    assert int8.file_bytes < tuned.file_bytes / 2  # int8 weights
    assert compressed.details["prune"]["macs_fraction"] == pytest.approx(compressed.macs / original.macs, rel=0.02)
    table = format_stages(stages).splitlines()
    assert len(table) == 5 and table[1].split()[-1] == "1.00x"


def test_stages_are_files_that_reload(chain, tiny_checkpoint):
    out, stages = chain
    tuned = load_checkpoint(out / "finetune" / "last.safetensors")
    assert tuned.train_state["teacher"]["checkpoint"] == str(tiny_checkpoint)  # distilled from the original
    assert [edit["op"] for edit in tuned.record.edits] == ["prune"]
    model = load_model(out / "finetune" / "last.safetensors")
    assert sum(p.numel() for p in model.parameters()) == stages[2].params
    document = json.loads((out / "compress.json").read_text())
    assert document["plan"]["prune"] == 0.5 and [s["name"] for s in document["stages"]][-1] == "int8"
    assert (out / "model-int8.onnx").is_file() and (out / "finetune.yaml").is_file()


def test_cli_needs_a_step(tiny_checkpoint, tmp_path, capsys):
    assert main(["compress", str(tiny_checkpoint), "--out", str(tmp_path)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["compress", str(tiny_checkpoint), "--out", str(tmp_path), "--distill", "--prune", "0.5"]) == 2
    assert "--finetune-epochs" in capsys.readouterr().err


def test_rerun_reuses_the_fine_tuning_and_another_plan_is_refused(chain, tiny_checkpoint):
    out, stages = chain
    tuned = out / "finetune" / "last.safetensors"
    before = tuned.stat().st_mtime_ns
    plan = ChainPlan(prune=0.5, finetune_epochs=3, distill=True, int8=True, calibration_images=64, latency_repeats=2,
                     overrides=("progress=false",))  # fmt: skip
    again = compress_model(tiny_checkpoint, out, replace(plan, latency_repeats=3, latency_threads=1))
    assert tuned.stat().st_mtime_ns == before  # finished: not trained again (timing settings are not the plan)
    assert [s.val_top1 for s in again] == [s.val_top1 for s in stages]
    with pytest.raises(ValueError, match="another chain"):
        compress_model(tiny_checkpoint, out, ChainPlan(prune=0.25, latency_repeats=2))


def test_depth_pruning_stage_from_the_cli(tiny_checkpoint, tmp_path, capsys):
    # one unit per stage: only layer1's has an identity shortcut, and dropping it leaves about 4/5 of the MACs
    argv = ["compress", str(tiny_checkpoint), "--out", str(tmp_path), "--prune-depth", "0.9", "--lesion-images", "32",
            "--repeats", "2"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads((tmp_path / "compress.json").read_text())
    original, compressed = document["stages"]
    assert list(compressed["details"]["prune_depth"]["dropped"]) == ["layer1.0"]
    assert compressed["macs"] / original["macs"] <= 0.9 and compressed["params"] < original["params"]
    model = load_model(tmp_path / "compressed.safetensors")
    assert isinstance(model.layer1[0], torch.nn.Identity)
    assert "layer1.0" in capsys.readouterr().out


def test_overrides_may_follow_the_flags(capsys):
    _, args = parse_args(["compress", "run/last.safetensors", "optim.lr=0.05", "--int8", "progress=false", "--out", "o"])
    assert args.overrides == ["optim.lr=0.05", "progress=false"] and args.int8 and args.out == "o"
    _, args = parse_args(["train", "cifar10_cpu", "--out", "o", "epochs=3"])
    assert (args.recipe, args.overrides, args.out) == ("cifar10_cpu", ["epochs=3"], "o")
    for argv in (["compress", "c.safetensors", "--out", "o", "stray"], ["export", "c.safetensors", "epochs=3"]):  # no KEY=VALUE / no overrides
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "unrecognized arguments" in capsys.readouterr().err
