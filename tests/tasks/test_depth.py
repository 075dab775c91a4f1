"""Monocular depth: the encoder-decoder's shapes and parameters, losses and metrics on hand-computed cases, and a
depth network trained by the one engine (fit and the CLI) on generated scenes, beating the mean-depth baseline."""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image
import pytest
import torch

from resnetkit.cli import main
from resnetkit.data.depth import DepthPairs
from resnetkit.tasks.depth import (
    colorize_depth,
    depth_net,
    gradient_matching,
    l1_gradient_loss,
    multi_scale_loss,
    predict_depth,
    silog_loss,
)
from resnetkit.tasks.depth_training import DepthTask, depth_head
from resnetkit.tasks.training import load_task_model, task_for
from resnetkit.train.config import load_config
from resnetkit.train.depth_metrics import DepthMeter, image_errors
from resnetkit.train.engine import fit
from tests.data_tasks.test_depth_data import depth_zip

TINY = "model.options={layers: [1, 1, 1, 1], widths: [8, 16, 32, 64], stem_width: 8}"
DEPTH = ["model.name=resnet18", "model.head=depth", TINY, "data.input_size=32", "data.batch_size=8",
         "data.eval_batch_size=16", "data.workers=0", "optim.lr=0.05", "optim.schedule=onecycle", "optim.weight_decay=0",
         "optim.grad_clip=5", "progress=false"]  # fmt: skip
HEAD = "model.head_options={{max_depth: 10.0, decoder_widths: [8, 8, 16, 16, 32], loss: {}}}"


def test_depth_net_is_monodepth2_sized_and_multi_scale():
    assert sum(p.numel() for p in depth_net("resnet18").parameters()) == 14_329_236  # Monodepth2's ResNet-18 model
    net = depth_net("resnet18", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, min_depth=0.5,
                    max_depth=20.0)  # fmt: skip
    scales = net.train()(torch.randn(2, 3, 48, 40))
    assert [tuple(s.shape) for s in scales] == [(2, 1, 48, 40), (2, 1, 24, 20), (2, 1, 12, 10), (2, 1, 6, 5)]
    depth = net.eval()(torch.randn(1, 3, 37, 53))  # any size: each level is resized to its skip's
    assert depth.shape == (1, 1, 37, 53) and 0.5 <= depth.min() and depth.max() <= 20.0
    assert net.to_depth(torch.tensor([0.0, 0.5, 1.0])).tolist() == pytest.approx([0.5, math.sqrt(10.0), 20.0])
    with pytest.raises(ValueError, match="one width per encoder feature"):
        depth_net("cifar_resnet20", decoder_widths=(4, 4))
    with pytest.raises(ValueError, match="2D variant"):
        depth_net("r3d_18")
    with pytest.raises(ValueError, match="one value per pixel"):
        depth_head("resnet18", 3)


def test_metrics_on_hand_computed_cases():
    e = image_errors(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]))
    assert e["abs_rel"] == pytest.approx(0.25) and e["sq_rel"] == pytest.approx(0.25)
    assert e["rmse"] == pytest.approx(math.sqrt(0.5)) and e["rmse_log"] == pytest.approx(math.log(2) / math.sqrt(2))
    assert (e["delta1"], e["delta2"], e["delta3"]) == (0.5, 0.5, 0.5)  # a ratio of 2 passes none of 1.25^k, k <= 3
    e = image_errors(torch.tensor([1.3, 1.6, 2.0, 9.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))  # 0: no measurement
    assert (e["delta1"], e["delta2"], e["delta3"]) == pytest.approx((0.0, 1 / 3, 2 / 3))
    e = image_errors(torch.tensor([1e-6, 50.0, 3.0]), torch.tensor([1.0, 8.0, 12.0]), max_depth=10.0)
    assert e["abs_rel"] == pytest.approx(((1 - 1e-3) / 1 + 2 / 8) / 2)  # clamped to [1e-3, 10]; 12 m not counted
    gt = torch.tensor([1.0, 2.0, 4.0])
    assert image_errors(3 * gt, gt, median_scaling=True)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert image_errors(3 * gt, gt)["abs_rel"] == pytest.approx(2.0)
    assert image_errors(gt, torch.zeros(3)) is None
    meter = DepthMeter()  # per-image means, then their mean (not pooled over pixels)
    meter.update(torch.tensor([[[[1.0, 2.0, 2.0, 2.0]]], [[[4.0, 0.0, 0.0, 0.0]]]]),
                 torch.tensor([[[[2.0, 2.0, 2.0, 2.0]]], [[[2.0, 0.0, 0.0, 0.0]]]]), loss=1.0)  # fmt: skip
    summary = meter.summary()
    assert summary["abs_rel"] == pytest.approx((0.125 + 1.0) / 2) and summary["loss"] == 1.0
    assert meter.details()["depth_eval"]["images"] == 2


def test_losses_on_hand_computed_cases():
    target = torch.full((2, 1, 4, 4), 2.0)
    mask = torch.ones_like(target, dtype=torch.bool)
    assert silog_loss(target * math.e, target, mask).item() == pytest.approx(0.5)  # d = 1: 1 - 0.5 * 1
    assert silog_loss(target * math.e, target, mask, lam=1.0).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    signs = torch.tensor([1.0, -1.0]).repeat(8).view(1, 1, 4, 4).expand(2, -1, -1, -1)
    assert silog_loss(target * signs.exp(), target, mask).item() == pytest.approx(1.0)  # d = +-1: mean 0
    half = mask.clone()
    half[1] = False  # an image without valid pixels does not count
    assert silog_loss(target * math.e, target, half).item() == pytest.approx(0.5)
    ramp = torch.arange(4.0).repeat(4, 1).view(1, 1, 4, 4)  # residual = column index
    assert gradient_matching(ramp, mask[:1]).item() == pytest.approx(12 / 16 + 4 / 4)  # scales 1, 2 (then 1 pixel)
    assert l1_gradient_loss(target[:1] + ramp, target[:1], mask[:1]).item() == pytest.approx(1.5 + 0.5 * 1.75)
    assert l1_gradient_loss(target + 0.5, target, mask).item() == pytest.approx(0.5)  # a shift has no gradient
    coarse = [torch.full((1, 1, 4, 4), 2.0), torch.full((1, 1, 2, 2), 2.0 * math.e)]  # upsampled, averaged
    assert multi_scale_loss(coarse, target[:1], "silog").item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="loss"):
        multi_scale_loss(coarse, target[:1], "l2")


