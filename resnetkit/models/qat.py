"""Quantization-aware training: the int8 rounding of ONNX Runtime's static quantization simulated while training.

These are layers (fake-quantizing forwards on module instances, as ``torch.ao.nn.qat`` is a set of layers), so they
live with the models: the training engine switches them on (``qat: true``) without importing :mod:`resnetkit.deploy`,
which exports the trained model.

:func:`prepare_qat` acts on module instances (no block class is copied or subclassed): every plain ``Conv2d``
and ``Linear`` gets two non-persistent submodules and an instance ``forward`` that uses them,

* ``weight_fake_quant``: symmetric int8 per output channel (levels -127..127, zero point 0, scale
  ``max |w| / 127``), the weight format :func:`~resnetkit.deploy.quantize.quantize_onnx` writes.
* ``input_fake_quant``: asymmetric uint8 per tensor (levels 0..255 with a zero point), over a range that
  training observes as a moving average of each batch's min and max (as ``torch.ao``'s
  ``MovingAverageMinMaxObserver``); in eval mode the range is frozen.

Both round in the forward pass and pass gradients straight through (``torch.fake_quantize_per_*_affine``: the
gradient is 1 inside the range, 0 where a value is clipped), so the weights learn to sit well on the int8 grid.

What is simulated, and what is not:

* BatchNorm stays a float op in training mode (batch statistics), after the fake-quantized convolution weight.
  Deployment folds it into the weight (``W' = s * W``, per output channel) before quantizing; per-channel
  symmetric quantization is unchanged by a per-channel scale (``round(s * w / (s * m)) = round(w / m)``), so
  quantizing ``W`` simulates quantizing ``W'`` exactly. Only the fold of the bias, which int8 keeps in int32, is
  not simulated, and it is far finer than the weights' steps.
* Every quantized op reads its input through uint8 here; ONNX Runtime also quantizes the outputs of residual
  additions and of the convolutions, which are the next layer's input in all but the residual sum itself. The
  rounding of the sum's operands is the part not simulated.
* Deployment recalibrates the activation ranges (percentile by default) from real images: the ranges observed
  here only shape training, and are not saved (the buffers are non-persistent).

The model's ``state_dict`` keys and shapes are unchanged, so a QAT checkpoint is an ordinary checkpoint, loads
in an unprepared model and exports through ``resnetkit export --int8``. Call :func:`prepare_qat` right after
building the model, before the EMA copy (``AveragedModel`` averages buffers too), DDP and ``torch.compile``; it
adds no parameters, so the optimizer may come before or after. :func:`strip_qat` undoes it.

Reference: Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference"; Krishnamoorthi 2018, "Quantizing deep convolutional networks for efficient inference: a whitepaper".
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_LEVELS = (-127, 127)  # ORT's symmetric int8 weights leave -128 out, so the range is symmetric about 0
ACTIVATION_LEVELS = (0, 255)
_FORWARDS = (nn.Conv2d.forward, nn.Linear.forward)


class WeightFakeQuant(nn.Module):
    """Symmetric int8 fake quantization with one scale per output channel (dim 0); no state."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = weight.detach().abs().flatten(1).amax(1).float().clamp(min=1e-12) / WEIGHT_LEVELS[1]
        zero_point = torch.zeros(len(scale), dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, *WEIGHT_LEVELS)


class ActivationFakeQuant(nn.Module):
    """Asymmetric uint8 fake quantization of a whole tensor over a moving-average min/max range.

    Args:
        momentum: weight of each training batch's min and max in the running range (the first batch sets it).
    """

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("min_val", torch.zeros(()), persistent=False)  # (0, 0): nothing observed yet
        self.register_buffer("max_val", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x)
        low, high = self.min_val.clamp(max=0), self.max_val.clamp(min=0)  # the range holds 0 exactly, as in ORT
        scale = ((high - low) / ACTIVATION_LEVELS[1]).clamp(min=1e-12)
        zero_point = (-low / scale).round().clamp(*ACTIVATION_LEVELS).to(torch.int32)
        quantized = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, *ACTIVATION_LEVELS)
        return torch.where(high > low, quantized.to(x.dtype), x)  # no range yet (eval before training): float

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().float().aminmax()
        first = self.max_val == self.min_val  # no device sync: the first batch is chosen with torch.where
        self.min_val.copy_(torch.where(first, low, torch.lerp(self.min_val, low, self.momentum)))
        self.max_val.copy_(torch.where(first, high, torch.lerp(self.max_val, high, self.momentum)))

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


def prepare_qat(model: nn.Module, momentum: float = 0.01) -> nn.Module:
    """Make ``model`` simulate int8 inference in its forward pass, in place (see the module docstring).

    Args:
        model: any network; every ``nn.Conv2d`` and ``nn.Linear`` in it is prepared (again: a no-op).
        momentum: of the moving-average activation ranges.

    Returns:
        ``model``, whose ``state_dict`` keys and shapes are as before.

    Raises:
        ValueError: a Conv2d or Linear subclass with its own ``forward`` (its maths cannot be kept), or no layer
            to quantize.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to quantize")
    for name, layer in layers:
        if type(layer).forward not in _FORWARDS:
            raise ValueError(f"{name}: {type(layer).__name__} overrides forward; QAT wraps plain Conv2d and Linear")
    device = next(model.parameters()).device
    for _, layer in layers:
        if not isinstance(getattr(layer, "weight_fake_quant", None), WeightFakeQuant):
            layer.weight_fake_quant = WeightFakeQuant()
            layer.input_fake_quant = ActivationFakeQuant(momentum).to(device).train(layer.training)
            layer.forward = types.MethodType(_fake_quant_forward, layer)  # deepcopy rebinds it to the copy
    return model


def strip_qat(model: nn.Module) -> nn.Module:
    """Remove what :func:`prepare_qat` added, in place; the weights stay as trained. Returns ``model``."""
    for layer in model.modules():
        if isinstance(getattr(layer, "weight_fake_quant", None), WeightFakeQuant):
            del layer.weight_fake_quant, layer.input_fake_quant
            layer.__dict__.pop("forward", None)  # the class's forward shows through again
    return model


def is_qat(model: nn.Module) -> bool:
    """Whether :func:`prepare_qat` was applied to ``model`` (or to any of its layers)."""
    return any(isinstance(m, WeightFakeQuant) for m in model.modules())


def _fake_quant_forward(self: nn.Conv2d | nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``Conv2d.forward`` / ``Linear.forward`` with the input and the weight fake-quantized."""
    x = self.input_fake_quant(x)
    weight = self.weight_fake_quant(self.weight)
    if isinstance(self, nn.Conv2d):
        return self._conv_forward(x, weight, self.bias)
    return F.linear(x, weight, self.bias)
