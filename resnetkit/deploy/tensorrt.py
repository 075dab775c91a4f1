"""Compile for NVIDIA GPUs with TensorRT through Torch-TensorRT, checked against eager PyTorch on the same GPU.

The route is ``torch_tensorrt.compile(ir="dynamo")``: the network is captured with ``torch.export`` (batch dynamic
from 1 to ``max_batch``), TensorRT builds its engines, and ``torch_tensorrt.save`` writes them as an
ExportedProgram (``.ep``) that ``torch.export.load`` reloads anywhere Torch-TensorRT is installed (importing it
registers the engine op). The file takes and returns float32 CUDA tensors.

Since TensorRT 10.12 / Torch-TensorRT 2.10 networks are strongly typed: the precision comes from the graph, not
from an ``enabled_precisions`` flag. So:

* ``FP32``: the graph as it is, TF32 disabled (``disable_tf32``), so fp32 means fp32; passes within ``atol``.
* ``FP16``: Torch-TensorRT's autocast (``enable_autocast``, ``autocast_low_precision_type=torch.float16``) lowers
  layers to fp16 and keeps in fp32 those whose outputs would overflow it; input and output stay fp32.
* ``INT8``: explicit quantization. NVIDIA Model Optimizer (``modelopt``, the quantizer Torch-TensorRT reads)
  inserts quantize/dequantize pairs, int8 per output channel for weights and per tensor for activations, with
  ranges calibrated (max) on real training images; TensorRT fuses them into int8 kernels.

fp16 and int8 cannot meet fp32's ``atol``: as for int8 ONNX (:mod:`resnetkit.deploy.quantize`) they pass when the
outputs are finite and the top-1 class agrees with eager on ``min_top1_agreement`` of the images. The reference
is the eager model on the same GPU, in fp32.

Needs a CUDA GPU and ``pip install 'resnetkit[tensorrt]'`` (``torch-tensorrt`` and ``nvidia-modelopt``). On a
machine without CUDA every entry point stops with a one-line :class:`~resnetkit.errors.UserError`, except
:func:`quantize_int8`, which runs (fake-quantized) on the CPU too.
"""

from __future__ import annotations

import copy
import enum
import warnings
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .export import DEFAULT_ATOL, ParityError, ParityReport, Runner, _prepare, check_parity
from .quantize import DEFAULT_MIN_AGREEMENT, Int8ParityReport, _check_calibration

INSTALL = "TensorRT export needs torch-tensorrt (and nvidia-modelopt for int8): pip install 'resnetkit[tensorrt]'"
NO_CUDA = "TensorRT runs on NVIDIA GPUs only, and torch sees no CUDA device on this machine"
MAX_BATCH = 32  # the largest batch a file's engines are built for (the smallest is 1)


class TensorRTFormat(enum.Enum):
    """The TensorRT route, reported like :class:`~resnetkit.deploy.export.Format` in parity lines."""

    TENSORRT = "tensorrt"

    @property
    def suffix(self) -> str:
        return ".ep"