def test_training_beats_the_mean_depth_baseline(tmp_path):
    """A tiny ResNet-18 encoder trained 8 epochs on 48 scenes: AbsRel on 16 held-out scenes well below that of
    predicting every pixel the training set's mean depth."""
    torch.manual_seed(0)
    data = depth_zip(tmp_path / "scenes.zip", 48, 16)
    cfg = load_config(
        None, [f"data.dataset={data}", *DEPTH, HEAD.format("silog"), "epochs=8", f"out={tmp_path / 'run'}"]
    )
    fit(cfg, task=task_for(cfg))
    val = json.loads((tmp_path / "run" / "summary.json").read_text())["metrics"]["val"]
    mean_depth = torch.cat([d.flatten() for _, d in DepthPairs(str(data), "train")]).mean()
    baseline = DepthMeter(max_depth=10.0)
    for _, depth in DepthPairs(str(data), "val"):
        baseline.update(torch.full_like(depth, float(mean_depth))[None], depth[None])
    base = baseline.summary()
    assert base["abs_rel"] > 0.35  # the scenes' depths vary: a constant is far off
    assert val["abs_rel"] < 0.4 * base["abs_rel"] and val["delta1"] > 0.8
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in log if "train_loss" in r]
    assert losses[-1] < 0.3 * losses[0]


def test_cli_trains_the_depth_recipe_and_the_file_rebuilds(tmp_path, capsys):
    data = depth_zip(tmp_path / "scenes.zip", 8, 4)
    out = tmp_path / "cli"
    args = [f"data.dataset={data}", *DEPTH, HEAD.format("l1_gradient"), "epochs=1", "data.base_size=32"]
    assert main(["train", "depth_folder", *args, "--out", str(out)]) == 0
    assert "val delta1" in capsys.readouterr().out
    model = load_task_model(out / "best.safetensors")
    assert model.record.task["head"] == "depth" and model.record.task["depth"]["loss"] == "l1_gradient"
    assert model.record.task["options"]["max_depth"] == 10.0 and model.encoder.config.widths == (8, 16, 32, 64)
    assert "-pixel crops of shorter side 32" in model.record.recipe  # depth_transform's, not data.augment
    cfg = load_config("depth_folder", [*args, "epochs=2", f"out={out}"])
    fit(cfg, resume=True, task=task_for(cfg))  # resumed from last.safetensors for its second epoch
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "val_delta1" in r] == [1, 2]
    image, _ = DepthPairs(str(data), "val")[0]
    depth = predict_depth(model, image)
    assert depth.shape == (32, 32) and 0.1 <= depth.min() and depth.max() <= 10.0
    rgb = colorize_depth(depth)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    frame = tmp_path / "frame.png"
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(frame)
    capsys.readouterr()
    assert main(["predict", str(out / "best.safetensors"), str(frame)]) == 0  # writes the map beside the input
    assert "wrote" in capsys.readouterr().out and np.array_equal(np.asarray(Image.open(tmp_path / "frame_depth.png")), rgb)
    assert main(["eval", str(out / "best.safetensors")]) == 0
    assert "[val], 4 images: abs_rel" in capsys.readouterr().out
    assert main(["export", str(out / "best.safetensors"), "--out", str(tmp_path / "depth.onnx")]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert isinstance(task_for(load_config(None, ["model.name=resnet18", "model.head=depth"])), DepthTask)


def test_colorize_depth_makes_near_bright_and_invalid_black():
    depth = np.array([[1.0, 2.0, 4.0, 0.0]])
    rgb = colorize_depth(depth).astype(int)
    assert rgb[0, 0].sum() > rgb[0, 1].sum() > rgb[0, 2].sum() and rgb[0, 3].sum() == 0


def test_a_depth_net_exports_to_onnx_with_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from resnetkit.deploy.export import export_onnx

    torch.manual_seed(0)
    net = depth_net("resnet18", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_width=8, max_depth=10.0)
    report = export_onnx(net, tmp_path / "depth.onnx", inputs=torch.randn(2, 3, 32, 48))
    assert report.ok and report.max_abs_diff < 1e-4  # depths in metres, batch 2 and 1
