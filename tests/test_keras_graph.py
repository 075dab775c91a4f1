"""Keras ResNets read by their graph (resnetkit.weights.keras_graph): a hand-written functional ResNet-50 (the
textbook ``identity_block``/``conv_block`` listing, its own layer names, softmax head) and Keras Applications'
ResNet50V2 convert with equal outputs; what resnetkit cannot express is refused by name. Keras 3 runs on its torch
backend; every model has random weights, biases and norm statistics, and reads 64x64 images."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from resnetkit import create_model, load_model
from resnetkit.cli import main

os.environ["KERAS_BACKEND"] = "torch"  # before the first import of keras; TensorFlow is not needed
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from resnetkit.weights.keras import convert_keras  # noqa: E402
from resnetkit.weights.keras_graph import convert_keras_graph  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras on NumPy 2

SIZE = 64


def identity_block(x, kernel_size, filters, stage, block):
    f1, f2, f3 = filters
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    y = layers.Conv2D(f1, 1, name=conv + "2a")(x)
    y = layers.BatchNormalization(name=bn + "2a")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, kernel_size, padding="same", name=conv + "2b")(y)
    y = layers.BatchNormalization(name=bn + "2b")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, name=conv + "2c")(y)
    y = layers.BatchNormalization(name=bn + "2c")(y)
    y = layers.add([y, x])
    return layers.Activation("relu")(y)


def conv_block(x, kernel_size, filters, stage, block, strides=2):
    f1, f2, f3 = filters
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    y = layers.Conv2D(f1, 1, strides=strides, name=conv + "2a")(x)
    y = layers.BatchNormalization(name=bn + "2a")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f2, kernel_size, padding="same", name=conv + "2b")(y)
    y = layers.BatchNormalization(name=bn + "2b")(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(f3, 1, name=conv + "2c")(y)
    y = layers.BatchNormalization(name=bn + "2c")(y)
    shortcut = layers.Conv2D(f3, 1, strides=strides, name=conv + "1")(x)
    shortcut = layers.BatchNormalization(name=bn + "1")(shortcut)
    y = layers.add([y, shortcut])
    return layers.Activation("relu")(y)


def textbook_resnet50(classes: int = 10, depths=(3, 4, 6, 3), pool_pad: bool = True) -> keras.Model:
    """ResNet-50 as the Keras listings wrote it by hand (res2a_branch2a, bn_conv1, fc1000, softmax)."""
    image = keras.Input((SIZE, SIZE, 3))
    x = layers.ZeroPadding2D(3, name="conv1_pad")(image)
    x = layers.Conv2D(64, 7, strides=2, name="conv1")(x)
    x = layers.BatchNormalization(name="bn_conv1")(x)
    x = layers.Activation("relu")(x)
    if pool_pad:
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    for stage, (depth, f) in enumerate(zip(depths, (64, 128, 256, 512)), start=2):
        x = conv_block(x, 3, (f, f, 4 * f), stage, "a", strides=1 if stage == 2 else 2)
        for b in "bcdefghijklmnopqrstuvw"[: depth - 1]:
            x = identity_block(x, 3, (f, f, 4 * f), stage, b)
    x = layers.AveragePooling2D(x.shape[1], name="avg_pool")(x)  # global at this input size
    x = layers.Flatten()(x)
    x = layers.Dense(classes, activation="softmax", name="fc1000")(x)
    return keras.Model(image, x, name="resnet50_textbook")


def randomize(model, seed: int = 0) -> None:
    """Random norm statistics and affine terms (each branch's last norm small, as trained nets), random biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            last = layer.name.endswith(("2c", "_3_bn"))
            gamma = rng.uniform(0.2, 0.4, n) if last else rng.uniform(0.75, 1.25, n)
            layer.set_weights([gamma, rng.uniform(-0.1, 0.1, n), rng.uniform(-0.1, 0.1, n), rng.uniform(0.75, 1.25, n)])
        elif isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape)])


