"""Int8 post-training static quantization through ONNX Runtime, checked against eager PyTorch.

The route: export fp32 ONNX (:func:`~resnetkit.deploy.export.export_onnx`, itself parity-checked), run ONNX
Runtime's pre-processing (shape inference, then its basic graph optimisations, which fold BatchNorm into the
convolutions whether or not ``--fuse`` did it already), then ``onnxruntime.quantization.quantize_static``:

* QDQ format: QuantizeLinear/DequantizeLinear pairs around float ops. It is ORT's recommended format since 1.11;
  the CPU execution provider fuses ``DQ -> Conv -> Q`` into QLinearConv (and Add, pooling, Gemm likewise) when
  the session loads, and drops ReLUs into the uint8 output range.
* uint8 activations, int8 weights (U8S8): the pairing ORT's x86 kernels are built for (``vpdpbusd`` on VNNI
  CPUs multiplies unsigned by signed bytes). On x86 CPUs without VNNI (pre-Cascade Lake Xeons, pre-Zen 4) the
  AVX2 path adds pairs of byte products in int16 and can saturate; there ORT advises ``reduce_range`` (7-bit
  weights), and it is what the default (``reduce_range=None``) picks by reading the CPU flags of the machine
  that quantizes (:func:`needs_reduce_range`). On such a CPU the test suite's small digits ResNet fails its
  top-1 agreement check with eager at 8-bit weights and passes at 7-bit.
* per-channel symmetric weight scales: one scale per output channel. Per-tensor scales are ruined by the few
  channels with large weights that BatchNorm folding produces.
* static activation ranges from calibration on real images of the training distribution, a few hundred of
  them. The range observer is :class:`Calibration`: ``PERCENTILE`` (default: the 99.999th percentile of each
  tensor's absolute values, ignoring the rare outliers that would stretch its 256 levels), ``ENTROPY`` (the
  TensorRT KL-divergence threshold) or ``MINMAX`` (the full observed range: one outlier costs resolution for
  every value, and the error compounds over a deep ResNet's layers).

The result is checked like every export: run in ONNX Runtime on a batch and on one image and compared with the
eager model. Int8 cannot meet fp32's ``atol``, so it passes when the outputs are finite and the top-1 class
agrees with eager on at least ``min_top1_agreement`` of the images (:class:`Int8ParityReport`).

Quantization-aware training, for when this loses too much accuracy, is in :mod:`resnetkit.deploy.qat`.

Reference: Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference"; Wu et al. 2020, "Integer Quantization for Deep Learning Inference: Principles and Empirical
Evaluation" (percentile and entropy calibration, per-channel weights).
"""

from __future__ import annotations

import contextlib
import copy
import enum
import io
import math
import platform
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from .export import DEFAULT_ATOL, DEFAULT_OPSET, Format, ParityError, ParityReport, check_parity, export_onnx
from ..models.qat import is_qat, strip_qat

DEFAULT_MIN_AGREEMENT = 0.95  # int8 flips near-ties only; trained CIFAR/ImageNet ResNets agree on 98-99%+
DEFAULT_PERCENTILE = 99.999  # ORT's default for CalibrationMethod.Percentile
CALIBRATION_BATCH = 16  # ORT keeps every intermediate tensor of a batch in memory while it builds histograms


class Calibration(enum.Enum):
    """How calibration turns observed activations into int8 ranges; the value is the CLI's ``--calibration``."""

    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MINMAX = "minmax"

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy,
                "minmax": CalibrationMethod.MinMax}[self.value]  # fmt: skip


DEFAULT_CALIBRATION = Calibration.PERCENTILE


