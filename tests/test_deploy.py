"""Deployment: BatchNorm fusion on every variant, exports checked against eager, and `resnetkit export`."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper
from torchvision.ops import FrozenBatchNorm2d

from resnetkit import ResNet, create_model, get_variant, list_models
from resnetkit.cli import main
from resnetkit.deploy import (
    EXPORTERS,
    Format,
    ParityError,
    check_parity,
    export_onnx,
    fuse_model,
    norm_names,
    sample_images,
)

from .conftest import randomize_norms, test_size

ALL = list_models()


def small_model(name: str, **overrides) -> ResNet:
    """The variant with one unit per stage where it has more than 16 (every family kept, tests stay fast)."""
    layers = get_variant(name).config.layers
    if sum(layers) > 16:
        overrides.setdefault("layers", (1,) * len(layers))
    return randomize_norms(create_model(name, num_classes=5, **overrides)).eval()


def images(model: ResNet, name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, model.config.in_chans, test_size(name), test_size(name))


@pytest.mark.parametrize("name", ALL)
def test_fusion_matches_eager_on_every_variant(name):
    model = small_model(name)
    fused = fuse_model(model)
    x = images(model, name)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert (got - expected).abs().max().item() <= 1e-4, name
    before, after = norm_names(model), norm_names(fused)
    assert len(after) < len(before) and not fused.training
    if model.config.preact:  # left: what reads a residual sum and feeds a ReLU (see deploy/fuse.py)
        assert all(n == "norm" or n.endswith(".bn1") for n in after), after
    else:
        assert after == [], after
    assert norm_names(model) == before  # the original is untouched


def test_fused_model_keeps_its_class_interface_and_sheds_norm_parameters():
    model = small_model("resnet50d")
    fused = fuse_model(model)
    x = torch.randn(1, 3, 64, 64)
    assert type(fused) is ResNet
    with torch.no_grad():
        for a, b in zip(model.forward_intermediates(x)[1], fused.forward_intermediates(x)[1]):
            assert (b - a).abs().max() <= 1e-5 * a.abs().max()  # stage outputs reach 100+: relative to the scale
    keys = fused.state_dict().keys()
    assert not any("running_mean" in k for k in keys)
    assert "conv1.0.bias" in keys and "layer1.0.downsample.1.bias" in keys  # deep stem; ResNet-D pool + 1x1
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_preact_stem_fold_only_where_the_stem_feeds_nothing_else():
    # WRN's first unit projects the normalised input: its bn1 is the stem conv's only reader and folds into it.
    wrn = fuse_model(small_model("cifar_wrn16_8", layers=(1, 1, 1)))
    assert "layer1.0.bn1" not in norm_names(wrn) and wrn.conv1.bias is not None
    # ResNet-110's identity shortcut adds the raw stem output: folding would change the sum.
    r110 = fuse_model(small_model("cifar_preact_resnet110"))
    assert "layer1.0.bn1" in norm_names(r110) and r110.conv1.bias is None


RANGES = [(-0.1, 0.1), (0.75, 1.25), (0.75, 1.25), (-0.1, 0.1)]


@pytest.mark.parametrize("norm", ["frozen_batch", "group"])
def test_fusion_with_other_norms(norm):
    model = create_model("cifar_resnet20", norm=norm, layers=(1, 1, 1)).eval()
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):  # buffers, not parameters: randomize_norms leaves them alone
            for buffer, (low, high) in zip(("running_mean", "running_var", "weight", "bias"), RANGES):
                getattr(m, buffer).uniform_(low, high)
    fused = fuse_model(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-4)
    kinds = {type(m).__name__ for m in fused.modules()}
    assert ("FrozenBatchNorm2d" not in kinds) if norm == "frozen_batch" else ("GroupNorm2d" in kinds)


EXPORT_MODELS = {"cifar_resnet20": (1, 1, 1), "cifar_preact_resnet164": (1, 1, 1), "resnet50": (1, 1, 1, 1)}


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("name", list(EXPORT_MODELS))
def test_fused_exports_match_eager(tmp_path, name, fmt):
    model = small_model(name, layers=EXPORT_MODELS[name])
    path = tmp_path / f"{name}{fmt.suffix}"
    inputs = sample_images(3, test_size(name))
    report = EXPORTERS[fmt](fuse_model(model), path, reference=model, inputs=inputs)
    assert report.ok and report.max_abs_diff <= 1e-4 and path.is_file()
    assert report.batch_sizes == (3, 1)  # traced at 2: both sizes exercise the dynamic batch axis
    assert report.top1_agree == report.samples == 4
    assert "OK" in report.line()


def test_onnx_names_and_batch_axis_and_a_tampered_file_fails(tmp_path):
    model = small_model("cifar_resnet20", layers=(1, 1, 1))
    path = tmp_path / "r20.onnx"
    inputs = sample_images(4, 32)
    assert export_onnx(model, path, inputs=inputs).ok
    proto = onnx.load(path)
    (image,), (logits,) = proto.graph.input, proto.graph.output
    assert image.name == "image" and logits.name == "logits"
    assert image.type.tensor_type.shape.dim[0].dim_param and logits.type.tensor_type.shape.dim[0].dim_param
    fc_bias = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).shape == (5,))
    fc_bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(fc_bias) + 1e-3, fc_bias.name))
    onnx.save(proto, path)
    report = check_parity(Format.ONNX, path, model, inputs)
    assert not report.ok and 5e-4 < report.max_abs_diff < 2e-3 and "FAILED" in report.line()


def test_onnx_opset_17(tmp_path):
    model = small_model("cifar_preact_resnet164", layers=(1, 1, 1))
    assert export_onnx(fuse_model(model), tmp_path / "r164.onnx", 32, opset=17, reference=model).ok
    assert {o.domain: o.version for o in onnx.load(tmp_path / "r164.onnx").opset_import}[""] == 17


def test_export_raises_past_tolerance(tmp_path):
    model = small_model("cifar_resnet20", layers=(1, 1, 1))
    other = fuse_model(model)
    with torch.no_grad():
        other.fc.bias += 0.01
    with pytest.raises(ParityError) as info:
        EXPORTERS[Format.EXPORTED](other, tmp_path / "r20.pt2", reference=model)
    assert info.value.report.max_abs_diff == pytest.approx(0.01, rel=1e-3) and "\n" not in str(info.value)


@pytest.mark.parametrize("fmt", ["onnx", "exported"])
def test_cli_exports_a_checkpoint_with_parity(tiny_checkpoint, fmt, tmp_path, capsys):
    out = tmp_path / f"digits.{fmt}"
    assert main(["export", str(tiny_checkpoint), "--format", fmt, "--fuse", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "fused 7 of 7 BatchNorm layers into their convolutions"
    assert lines[1].startswith(f"{fmt} {out}: max |diff|") and lines[1].endswith("batch sizes 8 and 1: OK")
    assert "top-1 agreement 9/9 (100.0%)" in lines[1] and out.is_file()


def test_cli_default_path_is_beside_the_checkpoint(tiny_checkpoint, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "torchscript"]) == 0
    assert tiny_checkpoint.with_suffix(".torchscript").is_file()
    assert str(tiny_checkpoint.with_suffix(".torchscript")) in capsys.readouterr().out


def test_cli_exits_1_when_the_export_does_not_match(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    def broken_fuse(model):  # a fusion bug: the exported network is not the checkpoint's
        fused = fuse_model(model)
        with torch.no_grad():
            fused.layer3[0].conv2.weight.mul_(1.01)
        return fused

    monkeypatch.setattr("resnetkit.cli.export.fuse_model", broken_fuse)
    assert main(["export", str(tiny_checkpoint), "--fuse", "--out", str(tmp_path / "bad.onnx")]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "does not match the eager model" in captured.err


def test_cli_bad_input_is_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--opset", "13"]) == 2
    assert main(["export", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "opset 13" in err[0] and "missing.pt" in err[1]
