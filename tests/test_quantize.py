"""Int8: static quantization through ONNX Runtime, checked against eager; QAT; `resnetkit export --int8`.

Most exports here use opset 17 (the TorchScript-based exporter, ten times faster than the torch.export one on
these tiny models); the CLI tests go through the default opset 18.
"""

from __future__ import annotations

import copy
import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from resnetkit import create_model, get_variant
from resnetkit.cli import main
from resnetkit.data import digits_splits
from resnetkit.deploy import (
    Calibration,
    Int8ParityReport,
    ParityError,
    check_int8_parity,
    export_int8,
    export_onnx,
    is_qat,
    prepare_qat,
    quantize_onnx,
    sample_images,
    strip_qat,
)
from resnetkit import load_model
from resnetkit.train.checkpoint import load_checkpoint
from resnetkit.workflows import calibration_images

from .conftest import randomize_norms, test_size


def tiny_model(name: str = "cifar_resnet20") -> nn.Module:
    """The variant with one unit per stage and 5 classes, BatchNorm statistics randomized."""
    layers = (1,) * len(get_variant(name).config.layers)
    return randomize_norms(create_model(name, num_classes=5, layers=layers)).eval()


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    """A tiny ResNet-20 as fp32 ONNX, with the model and calibration images."""
    torch.manual_seed(0)  # module-scoped: set up before the per-test seed
    model = tiny_model()
    path = tmp_path_factory.mktemp("int8") / "fp32.onnx"
    export_onnx(model, path, 32, opset=17)
    return path, model, sample_images(24, 32, seed=1)


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    """The tiny digits checkpoint's model, and 96 of its training images (16x16)."""
    return load_model(tiny_checkpoint).eval(), calibration_images(tiny_checkpoint, 96)


def weight_quantization(path) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """For each int8 weight initializer read by a DequantizeLinear: (weight shape, scale shape)."""
    proto = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and arrays.get(node.input[0], np.zeros(0)).dtype == np.int8:
            found[node.input[0]] = (arrays[node.input[0]].shape, arrays[node.input[1]].shape)
    return found


def activation_scales(path) -> np.ndarray:
    proto = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return np.array([arrays[n.input[1]] for n in proto.graph.node if n.op_type == "QuantizeLinear"])


def test_int8_file_is_qdq_with_per_channel_weights_and_smaller(fp32_file, tmp_path):
    fp32, model, calibration = fp32_file
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calibration)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = weight_quantization(int8)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == len(convs)  # every conv and the classifier: int8 weights
    for shape, scale in weights.values():
        assert scale == (shape[0],)  # one scale per output channel
    assert int8.stat().st_size < fp32.stat().st_size / 2.5  # 4x on the weights; graph overhead on a tiny net


def test_per_tensor_option_and_method_change_the_result(fp32_file, tmp_path):
    fp32, _, calibration = fp32_file
    per_tensor = quantize_onnx(fp32, tmp_path / "pt.onnx", calibration, per_channel=False)
    assert all(scale == () for _, scale in weight_quantization(per_tensor).values())
    scales = {m: activation_scales(quantize_onnx(fp32, tmp_path / f"{m.value}.onnx", calibration, method=m))
              for m in Calibration}  # fmt: skip
    minmax, percentile, entropy = (scales[Calibration(m)] for m in ("minmax", "percentile", "entropy"))
    assert (percentile <= minmax * (1 + 1e-5)).all()  # ORT's threads reorder float sums: not bit-exact
    assert (percentile < 0.99 * minmax).any()  # percentile clips the tails
    assert not np.allclose(entropy, minmax)


