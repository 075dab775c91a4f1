"""Deployment: BatchNorm fusion, export (ONNX, TorchScript, torch.export) and int8 quantization (static through
ONNX Runtime, and quantization-aware training), each export checked against eager.

    >>> from resnetkit import create_model
    >>> from resnetkit.deploy import export_int8, export_onnx, fuse_model
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> model = create_model("cifar_resnet20").eval()
    >>> report = export_onnx(fuse_model(model), f"{folder}/r20.onnx", 32, reference=model)  # ParityError past atol
    >>> print(report.line())  # doctest: +SKIP
    >>> from resnetkit.workflows import calibration_images
    >>> calibration = calibration_images("runs/digits/best.safetensors", 512)  # doctest: +SKIP
    >>> report = export_int8(model, f"{folder}/r20-int8.onnx", calibration)  # doctest: +SKIP
"""

from .export import (
    EXPORTERS,
    Format,
    ParityError,
    ParityReport,
    check_parity,
    export_onnx,
    export_program,
    export_torchscript,
    load_runner,
    sample_images,
)
from .fuse import fold_norm_into_conv, foldable_pairs, fuse_model, norm_names
from ..models.qat import ActivationFakeQuant, WeightFakeQuant, is_qat, prepare_qat, strip_qat
from .quantize import (
    DEFAULT_CALIBRATION,
    Calibration,
    Int8ParityReport,
    check_int8_parity,
    export_int8,
    quantize_onnx,
)

__all__ = [
    "fuse_model", "foldable_pairs", "fold_norm_into_conv", "norm_names",
    "Format", "ParityReport", "ParityError", "EXPORTERS", "export_onnx", "export_torchscript", "export_program",
    "check_parity", "load_runner", "sample_images",
    "Calibration", "DEFAULT_CALIBRATION", "Int8ParityReport", "quantize_onnx", "export_int8", "check_int8_parity",
    "prepare_qat", "strip_qat", "is_qat", "WeightFakeQuant", "ActivationFakeQuant",
]  # fmt: skip