class Precision(enum.Enum):
    """What the engines compute in; the value is how the CLI and reports name it."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def cuda_ready() -> bool:
    """Whether this machine can build TensorRT engines: a CUDA device and Torch-TensorRT installed."""
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("torch_tensorrt") is not None


def export_tensorrt(
    model: nn.Module,
    path: str | Path,
    precision: Precision = Precision.FP16,
    *,
    calibration: torch.Tensor | None = None,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_batch: int = MAX_BATCH,
) -> ParityReport:
    """Build TensorRT engines of ``model``, save them as an ``.ep`` file and check the reloaded file on the GPU.

    Args:
        model: the network; left unchanged (compiled from a copy on the GPU).
        path: the ``.ep`` file to write.
        precision: ``FP32`` (checked within ``atol``), ``FP16`` or ``INT8`` (checked on top-1 agreement).
        calibration: for ``INT8``, normalised training images ``(N, C, H, W)``, a few hundred in real use.
        reference: the eager model to compare with (default ``model``), run in fp32 on the same GPU.
        inputs: a batch of at least 2 images for the check (default: 4 image-like samples).
        atol: largest accepted max absolute difference for ``FP32``.
        min_top1_agreement: the fraction of images whose top-1 class must match eager's (``FP16``, ``INT8``).
        max_batch: the largest batch the engines accept (at least ``len(inputs)``).

    Raises:
        UserError: no CUDA device, or Torch-TensorRT (or, for int8, Model Optimizer) not installed.
        ParityError: the file's outputs differ from eager's beyond the tolerance; ``err.report`` says how.
    """
    if precision is Precision.INT8 and calibration is None:
        raise ValueError("int8 TensorRT needs calibration images (normalised training images, N x C x H x W)")
    torch_tensorrt = require_tensorrt()
    model, inputs = _prepare(model, None, inputs)
    max_batch = max(max_batch, len(inputs))  # the check runs its whole batch at once
    device = torch.device("cuda")
    gpu = copy.deepcopy(model).to(device).eval()
    if precision is Precision.INT8:
        gpu = quantize_int8(gpu, calibration.to(device))
    spec = torch_tensorrt.Input(min_shape=(1, *inputs.shape[1:]), opt_shape=(min(8, max_batch), *inputs.shape[1:]),
                                max_shape=(max_batch, *inputs.shape[1:]), dtype=torch.float32)  # fmt: skip
    options = {}
    if precision is Precision.FP16:
        options = {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
    with torch.no_grad():
        compiled = torch_tensorrt.compile(gpu, ir="dynamo", inputs=[spec], disable_tf32=True, min_block_size=1,
                                          **options)  # fmt: skip
        torch_tensorrt.save(compiled, str(path), output_format="exported_program", arg_inputs=[spec])  # dynamic batch
    eager = _OnDevice(copy.deepcopy(model if reference is None else reference).eval(), device)
    report = check_parity(TensorRTFormat.TENSORRT, path, eager, inputs, atol, run=tensorrt_runner(path))
    if precision is not Precision.FP32:
        values = {f.name: getattr(report, f.name) for f in fields(report)}
        report = Int8ParityReport(**values, min_top1_agreement=min_top1_agreement)
    if not report.ok:
        raise ParityError(report)
    return report


def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch: int = 32) -> nn.Module:
    """A copy of ``model`` with Model Optimizer's int8 quantize/dequantize pairs (``INT8_DEFAULT_CFG``: weights per
    output channel, activations per tensor), calibrated (max) on ``calibration`` in batches of ``batch``. It runs
    fake-quantized in PyTorch on any device; TensorRT turns the pairs into int8 kernels."""
    _check_calibration(calibration)
    quantized = copy.deepcopy(model).eval()

    def forward_loop(module: nn.Module) -> None:
        with torch.no_grad():
            for images in calibration.split(batch):
                module(images)

    with warnings.catch_warnings():  # raised inside Model Optimizer, about paths not taken here
        warnings.filterwarnings("ignore", "Cannot find transformers package")
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
        try:
            import modelopt.torch.quantization as mtq
        except ImportError as err:
            raise UserError(INSTALL) from err
        return mtq.quantize(quantized, mtq.INT8_DEFAULT_CFG, forward_loop)


def tensorrt_runner(path: str | Path) -> Runner:
    """An ``.ep`` file written here, reloaded, as a function from a CPU batch to CPU float32 outputs (the copies to
    and from the GPU included, as a caller holding CPU images sees it)."""
    require_tensorrt()  # registers the TensorRT engine op torch.export.load needs
    program = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return program(x.to("cuda", torch.float32)).float().cpu()

    return run


class _OnDevice(nn.Module):
    """The eager reference on the GPU, taking and returning CPU tensors like :func:`tensorrt_runner`."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model.to(device), device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).float().cpu()


def require_tensorrt():
    if not torch.cuda.is_available():
        raise UserError(NO_CUDA)
    try:
        import torch_tensorrt
    except ImportError as err:
        raise UserError(INSTALL) from err
    return torch_tensorrt