def test_bad_calibration_is_a_clear_error(fp32_file, tmp_path):
    fp32, _, calibration = fp32_file
    cases = {"(N, C, H, W)": calibration[0], "at least 2": calibration[:1], "NaN": calibration * float("nan")}
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            quantize_onnx(fp32, tmp_path / "bad.onnx", bad)
    with pytest.raises(ValueError, match="percentile"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", calibration, percentile=0)
    with pytest.raises(ValueError, match="'median' is not a valid Calibration"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", calibration, method="median")


def test_int8_of_a_trained_model_agrees_with_eager(trained, tmp_path):
    model, images = trained
    report = export_int8(model, tmp_path / "digits-int8.onnx", images[:64], inputs=images[64:], opset=17)
    assert isinstance(report, Int8ParityReport) and report.ok and np.isfinite(report.max_abs_diff)
    assert report.top1_agreement >= 0.95 and report.batch_sizes == (32, 1)
    assert 0 < report.max_abs_diff < 0.5 * model(images[64:]).abs().max().item()  # rounding, not a broken net
    assert "int8" in report.line() and report.line().endswith(": OK") and "smaller than fp32" in report.line()


def test_unrepresentative_calibration_fails_the_check(trained, tmp_path):
    model, images = trained  # calibrated on near-blank images, the int8 file clips every real one
    with pytest.raises(ParityError) as info:
        export_int8(model, tmp_path / "bad-int8.onnx", images[:64] * 1e-3, inputs=images[64:], opset=17)
    report = info.value.report
    assert isinstance(report, Int8ParityReport) and not report.ok and report.top1_agreement < 0.95
    assert "FAILED (top-1 agreement below 95%)" in str(info.value) and "\n" not in str(info.value)
    again = check_int8_parity(tmp_path / "bad-int8.onnx", model, images[64:], min_top1_agreement=0.0)
    assert again.ok and again.top1_agree == report.top1_agree  # the threshold is the only difference


def test_calibration_images_are_the_models_training_images(tiny_checkpoint):
    record = load_model(tiny_checkpoint).record
    images = calibration_images(record, 40)
    assert images.shape == (40, len(record.preprocess.mean), 16, 16) and images.dtype == torch.float32
    assert abs(images.mean().item()) < 0.5 and 0.5 < images.std().item() < 2  # normalised as in training
    assert torch.equal(images[:10], calibration_images(tiny_checkpoint, 10))  # the first N, in a fixed order
    assert not torch.equal(images[:10], calibration_images(tiny_checkpoint, 10, split="val"))
    with pytest.raises(ValueError, match="at least 1"):
        calibration_images(record, 0)


# QAT


QAT_VARIANTS = ["cifar_resnet20", "cifar_preact_resnet164", "resnet50d", "seresnext50_32x4d", "cifar_wrn16_8"]


@pytest.mark.parametrize("name", QAT_VARIANTS)
def test_qat_keeps_the_state_dict_and_strips_back_to_the_original(name):
    model = tiny_model(name)
    before = {k: v.shape for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, test_size(name), test_size(name))
    with torch.no_grad():
        expected = model(x)
        prepare_qat(prepare_qat(model))  # twice: a no-op the second time
        assert is_qat(model) and {k: v.shape for k, v in model.state_dict().items()} == before
        fresh = tiny_model(name)
        fresh.load_state_dict(model.state_dict(), strict=True)  # a QAT checkpoint is an ordinary checkpoint
        assert not torch.equal(model(x), expected)
        strip_qat(model)
        assert not is_qat(model) and torch.equal(model(x), expected)


def test_qat_forward_differs_by_int8_rounding_and_gradients_flow():
    model = tiny_model()
    reference = copy.deepcopy(model).train()
    prepare_qat(model).train()  # training mode: BatchNorm on batch statistics, activation ranges observed
    x = sample_images(16, 32, seed=3)
    logits = model(x)
    F.cross_entropy(logits, torch.arange(16) % 5).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        expected = reference(x)
    diff = (logits - expected).abs().max().item()
    assert 1e-4 < diff < 0.05 * expected.abs().max().item()  # 8-bit steps compound over 7 layers: a few %
    twin = copy.deepcopy(model).eval()  # the instance forwards rebind to the copy's weights
    with torch.no_grad():
        twin.fc.weight.zero_()
        assert torch.equal(twin(x), twin.fc.bias.expand(16, -1)) and not torch.equal(model.eval()(x), twin(x))


def test_qat_rejects_layers_whose_forward_it_cannot_keep():
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match="Scaled overrides forward"):
        prepare_qat(nn.Sequential(Scaled(3, 4, 3)))
    with pytest.raises(ValueError, match="no Conv2d or Linear"):
        prepare_qat(nn.Sequential(nn.ReLU()))


def test_qat_training_then_int8_export_agrees(tmp_path):
    torch.manual_seed(0)
    train, val, _ = digits_splits()
    images = lambda part: (F.interpolate(part.images.float() / 255, size=16, mode="bilinear") - 0.3) / 0.4  # noqa: E731
    x, y, x_val = images(train), train.labels, images(val)
    model = prepare_qat(create_model("cifar_resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1)))
    # a well-trained model: one at 60% accuracy has near-tied logits that int8 rounding flips (CI saw 92% agreement)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    for step in range(150):
        batch = torch.arange(step * 48, (step + 1) * 48) % len(x)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(x_val).argmax(1) == val.labels).float().mean() > 0.85  # it learned (chance: 10%)
    report = export_int8(model, tmp_path / "qat-int8.onnx", x[:128], inputs=x_val[:64], opset=17)
    assert report.ok and report.top1_agreement >= 0.95 and is_qat(model)  # checked against the QAT model itself


# CLI


def test_cli_int8_export_of_a_checkpoint(tiny_checkpoint, capsys):
    args = ["export", str(tiny_checkpoint), "--int8", "--fuse", "--calibration-images", "64"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = tiny_checkpoint.with_name("last-fused-int8.onnx")
    assert lines[0] == "fused 7 of 7 BatchNorm layers into their convolutions"
    assert lines[1] == "calibrating on 64 training images of digits (percentile), checking on the next 64"
    assert lines[2].startswith(f"onnx int8 {out} (") and lines[2].endswith("batch sizes 64 and 1: OK")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(out)).graph.node}


def test_cli_int8_exits_1_when_calibration_is_unrepresentative(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    def blank_calibration(state, count, dataset=None):  # a data bug: the calibration part of the images is blank
        images = calibration_images(state, count, dataset=dataset)
        images[: count - 64] *= 1e-3
        return images

    monkeypatch.setattr("resnetkit.cli.export.calibration_images", blank_calibration)
    out = tmp_path / "bad-int8.onnx"
    assert main(["export", str(tiny_checkpoint), "--int8", "--calibration-images", "64", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED (top-1 agreement below 95%)" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "top-1 agreement" in captured.err


def test_cli_int8_bad_input_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    ckpt = str(tiny_checkpoint)
    assert main(["export", ckpt, "--int8", "--format", "exported"]) == 2
    assert main(["export", ckpt, "--int8", "--calibration-images", "1"]) == 2
    assert main(["export", ckpt, "--int8", "--calibration-images", "5000"]) == 2  # digits: 1,259 training images
    assert main(["export", ckpt, "--int8", "--data", str(tmp_path / "nowhere")]) == 2
    assert main(["export", ckpt, "--data", "cifar10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("resnetkit export: error: ") for line in err)
    assert "--format exported" in err[0] and "at least 2" in err[1] and "lower --calibration-images" in err[2]
    assert "nowhere" in err[3] and "add --int8" in err[4]
    with pytest.raises(SystemExit):
        main(["export", ckpt, "--int8", "--calibration", "median"])


def test_qat_training_option_trains_a_normal_checkpoint(tiny_checkpoint, tmp_path):
    from resnetkit.train import fit, load_config

    out = tmp_path / "qat"
    fit(load_config("digits", ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "steps=3", "qat=true",
                               f"init_from={tiny_checkpoint}", "progress=false", f"out={out}"]))  # fmt: skip
    last = load_checkpoint(out / "last.safetensors")
    assert last.record.train_config["qat"] is True
    original = load_checkpoint(tiny_checkpoint).weights
    assert last.weights.keys() == original.keys()  # no fake-quant state saved
    assert any(not torch.equal(last.weights[k], original[k]) for k in original)  # it trained
    model = load_model(out / "last.safetensors")  # an ordinary model again
    assert not any(hasattr(m, "weight_fake_quant") for m in model.modules())


def test_reduce_range_follows_the_cpu(monkeypatch):
    """7-bit weights exactly where ONNX Runtime's u8s8 kernels can saturate: x86 without VNNI."""
    from resnetkit.deploy import quantize

    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine().lower() in ("x86_64", "amd64") and cpuinfo.is_file():
        flags = set(cpuinfo.read_text().split())
        assert quantize.needs_reduce_range() == (not flags & {"avx512_vnni", "avx_vnni"})
    monkeypatch.setattr(quantize.platform, "machine", lambda: "aarch64")
    assert quantize.needs_reduce_range() is False
