"""Keras Applications ResNets converted by resnetkit.weights.keras reproduce Keras' own outputs.

Keras 3 runs on its torch backend (no TensorFlow). Each Keras model is built with random weights, its norms and
biases randomised so that none is trivial, saved, converted, and compared on the same images with each side's
own preprocessing: Keras gets ``preprocess_input`` ('caffe' BGR for v1, 'tf' for V2), resnetkit gets RGB in
[0, 1] normalised with the mean/std the converter returns. Images are 80x80 (stages at 40, 20, 10, 5, 3 pixels,
so odd sizes meet every strided layer) to keep the file under a minute of CPU.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from resnetkit import create_model
from resnetkit.weights.keras import ARCHS, convert_keras, keras_arch, keras_layers, read_keras_layers

os.environ["KERAS_BACKEND"] = "torch"  # before the first import of keras; TensorFlow is not needed
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras on NumPy 2

SIZE = 80
CAFFE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)


@dataclass
class KerasCase:
    files: dict[str, Path]  # format -> file
    images: np.ndarray  # (B, H, W, 3) RGB in [0, 255]
    logits: np.ndarray  # Keras' output on them


def randomize(model, seed: int = 0) -> None:
    """Random norm statistics and affine terms, random biases. The last norm of each v1 branch stays small, so
    that the dozens of residual sums of a deep v1 net keep trained-model scale (logits ~10, not ~100, where fp32
    rounding alone would exceed 1e-4)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.2, 0.4, n) if layer.name.endswith("_3_bn") else rng.uniform(0.75, 1.25, n)
            layer.set_weights([gamma, rng.uniform(-0.1, 0.1, n), rng.uniform(-0.1, 0.1, n), rng.uniform(0.75, 1.25, n)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape)])


def keras_case(name: str, folder: Path, formats: tuple[str, ...]) -> KerasCase:
    model = getattr(keras.applications, name)(weights=None, classifier_activation=None, input_shape=(SIZE, SIZE, 3))
    randomize(model)
    files = {"h5": folder / f"{name}.h5", "weights.h5": folder / f"{name}.weights.h5"}
    if "h5" in formats:
        model.save(files["h5"])  # the legacy HDF5 format: layers by name under model_weights/
    if "weights.h5" in formats:
        model.save_weights(files["weights.h5"])  # Keras 3: layers by class and position only
    images = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    preprocess = (keras.applications.resnet_v2 if name.endswith("V2") else keras.applications.resnet).preprocess_input
    logits = model.predict(preprocess(images.copy()), verbose=0)
    return KerasCase({fmt: files[fmt] for fmt in formats}, images, logits)