def needs_reduce_range() -> bool:
    """True on an x86 CPU without VNNI (``avx512_vnni`` / ``avx_vnni`` flags), whose ONNX Runtime u8s8 kernels can
    saturate int16 sums; False elsewhere, and where the flags cannot be read (``/proc/cpuinfo`` is Linux's)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return not flags & {"avx512_vnni", "avx_vnni"}


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: torch.Tensor,
    *,
    method: Calibration = DEFAULT_CALIBRATION,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    batch_size: int = CALIBRATION_BATCH,
) -> Path:
    """Write a static int8 (QDQ, uint8 activations, int8 weights) copy of an fp32 ONNX file.

    Args:
        fp32_path: the fp32 model, one image input with a dynamic batch axis (as :func:`export_onnx` writes).
        int8_path: the file to write.
        calibration: normalised images ``(N, C, H, W)`` from the training distribution; a few hundred in real use.
        method: how activation ranges are chosen from what calibration observes (see :class:`Calibration`).
        per_channel: one weight scale per output channel (per-tensor scales lose accuracy on folded BatchNorm).
        reduce_range: 7-bit weights, for x86 CPUs without VNNI; ``None`` decides by :func:`needs_reduce_range`.
        percentile: the percentile of absolute values kept, for ``Calibration.PERCENTILE``.
        batch_size: images per calibration run.

    Returns:
        ``int8_path`` as a ``Path``.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    method = Calibration(method)
    _check_calibration(calibration)
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    with tempfile.TemporaryDirectory(prefix="resnetkit-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        reader = _CalibrationReader(_input_name(prepared), calibration, batch_size)
        options = {"CalibStridedMinMax": 1, "CalibPercentile": percentile}  # one batch per pass, for any method
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print their settings
            quantize_static(str(prepared), str(int8_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            reduce_range=needs_reduce_range() if reduce_range is None else reduce_range,
                            weight_type=QuantType.QInt8, calibrate_method=method.ort_method(),
                            extra_options=options)  # fmt: skip
    return Path(int8_path)


@dataclass(frozen=True)
class Int8ParityReport(ParityReport):
    """A :class:`ParityReport` for an int8 file: it passes on top-1 agreement (and finite outputs), not ``atol``."""

    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT
    fp32_bytes: int = 0  # size of the fp32 file it was quantized from, 0 if unknown

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.top1_agreement >= self.min_top1_agreement

    @property
    def int8_bytes(self) -> int:
        return Path(self.path).stat().st_size

    def line(self) -> str:
        verdict = "OK" if self.ok else f"FAILED (top-1 agreement below {self.min_top1_agreement:.0%})"
        sizes = " and ".join(map(str, self.batch_sizes))
        smaller = f", {self.fp32_bytes / self.int8_bytes:.1f}x smaller than fp32" if self.fp32_bytes else ""
        return (f"{self.format.value} int8 {self.path} ({self.int8_bytes / 1e6:.2f} MB{smaller}): max |diff| "
                f"{self.max_abs_diff:.2e} vs eager, top-1 agreement {self.top1_agree}/{self.samples} "
                f"({self.top1_agreement:.1%}), batch sizes {sizes}: {verdict}")  # fmt: skip


def check_int8_parity(
    path: str | Path,
    reference: nn.Module,
    inputs: torch.Tensor,
    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT,
    fp32_bytes: int = 0,
) -> Int8ParityReport:
    """Run an int8 ONNX file on ``inputs`` and ``inputs[:1]`` and compare it with eager ``reference``; no raise."""
    report = check_parity(Format.ONNX, path, reference, inputs, atol=math.inf)
    values = {f.name: getattr(report, f.name) for f in fields(report)}
    return Int8ParityReport(**values, min_top1_agreement=min_top1_agreement, fp32_bytes=fp32_bytes)


def export_int8(
    model: nn.Module,
    path: str | Path,
    calibration: torch.Tensor,
    *,
    reference: nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    method: Calibration = DEFAULT_CALIBRATION,
    min_top1_agreement: float = DEFAULT_MIN_AGREEMENT,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = DEFAULT_ATOL,
) -> Int8ParityReport:
    """Export ``model`` as int8 ONNX: fp32 ONNX (parity-checked), calibrated static quantization, then a check.

    A model prepared for quantization-aware training (:func:`~resnetkit.deploy.qat.prepare_qat`) is exported
    without its fake quantization, and by default checked against itself with it.

    Args:
        model: the network; put in eval mode. May be BatchNorm-fused (``reference`` then the unfused one).
        path: the ``.onnx`` file to write.
        calibration: normalised images ``(N, C, H, W)`` of the training distribution, a few hundred in real use;
            they also fix the input size.
        reference: the eager model to compare with (default ``model``).
        inputs: at least 2 images for the check, best held out from calibration (default: up to 64 of
            ``calibration``).
        method: how activation ranges are chosen, as in :func:`quantize_onnx`.
        per_channel: one weight scale per output channel, as in :func:`quantize_onnx`.
        reduce_range: 7-bit weights, as in :func:`quantize_onnx`.
        min_top1_agreement: the fraction of images whose top-1 class must match eager's.
        opset: ONNX opset of the fp32 export.
        atol: tolerance of the fp32 export's check (run on up to 8 of ``inputs``).

    Raises:
        ParityError: the fp32 file differs from eager past its ``atol``, or the int8 file's outputs are not finite
            or agree with eager on too few images; ``err.report`` says how much.
    """
    _check_calibration(calibration)
    if not 0 <= min_top1_agreement <= 1:
        raise ValueError(f"min_top1_agreement must be in [0, 1], got {min_top1_agreement}")
    reference = (model if reference is None else reference).eval()
    inputs = calibration[:64] if inputs is None else inputs
    exported = strip_qat(copy.deepcopy(model)) if is_qat(model) else model
    fp32_reference = exported if is_qat(reference) else reference  # fp32 cannot match the fake-quantized model
    with tempfile.TemporaryDirectory(prefix="resnetkit-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(exported, fp32, calibration.shape[-1], opset, reference=fp32_reference, inputs=inputs[:8],
                    atol=atol)  # fmt: skip
        quantize_onnx(fp32, path, calibration, method=method, per_channel=per_channel, reduce_range=reduce_range)
        fp32_bytes = fp32.stat().st_size
    report = check_int8_parity(path, reference, inputs, min_top1_agreement, fp32_bytes)
    if not report.ok:
        raise ParityError(report)
    return report


class _CalibrationReader:
    """Batches of the calibration tensor as ORT feeds; ``set_range`` (in batches) lets ORT calibrate in passes."""

    def __init__(self, name: str, images: torch.Tensor, batch_size: int):
        self.name = name
        self.batches = [b.numpy() for b in images.detach().float().cpu().split(batch_size)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.pending = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict | None:
        batch = next(self.pending, None)
        return None if batch is None else {self.name: batch}


def _input_name(path: Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _check_calibration(calibration: torch.Tensor) -> None:
    if not isinstance(calibration, torch.Tensor) or calibration.dim() != 4:
        shape = tuple(calibration.shape) if isinstance(calibration, torch.Tensor) else type(calibration).__name__
        raise ValueError(f"calibration must be a tensor of images (N, C, H, W), got {shape}")
    if len(calibration) < 2:
        raise ValueError(f"calibration needs at least 2 images (a few hundred in real use), got {len(calibration)}")
    if not torch.isfinite(calibration).all():
        raise ValueError("calibration images contain NaN or infinite values")