def outputs(model, net, softmax: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keras' and resnetkit's outputs on the same images (NHWC for Keras, NCHW for resnetkit); log-probabilities
    where Keras ends in a softmax (resnetkit returns logits)."""
    images = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    theirs = np.asarray(model.predict(images, verbose=0))
    with torch.no_grad():
        ours = net(torch.from_numpy(images).permute(0, 3, 1, 2))
    return (np.log(theirs), ours.log_softmax(1).numpy()) if softmax else (theirs, ours.numpy())


def test_textbook_resnet50_converts_by_its_graph_with_equal_outputs(tmp_path):
    model = textbook_resnet50()
    randomize(model)
    model.save(tmp_path / "textbook.h5")  # a whole model with the listing's own layer names
    net, info = convert_keras(tmp_path / "textbook.h5")  # the name reader does not know them: routed to the graph
    assert info["source"] == "keras-graph:resnet50_textbook" and info["arch"] == "resnet50"
    assert info["overrides"] == {"stem_pool_zero_pad": True, "stride_in_1x1": True, "conv_bias": True,
                                 "num_classes": 10, "norm_eps": 1e-3}  # fmt: skip
    theirs, ours = outputs(model, net, softmax=True)
    assert np.abs(theirs - ours).max() <= 1e-5
    assert convert_keras_graph(tmp_path / "textbook.h5")[0].config == net.config
    rebuilt = create_model(info["arch"], **info["overrides"])
    rebuilt.load_state_dict(net.state_dict())  # strict: the record rebuilds the network
    assert main(["convert", str(tmp_path / "textbook.h5"), str(tmp_path / "textbook.safetensors")]) == 0
    loaded = load_model(tmp_path / "textbook.safetensors")  # the file alone rebuilds it
    assert loaded.record.source == "keras-graph:resnet50_textbook" and loaded.config == net.config


@pytest.mark.parametrize("name", ["ResNet50", "ResNet50V2"])
def test_keras_applications_resnets_convert_by_their_graph_too(name, tmp_path):
    model = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None,
                                              classes=7)  # fmt: skip
    randomize(model)
    model.save(tmp_path / "model.keras")  # the Keras 3 archive: only the graph reader takes it
    net, info = convert_keras(tmp_path / "model.keras")
    c, v2 = net.config, name.endswith("V2")
    assert info["arch"] == ("preact_resnet50" if v2 else "resnet50") and c.num_classes == 7
    assert (c.stride_last_unit, c.stride_in_1x1, c.conv_bias, c.norm_eps) == (v2, not v2, True, 1.001e-5)
    theirs, ours = outputs(model, net, softmax=False)
    assert np.abs(theirs - ours).max() <= 1e-4
    if not v2:  # the CLI and load_model take the .keras archive as they take .h5
        assert main(["convert", str(tmp_path / "model.keras"), str(tmp_path / "model.safetensors")]) == 0
        assert load_model(tmp_path / "model.keras").config == net.config


def basic_resnet(stride_3x3_padding: str = "pad") -> keras.Model:
    """A small post-activation basic-unit ResNet with a CIFAR stem and a global-average head."""
    image = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(image)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for i, (f, s) in enumerate(((8, 1), (16, 2))):
        if s > 1 and stride_3x3_padding == "pad":
            y = layers.Conv2D(f, 3, strides=s, use_bias=False)(layers.ZeroPadding2D(1)(x))
        else:
            y = layers.Conv2D(f, 3, strides=s, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(f, 3, padding="same", use_bias=False)(y))
        shortcut = x if s == 1 else layers.BatchNormalization()(layers.Conv2D(f, 1, strides=s, use_bias=False)(x))
        x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(3)(x), name="small")


def test_basic_units_and_the_cifar_stem_convert():
    model = basic_resnet()
    randomize(model)
    net, info = convert_keras_graph(model)
    c = net.config
    assert (c.block.value, c.layers, c.widths, c.stem.value, c.conv_bias) == ("basic", (1, 1), (8, 16), "cifar", False)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    with torch.no_grad():
        ours = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    assert np.abs(np.asarray(model.predict(images, verbose=0)) - ours).max() <= 1e-5


def test_what_resnetkit_cannot_express_is_refused_by_layer_name():
    with pytest.raises(ValueError, match="padding='same' at stride 2"):
        convert_keras_graph(basic_resnet("same"))
    with pytest.raises(ValueError, match="stem max-pool .* is not padded by 1"):
        convert_keras_graph(textbook_resnet50(depths=(1, 1, 1, 1), pool_pad=False))
    image = keras.Input((8, 8, 3))
    with pytest.raises(ValueError, match="no Add layer"):
        convert_keras_graph(keras.Model(image, layers.Conv2D(4, 3)(image)))
