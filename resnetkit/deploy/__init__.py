"""Deployment: BatchNorm fusion and export (ONNX, TorchScript, torch.export), each export checked against eager.

    >>> from resnetkit import create_model
    >>> from resnetkit.deploy import export_onnx, fuse_model
    >>> model = create_model("cifar_resnet20").eval()
    >>> report = export_onnx(fuse_model(model), "r20.onnx", 32, reference=model)  # raises ParityError past atol
    >>> print(report.line())  # doctest: +SKIP
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

__all__ = [
    "fuse_model", "foldable_pairs", "fold_norm_into_conv", "norm_names",
    "Format", "ParityReport", "ParityError", "EXPORTERS", "export_onnx", "export_torchscript", "export_program",
    "check_parity", "load_runner", "sample_images",
]  # fmt: skip
