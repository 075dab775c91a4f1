"""Export to LiteRT (TensorFlow Lite) through Google's PyTorch converter, checked in the LiteRT interpreter.

The route is ``litert-torch`` (formerly ``ai-edge-torch``): it captures the model with ``torch.export`` and lowers
it to a ``.tflite`` flatbuffer, keeping the NCHW float32 input of the PyTorch model (it transposes to NHWC inside
the graph) and one image per call, as phones run it. The file is loaded back in ``ai-edge-litert``'s interpreter
(the XNNPACK CPU delegate applied by default) and compared with eager PyTorch like every export
(:func:`~resnetkit.deploy.export.check_parity`): fp32 passes within ``atol`` (1e-4) of eager.

Int8 goes through PyTorch's PT2E quantization with the converter's own quantizer (symmetric int8, one weight
scale per output channel), before the lowering:

* ``STATIC`` (default): full-integer. Activation ranges are observed on calibration images, real images of the
  training distribution (:func:`resnetkit.workflows.calibration_images`), so convolutions, adds and pooling run
  on int8 tensors, and the file's input (the normalised image) and output (the logits) are int8 too, with their
  scale and zero point in the file, as integer-only accelerators (NPUs, Edge TPU) need;
  :func:`tflite_runner` quantizes and dequantizes with them.
* ``DYNAMIC``: dynamic range. Weights int8, activations quantized on the fly per call; no calibration data.

Int8 cannot meet fp32's ``atol``; as for ONNX int8 (:mod:`resnetkit.deploy.quantize`) it passes when the outputs are
finite and the top-1 class agrees with eager on ``min_top1_agreement`` of held-out images.

Needs ``pip install resnetkit[litert]`` (``litert-torch`` and ``ai-edge-litert``). ``litert-torch`` pins older
``pydantic``/``typing-extensions`` than ``coremltools`` accepts, so the two are best kept in separate environments.
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .export import DEFAULT_ATOL, ParityError, ParityReport, Runner, _prepare, check_parity
from .quantize import DEFAULT_MIN_AGREEMENT, Int8ParityReport, _check_calibration

INSTALL = "LiteRT export needs litert-torch and ai-edge-litert: pip install 'resnetkit[litert]'"


class LiteRTFormat(enum.Enum):
    """The LiteRT route, reported like :class:`~resnetkit.deploy.export.Format` in parity lines (not one of its
    members: the ONNX/TorchScript/torch.export tests run over every ``Format`` without the optional packages)."""

    TFLITE = "tflite"

    @property
    def suffix(self) -> str:
        return ".tflite"


class Int8Mode(enum.Enum):
    """How ``--int8`` quantizes for LiteRT; the value is the CLI's ``--tflite-int8`` name."""

    STATIC = "static"  # full-integer: calibrated activation ranges
    DYNAMIC = "dynamic"  # dynamic range: int8 weights, activations quantized per call


def export_tflite(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    atol: float = DEFAULT_ATOL,
) -> ParityReport:
    """Write ``model`` as an fp32 ``.tflite`` (one ``(1, C, H, W)`` float32 image in, logits out) and check it in
    the LiteRT interpreter; arguments as :func:`~resnetkit.deploy.export.export_onnx`.

    Raises:
        ParityError: the file's outputs differ from ``reference``'s by more than ``atol``.
    """
    model, inputs = _prepare(model, input_size, inputs)
    _convert(model, inputs[:1], path)
    reference = model if reference is None else reference
    report = check_parity(LiteRTFormat.TFLITE, path, reference, inputs, atol, run=tflite_runner(path))
    if not report.ok:
        raise ParityError(report)
    return report


def export_tflite_int8(
    model: nn.Module,
    path: str | Path,
    calibration: torch.Tensor,
    *,
    mode: Int8Mode = Int8Mode.STATIC,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT,
) -> Int8ParityReport:
    """Write ``model`` as an int8 ``.tflite`` (PT2E, per-channel symmetric weights) and check it in LiteRT.

    Args:
        model: the network; put in eval mode (BatchNorm is folded by the quantizer; fusing first is not needed).
        path: the ``.tflite`` file to write.
        calibration: normalised images ``(N, C, H, W)`` of the training distribution, a few hundred in real use;
            they fix the input size (``DYNAMIC`` only uses the first one, to trace).
        mode: full-integer ``STATIC`` (calibrated) or ``DYNAMIC`` range.
        reference: the eager model to compare with (default ``model``).
        inputs: at least 2 images for the check, best held out from calibration (default: up to 64 of it).
        min_top1_agreement: the fraction of images whose top-1 class must match eager's.

    Raises:
        ParityError: the outputs are not finite or agree with eager on too few images; ``err.report`` says how.
    """
    _check_calibration(calibration)
    if not 0 <= min_top1_agreement <= 1:
        raise ValueError(f"min_top1_agreement must be in [0, 1], got {min_top1_agreement}")
    reference = (model if reference is None else reference).eval()
    inputs = calibration[:64] if inputs is None else inputs
    quantized, config = _pt2e_quantize(model.eval(), calibration, mode)
    _convert(quantized, calibration[:1], path, quant_config=config)
    report = check_parity(LiteRTFormat.TFLITE, path, reference, inputs, float("inf"), run=tflite_runner(path))
    values = {f.name: getattr(report, f.name) for f in fields(report)}
    report = Int8ParityReport(**values, min_top1_agreement=min_top1_agreement)
    if not report.ok:
        raise ParityError(report)
    return report


