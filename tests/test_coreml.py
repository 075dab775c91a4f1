"""Core ML export: what can be checked off macOS, read back from the saved package.

Core ML's runtime is macOS-only, so these tests read the ``.mlpackage`` that was written (interface, op set,
labels, the image input's scale and bias, metadata) and check the preprocessing fold numerically in PyTorch; the
package's predictions are checked on a Mac by ``python -m resnetkit.deploy.coreml MODEL PACKAGE``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.cli import main
from resnetkit.models import ModelRecord
from resnetkit.models.record import Preprocess

from .conftest import randomize_norms

pytest.importorskip("coremltools", reason="Core ML export needs coremltools (pip install 'resnetkit[coreml]')")

from resnetkit.deploy.coreml import ImageScaling, RawPixelClassifier, describe_coreml, export_coreml

CIFAR = Preprocess.square(32, (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))  # unequal stds: a channel multiply
# the program's ops for these networks: nothing a Core ML ML Program cannot run on the Neural Engine or GPU
KNOWN_OPS = {"add", "cast", "classify", "clip", "concat", "const", "conv", "linear", "max_pool", "mul", "pad",
             "reduce_mean", "relu", "reshape", "slice_by_index", "softmax", "split", "transpose"}  # fmt: skip


def recorded(name: str, preprocess: Preprocess, **options) -> torch.nn.Module:
    model = randomize_norms(create_model(name, **options)).eval()
    classes = tuple(f"class_{i}" for i in range(model.num_classes))
    model.record = ModelRecord(name, model.config, preprocess, classes, source="test")
    return model


# a ResNet-18 (224 px, ImageNet preprocessing), the CIFAR ResNet-20 and both CIFAR mobile networks, with fewer
# units (every kind of unit and shortcut kept) so that each converts in a few seconds; RESNETKIT_FULL_EXPORTS=1
# converts them at full depth (5 to 15 s each on one core)
MOBILE_STAGES = [{"channels": 16, "units": 1, "stride": 1, "expansion": 1},
                 {"channels": 24, "units": 2, "stride": 2, "expansion": 6}]  # fmt: skip
SHUFFLE_STAGES = [{"channels": 48, "units": 2, "stride": 2}, {"channels": 96, "units": 1, "stride": 2}]
MODELS = {"resnet18": (Preprocess(), {"layers": (1, 1, 1, 1)}),
          "cifar_resnet20": (CIFAR, {"layers": (1, 1, 1)}),
          "cifar_mobilenet_v2": (CIFAR, {"stages": MOBILE_STAGES}),
          "cifar_shufflenet_v2_x0_5": (CIFAR, {"stages": SHUFFLE_STAGES})}  # fmt: skip
FULL = os.environ.get("RESNETKIT_FULL_EXPORTS", "") not in ("", "0")


@pytest.mark.parametrize("name", list(MODELS))
def test_package_interface_labels_ops_and_folded_preprocessing(tmp_path, name):
    pre, options = MODELS[name]
    model = recorded(name, pre, **({} if FULL else options))
    path = tmp_path / f"{name}.mlpackage"
    written = export_coreml(model, path)
    d = describe_coreml(path)  # read back from disk
    assert d == written and path.is_dir()
    assert (d.input_name, d.color_space, d.size) == ("image", "RGB", (pre.crop_size, pre.crop_size))
    assert d.outputs == ("classLabel", "classLabel_probs") and d.predicted_feature == "classLabel"
    assert d.labels == model.record.classes
    assert d.opset == "CoreML5" and not d.fp16  # ML Program for iOS 15 / macOS 12, fp32 by default
    assert {"conv", "softmax", "classify"} <= set(d.ops) <= KNOWN_OPS, set(d.ops) - KNOWN_OPS
    assert json.loads(d.metadata["resnetkit.preprocess"]) == pre.to_dict()
    assert d.metadata["resnetkit.arch"] == name
    # raw pixels through the package's scale and bias and the channel multiply == the record's normalisation
    channel_scale = tuple(json.loads(d.metadata["resnetkit.channel_scale"]))
    pixels = torch.randint(0, 256, (2, 3, pre.crop_size, pre.crop_size)).float()
    folded = ImageScaling(d.scale, d.bias, channel_scale).apply(pixels)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (pre.mean, pre.std))
    torch.testing.assert_close(folded, (pixels / 255 - mean) / std, rtol=0, atol=1e-5)


def test_the_wrapped_network_on_raw_pixels_equals_softmax_of_the_model_on_normalised_images():
    model = recorded("cifar_resnet20", CIFAR, layers=(1, 1, 1))
    scaling = ImageScaling.of(CIFAR)
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        wrapped = RawPixelClassifier(model, scaling.channel_scale)(scaling.image_input(pixels.float()))
        expected = torch.softmax(model(torch.stack([CIFAR(p) for p in pixels])), dim=1)
    torch.testing.assert_close(wrapped, expected, rtol=0, atol=1e-5)
    equal_stds = ImageScaling.of(Preprocess.square(32, (0.5,) * 3, (0.25,) * 3))
    assert RawPixelClassifier(model, equal_stds.channel_scale).channel_scale is None  # all in the image input


def test_fp16_stores_half_weights(tmp_path):
    model = recorded("cifar_resnet20", CIFAR, layers=(1, 1, 1))
    d = export_coreml(model, tmp_path / "half.mlpackage", fp16=True)
    assert d.fp16 and "cast" in d.ops and d.labels == model.record.classes


def test_cli_exports_a_grayscale_checkpoint_with_its_class_names(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "digits.mlpackage"
    assert main(["export", str(tiny_checkpoint), "--format", "coreml", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "GRAYSCALE 16x16 image" in line and "Not run: Core ML predicts on macOS only" in line
    d = describe_coreml(out)
    model = load_model(tiny_checkpoint)
    assert d.labels == model.record.classes and len(d.bias) == 1
    pre = model.record.preprocess
    assert d.scale == pytest.approx(1 / (255 * pre.std[0]), rel=1e-6)
    assert d.bias[0] == pytest.approx(-pre.mean[0] / pre.std[0], rel=1e-6)


def test_cli_rejects_options_of_other_routes(tiny_checkpoint, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--fp16"]) == 2
    assert "--fp16 is for --format coreml" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), "--format", "coreml", "--int8"]) == 2
    assert "--int8 writes ONNX, LiteRT or TensorRT" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the check runs the package")
def test_the_mac_check_says_it_needs_a_mac(tmp_path, capsys):
    from resnetkit.deploy.coreml import _main

    assert _main(["cifar_resnet20", str(tmp_path / "m.mlpackage")]) == 2
    assert "Core ML predicts on macOS only" in capsys.readouterr().err
