"""Action recognition through the one engine, on generated clips of a square moving left or right.

The two classes hold the same sets of frames (a left clip is a right clip played backwards), so a model that
averages over frames, TSN, cannot tell them apart, while a 3D ResNet, which sees their order, learns them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnetkit.cli import main
from resnetkit.errors import UserError
from resnetkit.tasks.training import load_task_model, task_for
from resnetkit.tasks.video import FrameLSTM, TemporalSegmentNetwork
from resnetkit.tasks.video_training import VideoTask, frame_lstm, predict_actions, split_options, video_scores
from resnetkit.train.config import load_config
from resnetkit.train.engine import fit
from tests.data_tasks.test_video_data import motion_dataset

pytest.importorskip("av")

TINY = "model.options={layers: [1, 1, 1, 1], widths: [8, 16, 32, 64], stem_width: 8}"
CLIPS = "model.head_options={frames: 8, sampling: uniform}"
COMMON = ["data.input_size=32", "data.augment=none", "data.batch_size=16", "data.eval_batch_size=32",
          "data.workers=0", "optim.lr=0.05", "optim.schedule=onecycle", "optim.weight_decay=0", "progress=false"]  # fmt: skip


def val_top1(cfg) -> float:
    fit(cfg, task=task_for(cfg))
    return json.loads((Path(cfg.out) / "summary.json").read_text())["metrics"]["val"]["top1"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return motion_dataset(tmp_path_factory.mktemp("motion") / "clips", 64, 32)


def test_a_video_resnet_learns_direction_that_a_frame_model_cannot(clips, tmp_path):
    torch.manual_seed(0)
    video = load_config(None, [f"data.dataset={clips}", *COMMON, "model.name=r3d_18", "model.head=video", TINY, CLIPS,
                               "epochs=6", f"out={tmp_path / 'r3d'}"])  # fmt: skip
    assert val_top1(video) > 0.9
    frames = load_config(None, [f"data.dataset={clips}", *COMMON, "model.name=resnet18", "model.head=tsn", TINY, CLIPS,
                                "epochs=1", f"out={tmp_path / 'tsn'}"])  # fmt: skip
    assert val_top1(frames) < 0.7  # each val clip's reversed twin holds its frames: TSN scores the pair alike


def test_cli_trains_the_video_recipe_and_the_file_rebuilds(clips, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [f"data.dataset={clips}", *COMMON, "model.name=r2plus1d_18", TINY, "epochs=1", "data.augment=imagenet",
            "data.flip=false", "model.head_options={frames: 4, sampling: dense, frame_stride: 2, clips: 2, crops: 3}"]  # fmt: skip
    assert main(["train", "video_clips", *args, "--out", str(out)]) == 0
    assert "val top-1" in capsys.readouterr().out
    model = load_task_model(out / "best.safetensors")
    record = model.record
    assert record.arch == "r2plus1d_18" and record.classes == ("left", "right") and record.task["head"] == "video"
    assert record.task["clip"] == {"frames": 4, "sampling": "dense", "frame_stride": 2, "clips": 2, "crops": 3}
    assert model.config.layers == (1, 1, 1, 1) and model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 2)
    scores = video_scores(model, torch.randn(2, 6, 3, 4, 32, 32))
    assert scores.shape == (2, 2) and torch.allclose(scores.sum(1), torch.ones(2))
    top = predict_actions(model, clips / "val" / "left" / "000.mp4")
    assert [name for name, _ in top] in (["left", "right"], ["right", "left"])
    assert sum(p for _, p in top) == pytest.approx(1.0) and top[0][1] >= top[1][1]
    capsys.readouterr()
    assert main(["predict", str(out / "best.safetensors"), str(clips / "val" / "left" / "000.mp4"), "--out",
                 str(tmp_path / "pred")]) == 0  # fmt: skip
    assert "000.mp4: " in capsys.readouterr().out
    written = json.loads((tmp_path / "pred" / "000.json").read_text())
    assert [a["class"] for a in written["top5"]] == [name for name, _ in top]
    assert main(["eval", str(out / "best.safetensors")]) == 0
    report = capsys.readouterr().out
    assert "[val]" in report and "clips: top-1" in report and "right" in report
    assert main(["export", str(out / "best.safetensors"), "--out", str(tmp_path / "clip.onnx")]) == 0
    assert "max |diff|" in capsys.readouterr().out


def test_tsn_and_lstm_files_rebuild(clips, tmp_path):
    out = tmp_path / "lstm"
    cfg = load_config(None, [f"data.dataset={clips}", *COMMON, "model.name=resnet18", "model.head=frame_lstm", TINY,
                             "model.head_options={frames: 4, hidden: 16, cell: gru}", "epochs=1", "steps=1",
                             f"out={out}"])  # fmt: skip
    assert isinstance(task_for(cfg), VideoTask)
    fit(cfg, task=task_for(cfg))
    model = load_task_model(out / "weights.safetensors")
    assert isinstance(model, FrameLSTM) and model.head.cell.value == "gru" and model.head.fc.in_features == 16
    assert model.backbone.config.widths == (8, 16, 32, 64) and model.backbone.num_classes == 0
    assert isinstance(frame_lstm("resnet18", 3, hidden=8, backbone_options={"layers": (1, 1, 1, 1)}), FrameLSTM)
    with pytest.raises(UserError, match="channels_last: not available for video"):
        VideoTask().check(load_config(None, ["model.name=r3d_18", "model.head=video", "channels_last=true"]))
    with pytest.raises(ValueError, match="'sideways' is not a valid Sampling"):
        split_options({"sampling": "sideways"})
    assert isinstance(task_for(load_config(None, ["model.name=resnet18", "model.head=tsn"])), VideoTask)
    assert isinstance(load_task_model.__globals__["HEADS"]["tsn"][1]("resnet18", 2), TemporalSegmentNetwork)


def test_a_video_resnet_exports_to_onnx_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from resnetkit import create_model
    from resnetkit.deploy.export import export_onnx

    torch.manual_seed(0)
    model = create_model("r2plus1d_18", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, num_classes=4)
    report = export_onnx(model, tmp_path / "r2plus1d.onnx", inputs=torch.randn(2, 3, 4, 32, 32))
    assert report.ok and report.max_abs_diff < 1e-4 and report.top1_agree == report.samples
