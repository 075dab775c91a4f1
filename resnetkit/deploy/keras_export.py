"""resnetkit ResNets as Keras 3 functional models, weights copied and outputs checked: our weights for TensorFlow and
JAX users, and a second route to LiteRT.

:func:`keras_model` walks the network (stem, units, head) and writes each module as the Keras layers that compute
the same thing, reading every convolution's kernel, stride, padding, dilation, groups and bias from the module
itself, so what the config built (v1 and v1.5 strides, pre-activation units, ResNetV2's strided last unit, shortcut
options A/B/C, plain nets, ResNeXt groups, dilation, SE, the deep stem, ResNet-D's pooled projection) is what
Keras builds. Layers are named after the modules (``layer1_0_conv1``). Padding is explicit (``ZeroPadding2D``
then ``"valid"``) wherever TensorFlow's ``"same"`` would differ (at stride 2 it pads one side only); a max-pool
that PyTorch pads with -inf (no ReLU before it, as in pre-activation stems) is padded with -inf too. Keras reads
NHWC: the model takes ``(B, H, W, C)`` images normalised as the record says, at any size.

Keras is imported on first use; it runs on the torch backend unless ``KERAS_BACKEND`` says otherwise.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..models import ResNet
from ..models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResidualUnit
from ..models.layers import SqueezeExcite, ZeroPadShortcut
from .export import DEFAULT_ATOL, ParityError, ParityReport, sample_images


class KerasFormat(enum.Enum):
    """The Keras route, reported like :class:`~resnetkit.deploy.export.Format` in parity lines."""

    KERAS = "keras"

    @property
    def suffix(self) -> str:
        return ".keras"


NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
BRANCH = {BasicBlock: ("conv1", "bn1", "relu", "conv2", "bn2"),
          Bottleneck: ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"),
          PreActBasicBlock: ("conv1", "bn2", "relu", "conv2"),
          PreActBottleneck: ("conv1", "bn2", "relu", "conv2", "bn3", "relu", "conv3")}  # fmt: skip


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # TensorFlow is not needed
    import keras

    return keras


def keras_model(model: ResNet) -> Any:
    """The Keras 3 functional model computing what ``model`` computes in eval mode, with its weights.

    Raises:
        ValueError: a network Keras' layers cannot express here (video networks, GroupNorm, a surgically edited
            unit): one line naming the module.
    """
    keras = _keras()
    if model.config.is_video:
        raise ValueError("video networks do not export to Keras (Conv3D units are not supported here)")
    builder = _Builder(keras)
    image = keras.Input((None, None, model.config.in_chans), name="image")
    x = builder.stem(model, image)
    for name in model.stage_names:
        for i, unit in enumerate(getattr(model, name)):
            x = builder.unit(unit, x, f"{name}.{i}")
    x = builder.module(model.norm, x, "norm")
    x = builder.module(model.norm_act, x, "norm_act")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = builder.module(model.fc, x, "fc")
    record = getattr(model, "record", None)
    return keras.Model(image, x, name=record.arch if record is not None else "resnet")


class _Builder:
    """Writes torch modules as Keras layers on a symbolic tensor, copying their weights."""

    def __init__(self, keras: Any):
        self.keras = keras
        self.layers = keras.layers

    def stem(self, model: ResNet, x: Any) -> Any:
        relu_before_pool = not model.config.preact
        if isinstance(model.conv1, nn.Sequential):  # the deep stem
            for i, m in enumerate(model.conv1):
                x = self.module(m, x, f"conv1.{i}")
        else:
            x = self.module(model.conv1, x, "conv1")
        x = self.module(model.bn1, x, "bn1")
        x = self.module(model.act1, x, "act1")
        pool = model.maxpool
        if isinstance(pool, nn.Sequential):  # ZeroPad2d then an unpadded max-pool (Keras Applications' stem)
            return self.module(pool[1], self.module(pool[0], x, "maxpool.0"), "maxpool.1")
        return self.module(pool, x, "maxpool", after_relu=relu_before_pool)

    def unit(self, unit: ResidualUnit, x: Any, name: str) -> Any:
        """``finish(branch(preactivate(x)) + shortcut(x))``, as :class:`ResidualUnit` computes it at eval."""
        kind = type(unit)
        if kind not in BRANCH:
            raise ValueError(f"{name} is a {kind.__name__}; Keras export knows the four resnetkit units only")
        preact = kind in (PreActBasicBlock, PreActBottleneck)
        pre = self.layers.ReLU(name=_name(f"{name}.preact"))(self.module(unit.bn1, x, f"{name}.bn1")) if preact else x
        out = pre
        for part in BRANCH[kind]:
            out = self.module(getattr(unit, part), out, f"{name}.{part}")
        out = self.module(unit.se, out, f"{name}.se")
        shortcut = self.shortcut(unit, x, pre, name)
        if shortcut is not None:
            out = self.layers.Add(name=_name(f"{name}.add"))([out, shortcut])
        return out if preact else self.layers.ReLU(name=_name(f"{name}.out"))(out)

    def shortcut(self, unit: ResidualUnit, x: Any, pre: Any, name: str) -> Any:
        if not unit.residual:
            return None
        d = unit.downsample
        if d is None:
            return x
        if isinstance(d, ZeroPadShortcut):  # option A / ResNetV2's subsampling: raw input, strided, zero channels
            y = self.layers.MaxPooling2D(1, strides=d.stride, name=_name(f"{name}.downsample"))(x) if d.stride > 1 else x
            return self.keras.ops.pad(y, [[0, 0], [0, 0], [0, 0], [0, d.extra_channels]]) if d.extra_channels else y
        for i, m in enumerate(d):
            pre = self.module(m, pre, f"{name}.downsample.{i}")
        return pre

    def module(self, m: nn.Module, x: Any, name: str, after_relu: bool = False) -> Any:
        """One torch module applied to ``x`` as Keras layers (weights copied)."""
        L = self.layers
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(m, nn.ReLU):
            return L.ReLU()(x)  # unnamed: a unit applies its one ReLU module several times
        if isinstance(m, nn.Conv2d):
            return self.conv(m, x, name)
        if isinstance(m, NORMS):
            return self.norm(m, x, name)
        if isinstance(m, nn.Linear):
            dense = L.Dense(m.out_features, name=_name(name))
            y = dense(x)
            dense.set_weights([_np(m.weight).T, _np(m.bias)])
            return y
        if isinstance(m, nn.MaxPool2d):
            return self.maxpool(m, x, name, after_relu)
        if isinstance(m, nn.ZeroPad2d):
            left, right, top, bottom = m.padding
            return L.ZeroPadding2D(((top, bottom), (left, right)), name=_name(name))(x)
        if isinstance(m, nn.AvgPool2d):  # ResNet-D: 2x2, ceil_mode, padding not counted == TF's 'same' pooling
            return L.AveragePooling2D(m.kernel_size, strides=m.stride, padding="same", name=_name(name))(x)
        if isinstance(m, SqueezeExcite):
            return self.squeeze_excite(m, x, name)
        raise ValueError(f"module {name} ({type(m).__name__}) has no Keras export")

    def conv(self, m: nn.Conv2d, x: Any, name: str) -> Any:
        (k, _), (s, _), (p, _), (d, _) = m.kernel_size, m.stride, m.padding, m.dilation
        same = s == 1 and p == d * (k - 1) // 2  # symmetric: TF's 'same' equals it at stride 1
        if p and not same:
            x = self.layers.ZeroPadding2D(p, name=_name(f"{name}.pad"))(x)
        conv = self.layers.Conv2D(m.out_channels, k, strides=s, padding="same" if same else "valid", dilation_rate=d,
                                  groups=m.groups, use_bias=m.bias is not None, name=_name(name))  # fmt: skip
        y = conv(x)
        kernel = _np(m.weight).transpose(2, 3, 1, 0)  # (out, in/g, kh, kw) -> (kh, kw, in/g, out)
        conv.set_weights([kernel] + ([_np(m.bias)] if m.bias is not None else []))
        return y

    def norm(self, m: nn.Module, x: Any, name: str) -> Any:
        bn = self.layers.BatchNormalization(epsilon=m.eps, name=_name(name))
        y = bn(x)
        bn.set_weights([_np(m.weight), _np(m.bias), _np(m.running_mean), _np(m.running_var)])
        return y

    def maxpool(self, m: nn.MaxPool2d, x: Any, name: str, after_relu: bool) -> Any:
        p = m.padding if isinstance(m.padding, int) else m.padding[0]
        if p and after_relu:  # inputs >= 0: zero padding never wins the max, as -inf padding does not
            x = self.layers.ZeroPadding2D(p, name=_name(f"{name}.pad"))(x)
        elif p:
            x = self.keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))
        return self.layers.MaxPooling2D(m.kernel_size, strides=m.stride, name=_name(name))(x)

    def squeeze_excite(self, m: SqueezeExcite, x: Any, name: str) -> Any:
        L = self.layers
        scale = L.GlobalAveragePooling2D(keepdims=True, name=_name(f"{name}.pool"))(x)
        scale = L.ReLU()(self.conv(m.fc1, scale, f"{name}.fc1"))
        scale = L.Activation("sigmoid")(self.conv(m.fc2, scale, f"{name}.fc2"))
        return L.Multiply(name=_name(f"{name}.scale"))([x, scale])


def _name(module: str) -> str:
    return module.replace(".", "_")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def export_keras(
    model: ResNet,
    path: str | Path,
    input_size: int | None = None,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Write ``model`` as a Keras 3 ``.keras`` file, load it back and check it against eager PyTorch.

    Args:
        model: the network (eval mode is set).
        path: the ``.keras`` file to write.
        input_size: image size of the check (default 32 for CIFAR stems, 224 otherwise).
        reference: the eager model to compare with (default ``model``).
        inputs: at least 2 NCHW inputs for the check (default: 4 from :func:`sample_images`).
        atol: largest accepted max absolute output difference.

    Raises:
        ParityError: Keras' outputs differ from ``reference``'s by more than ``atol``.
    """
    model.eval()
    if inputs is None:
        size = input_size or (32 if model.config.stem.value == "cifar" else 224)
        inputs = sample_images(4, size, model.config.in_chans)
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"a Keras model file ends in .keras, not {path.name!r}")
    keras_model(model).save(path)
    report = check_keras_parity(path, reference or model, inputs, atol)
    if not report.ok:
        raise ParityError(report)
    return report


def check_keras_parity(path: str | Path, reference: nn.Module, inputs: torch.Tensor, atol: float = DEFAULT_ATOL) -> ParityReport:
    """Run a ``.keras`` file on ``inputs`` and ``inputs[:1]`` (NHWC) and compare with eager ``reference`` (NCHW)."""
    loaded = _keras().models.load_model(path, compile=False)
    diffs, agree, batches = [], 0, (inputs, inputs[:1])
    with torch.no_grad():
        for batch in batches:
            expected = reference.eval()(batch)
            got = torch.from_numpy(np.asarray(loaded.predict(batch.permute(0, 2, 3, 1).numpy(), verbose=0)))
            diffs.append((got - expected).abs().max().item() if got.shape == expected.shape else float("inf"))
            agree += int((got.argmax(1) == expected.argmax(1)).sum()) if got.shape == expected.shape else 0
    worst = float(torch.tensor(diffs).max())
    return ParityReport(KerasFormat.KERAS, str(path), worst, agree, sum(map(len, batches)), tuple(map(len, batches)), atol)