def resnetkit_logits(model: torch.nn.Module, info: dict, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2) / 255  # RGB in [0, 1], as a resnetkit pipeline feeds it
    x = (x - torch.tensor(info["mean"]).view(1, 3, 1, 1)) / torch.tensor(info["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module", params=["ResNet50", "ResNet50V2"])
def case50(request, tmp_path_factory) -> tuple[str, KerasCase]:
    return request.param, keras_case(request.param, tmp_path_factory.mktemp("keras"), ("h5", "weights.h5"))


@pytest.mark.parametrize("fmt", ["h5", "weights.h5"])
def test_resnet50_outputs_equal_keras(case50, fmt):
    name, case = case50
    model, info = convert_keras(case.files[fmt])  # architecture inferred from the file
    assert not model.training
    assert np.abs(resnetkit_logits(model, info, case.images) - case.logits).max() <= 1e-4
    v2 = name.endswith("V2")
    assert info["arch"] == ("preact_resnet50" if v2 else "resnet50") and info["source"] == f"keras:{name}"
    expected_mean, expected_std = ((0.5,) * 3, (0.5,) * 3) if v2 else (CAFFE_MEAN, (1 / 255,) * 3)
    np.testing.assert_allclose(info["mean"], expected_mean)
    np.testing.assert_allclose(info["std"], expected_std)
    assert (info["input_size"], info["resize_size"], info["crop_size"], info["interpolation"]) == (224, 256, 224, "bilinear")
    with torch.device("meta"):
        rebuilt = create_model(info["arch"], **info["overrides"])
    assert rebuilt.config == model.config == info["config"]
    rebuilt.load_state_dict(model.state_dict(), assign=True)  # strict: the same names and shapes


def test_resnetkit_convert_writes_weights_that_load_model_rebuilds(case50, tmp_path, capsys):
    """`resnetkit convert KERAS.h5 DST`: the file alone rebuilds the model with the Keras preprocessing."""
    from resnetkit import load_model
    from resnetkit.cli import main

    name, case = case50
    assert main(["convert", str(case.files["weights.h5"]), str(tmp_path / "k.safetensors")]) == 0
    model = load_model(tmp_path / "k.safetensors").eval()
    meta = model.record
    info = {"mean": meta.preprocess.mean, "std": meta.preprocess.std}
    assert np.abs(resnetkit_logits(model, info, case.images) - case.logits).max() <= 1e-4
    assert meta.source == f"keras:{name}" and len(meta.classes) == 1000 and len(meta.source_sha256) == 64


@pytest.mark.parametrize("name", ["ResNet101", "ResNet152V2"])  # v1 and V2 share the depth table: both depths checked
def test_deep_variants_equal_keras(name, tmp_path):
    case = keras_case(name, tmp_path, ("weights.h5",))  # layers named by position only: the fragile path
    model, info = convert_keras(case.files["weights.h5"], arch=name.lower())
    assert np.abs(resnetkit_logits(model, info, case.images) - case.logits).max() <= 1e-4


def test_missing_unexpected_and_misshaped_layers_in_one_line(case50, tmp_path):
    name, case = case50
    broken = tmp_path / "broken.h5"
    shutil.copy(case.files["h5"], broken)
    with h5py.File(broken, "r+") as f:
        root = f["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
        names = [n for n in names if n != "conv3_block2_2_bn"] + ["extra_dense"]
        root.attrs["layer_names"] = [n.encode() for n in names]
        del root["conv3_block2_2_bn"]
        del root["conv1_conv/conv1_conv/kernel"]
        root["conv1_conv/conv1_conv"].create_dataset("kernel", data=np.zeros((7, 7, 3, 32), "float32"))
        extra = root.create_group("extra_dense")
        extra.attrs["weight_names"] = [b"extra_dense/kernel"]
        extra.create_dataset("extra_dense/kernel", data=np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError) as info:
        convert_keras(broken)
    message = str(info.value)
    assert "\n" not in message
    assert "missing (1): conv3_block2_2_bn" in message and "unexpected (1): extra_dense" in message
    assert "misshaped (1): conv1_conv/kernel (7, 7, 3, 32) (expected (7, 7, 3, 64))" in message


def test_wrong_arch_is_refused(case50):
    name, case = case50
    with pytest.raises(ValueError, match=r"does not hold Keras ResNet101.* weights: missing \(") as info:
        convert_keras(case.files["h5"], arch=name.replace("50", "101"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keras_name", [a.keras_name for a in ARCHS.values()])
def test_arch_inferred_from_names_and_from_counts(keras_name, tmp_path):
    """Keras 2 weight files (names such as ``conv1_conv/kernel:0`` at the root and a classifier named ``probs``, as
    in the published files) and Keras 3 ``.weights.h5`` (layers known by class and position only), written here
    with one number per weight."""
    spec = keras_arch(keras_name)
    assert keras_arch(keras_name.lower()) is spec and keras_arch(keras_name.replace("V2", "_v2")) is spec
    layers = [layer for layer, _ in keras_layers(spec)]
    with h5py.File(tmp_path / "keras2.h5", "w") as f:
        keras2_layers = [layer.replace("predictions", "probs") for layer in layers]
        f.attrs["layer_names"] = [n.encode() for n in ["input_1", *keras2_layers]]
        f.create_group("input_1").attrs["weight_names"] = []
        for layer in keras2_layers:
            group = f.create_group(layer)
            group.attrs["weight_names"] = [f"{layer}/kernel:0".encode()]
            group.create_dataset(f"{layer}/kernel:0", data=np.zeros(1))
    with h5py.File(tmp_path / "keras3.weights.h5", "w") as f:
        counts: dict[str, int] = {}
        for layer in layers:
            cls = "dense" if layer == "predictions" else "conv2d" if layer.endswith("_conv") else "batch_normalization"
            key = f"{cls}_{counts[cls]}" if cls in counts else cls
            counts[cls] = counts.get(cls, 0) + 1
            f.create_dataset(f"layers/{key}/vars/0", data=np.zeros(1))
        f.create_group("layers/max_pooling2d/vars")  # layers without weights are skipped
    for path in (tmp_path / "keras2.h5", tmp_path / "keras3.weights.h5"):
        inferred, read = read_keras_layers(path)
        assert inferred is spec and set(read) == set(layers)


def test_unknown_arch_and_foreign_files(tmp_path):
    with pytest.raises(ValueError, match="unknown Keras ResNet 'resnet34'; choose one of resnet50"):
        keras_arch("resnet34")
    (tmp_path / "not.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        convert_keras(tmp_path / "not.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(ValueError, match="is not a Keras weights file"):
        convert_keras(tmp_path / "empty.h5")
