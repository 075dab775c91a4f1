"""resnetkit networks exported as Keras 3 models (resnetkit.deploy.keras_export, ``resnetkit export --format
keras``): basic and bottleneck units, v1 and pre-activation, option-A shortcuts, ResNetV2 strides, ResNet-D, SE and
ResNeXt groups give Keras' torch backend the eager outputs; the graph reader reads an export back. Norm statistics
are random; inputs are small (32 px for CIFAR nets; 72 or 80 px elsewhere, so odd maps meet the strided layers)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from resnetkit import create_model
from resnetkit.cli import main
from resnetkit.deploy.export import ParityError

os.environ["KERAS_BACKEND"] = "torch"  # before the first import of keras; TensorFlow is not needed
keras = pytest.importorskip("keras")

from resnetkit.deploy.keras_export import export_keras, keras_model  # noqa: E402
from resnetkit.weights.convert import convert_state_dict  # noqa: E402
from resnetkit.weights.keras_graph import convert_keras_graph  # noqa: E402

from .conftest import randomize_norms  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras on NumPy 2

CASES = {
    "cifar_resnet20": ("cifar_resnet20", {}, 32),  # option A: subsampled, zero-padded channels
    "resnet18_ish": ("resnet18", {"layers": (1, 2, 1, 1), "num_classes": 10}, 72),
    "preact_resnet18": ("preact_resnet18", {"layers": (1, 1, 1, 1)}, 72),  # stem max-pool padded with -inf
    "resnet50_v1_bias": ("resnet50", {"layers": (1, 1, 1, 1), "stride_in_1x1": True, "conv_bias": True}, 72),
    "preact_resnet50_keras_v2": ("preact_resnet50", {"layers": (1, 2, 2, 1), "stride_last_unit": True,
                                                     "stem_pool_zero_pad": True}, 80),  # fmt: skip
    "resnet50d": ("resnet50d", {"layers": (1, 1, 1, 1)}, 80),  # 2x2 average-pool projection on odd maps
    "seresnext50": ("seresnext50_32x4d", {"layers": (1, 1, 1, 1)}, 72),
}


def _model(name: str, overrides: dict) -> torch.nn.Module:
    return randomize_norms(create_model(name, **overrides)).eval()


@pytest.mark.parametrize("case", list(CASES))
def test_keras_model_gives_the_eager_outputs(case, tmp_path):
    name, overrides, size = CASES[case]
    model = _model(name, overrides)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    report = export_keras(model, tmp_path / f"{case}.keras", inputs=x)  # saved, loaded back, run on batches 3 and 1
    assert report.ok and report.max_abs_diff < 1e-4 and report.top1_agree == 4
    assert report.line().startswith("keras ")


def test_layers_carry_the_module_names_and_weights():
    model = _model("cifar_resnet20", {})
    k = keras_model(model)
    conv = k.get_layer("layer2_0_conv1")
    np.testing.assert_array_equal(conv.get_weights()[0], model.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    assert k.get_layer("fc").units == 10 and k.input_shape[1:] == (None, None, 3)  # any image size


def test_the_graph_reader_reads_an_export_back(tmp_path):
    model = _model("resnet18", {"layers": (1, 2, 1, 1), "stem_pool_zero_pad": True})
    path = tmp_path / "r18.keras"
    export_keras(model, path, inputs=torch.randn(2, 3, 64, 64))
    back, _ = convert_keras_graph(path)
    assert back.config == model.config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0)


def test_refusals_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="ends in .keras"):
        export_keras(_model("cifar_resnet20", {}), tmp_path / "x.h5")
    with pytest.raises(ValueError, match="video networks"):
        keras_model(create_model("r3d_18"))
    broken = _model("cifar_resnet20", {})
    with pytest.raises(ParityError):  # a reference that differs: the check catches it
        export_keras(broken, tmp_path / "b.keras", reference=_model("cifar_resnet20", {"num_classes": 10}).train())


def test_cli_exports_keras_with_parity(tmp_path, capsys):
    weights = tmp_path / "r20.safetensors"
    convert_state_dict(_model("cifar_resnet20", {}).state_dict(), weights, "cifar_resnet20")
    assert main(["export", str(weights), "--format", "keras"]) == 0
    assert (tmp_path / "r20.keras").is_file() and "keras " in capsys.readouterr().out
    assert main(["export", str(weights), "--format", "keras", "--fuse", "--out", str(tmp_path / "f.keras")]) == 0
    capsys.readouterr()
    assert main(["export", str(weights), "--format", "keras", "--int8"]) != 0
    assert "--int8 writes ONNX" in capsys.readouterr().err


def test_the_graph_reader_refuses_an_export_holding_keras_ops(tmp_path):
    path = tmp_path / "r20.keras"
    export_keras(_model("cifar_resnet20", {}), path)  # option A pads channels with keras.ops.pad
    with pytest.raises(ValueError, match="not a layer"):
        convert_keras_graph(path)