def tflite_runner(path: str | Path, threads: int | None = None, xnnpack: bool = True) -> Runner:
    """A ``.tflite`` file in the LiteRT interpreter, as a function from a batch ``(B, C, H, W)`` to its outputs.

    The file takes one image per call (as exported here), so a batch runs image by image.

    Args:
        path: the file.
        threads: CPU threads of the interpreter and its XNNPACK delegate (default: LiteRT's choice).
        xnnpack: apply the XNNPACK delegate (LiteRT's default CPU path); ``False`` runs the reference kernels.
    """
    interpreter = _interpreter(path, threads, xnnpack)
    interpreter.allocate_tensors()
    (image,), (logits,) = interpreter.get_input_details(), interpreter.get_output_details()
    if image["shape"][0] != 1:
        raise ValueError(f"{path}: expected a LiteRT model taking one image, its input is {list(image['shape'])}")

    def run(x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for one in x.detach().float().cpu():
            interpreter.set_tensor(image["index"], _to_input(one[None], image))
            interpreter.invoke()
            outputs.append(_from_output(interpreter.get_tensor(logits["index"]), logits))
        return torch.cat(outputs)

    return run


def _to_input(x: torch.Tensor, detail: dict) -> np.ndarray:
    """A float image as the file's input: quantized with the input's scale and zero point in a full-integer file."""
    if detail["dtype"] == np.float32:
        return x.numpy()
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x.numpy() / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_output(y: np.ndarray, detail: dict) -> torch.Tensor:
    if y.dtype == np.float32:
        return torch.from_numpy(y.copy())
    scale, zero = detail["quantization"]
    return torch.from_numpy((y.astype(np.float32) - zero) * scale)


def tflite_ops(path: str | Path) -> list[str]:
    """The builtin operator names a ``.tflite`` file uses (``CONV_2D``, ``ADD``, ``QUANTIZE``, ...), sorted."""
    interpreter = _interpreter(path, 1, xnnpack=False)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def time_tflite(path: str | Path, threads: int | None = None, warmup: int = 10, iters: int = 50) -> list[float]:
    """Seconds per call of a ``.tflite`` file on one image (XNNPACK, ``threads``), after ``warmup`` calls."""
    interpreter = _interpreter(path, threads, xnnpack=True)
    interpreter.allocate_tensors()
    image = interpreter.get_input_details()[0]
    interpreter.set_tensor(image["index"], torch.rand(*image["shape"]).numpy())
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return times


def _convert(model: nn.Module, example: torch.Tensor, path: str | Path, quant_config=None) -> None:
    try:
        import litert_torch
    except ImportError as err:
        raise UserError(INSTALL) from err
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its per-pass progress lines
    with torch.no_grad():
        edge = litert_torch.convert(model, (example,), quant_config=quant_config)
    edge.export(str(path))


def _pt2e_quantize(model: nn.Module, calibration: torch.Tensor, mode: Int8Mode):
    """The model captured by ``torch.export``, observed on the calibration images and converted to Q/DQ ops, and
    the converter's config that lowers those to int8 kernels."""
    try:
        from litert_torch.quantize import pt2e_quantizer as pt2e
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e
    except ImportError as err:
        raise UserError(INSTALL) from err
    dynamic = mode is Int8Mode.DYNAMIC
    quantizer = pt2e.PT2EQuantizer().set_global(
        pt2e.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    example = calibration[:1]
    captured = torch.export.export(model, (example,)).module()
    prepared = quantize_pt2e.prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for image in (calibration[:1] if dynamic else calibration).split(1):
            prepared(image)  # batch 1, the shape it was captured at
    converted = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(prepared, fold_quantize=False))
    return converted, QuantConfig(pt2e_quantizer=quantizer)


def _interpreter(path: str | Path, threads: int | None, xnnpack: bool):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
        raise UserError(INSTALL) from err
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
