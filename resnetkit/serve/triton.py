"""A Triton Inference Server model repository for a model: for users who already run Triton.

The layout Triton reads (https://docs.nvidia.com/deeplearning/triton-inference-server/, "Model Repository")::

    DIR/NAME/config.pbtxt     platform onnxruntime_onnx, max_batch_size, dynamic_batching, input/output shapes
    DIR/NAME/1/model.onnx     the model, exported and checked against eager PyTorch (dynamic batch axis)
    DIR/NAME/labels.txt       class names in output order (Triton's classification extension)

Triton takes preprocessed tensors (``image``: float32, ``C x H x W``, normalised as ``preprocess.json`` says);
decoding and preprocessing stay with the client. Triton itself is not run here (it needs its own server build).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..deploy import export_onnx
from ..workflows import Predictor

CONFIG = """name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [
  {{ name: "image", data_type: TYPE_FP32, dims: [ {chans}, {size}, {size} ] }}
]
output [
  {{ name: "logits", data_type: TYPE_FP32, dims: [ {classes} ], label_filename: "labels.txt" }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
}}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
"""


def write_triton_repository(source: str | Path, directory: str | Path, name: str | None = None,
                            max_batch: int = 32, max_wait_ms: float = 5.0) -> Path:  # fmt: skip
    """Write a Triton model repository for a model file or registry name; returns the model's folder.

    Args:
        source: a model file or registry name (as :meth:`Predictor.load`).
        directory: the repository; ``directory/name`` is created (or overwritten).
        name: the model's name in Triton (default: its architecture).
        max_batch: Triton's ``max_batch_size``, the largest batch its dynamic batcher forms.
        max_wait_ms: Triton's ``max_queue_delay_microseconds``, in milliseconds.
    """
    predictor = Predictor.load(source)
    record, size, chans = predictor.model.record, predictor.preprocess.crop_size, predictor.in_chans
    folder = Path(directory) / (name or record.arch)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    export_onnx(predictor.model, folder / "1" / "model.onnx", size, inputs=torch.randn(2, chans, size, size))
    config = CONFIG.format(name=folder.name, max_batch=max_batch, chans=chans, size=size,
                           classes=len(predictor.classes), delay_us=round(1000 * max_wait_ms))  # fmt: skip
    (folder / "config.pbtxt").write_text(config)
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in predictor.classes))
    (folder / "preprocess.json").write_text(json.dumps(record.preprocess.to_dict(), indent=2) + "\n")
    return folder
