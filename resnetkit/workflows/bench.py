"""Inference speed of the task models that ``resnetkit.deploy.bench``'s routes cannot take: torchvision's detectors
read a list of images of any size, and export through their own ONNX path (:mod:`resnetkit.tasks.export`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..deploy.bench import BenchResult, BenchSettings, safetensors_bytes, time_calls
from ..models.complexity import count_params
from ..tasks.export import export_detector_onnx


def bench_detector(model: nn.Module, size: tuple[int, int], settings: BenchSettings, directory: Path,
                   routes: tuple[str, ...] = ("eager", "onnxruntime")) -> list[BenchResult]:  # fmt: skip
    """Time a torchvision detector on one ``size`` (height, width) image per call, as it is served: eager PyTorch
    and its ONNX export (:func:`export_detector_onnx`, parity-checked first) in ONNX Runtime on ``settings.threads``
    threads (0: all cores). Random images find a few boxes or none, so the heads after NMS do little; the times are
    of the backbone, FPN, RPN and box head, as a real image with few objects costs."""
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1))
    params, macs = count_params(model), _detector_macs(model, image)
    threads = settings.threads or torch.get_num_threads()
    runs: dict[str, tuple[Callable[[], Any], int]] = {}
    if "eager" in routes:
        runs["eager"] = (lambda: model([image]), safetensors_bytes(model))
    if "onnxruntime" in routes:
        import onnxruntime as ort

        path = Path(directory) / "detector.onnx"
        other = torch.rand(3, size[0] * 3 // 4, size[1], generator=torch.Generator().manual_seed(2))
        parity = export_detector_onnx(model, path, [image, other])  # traced on one size, checked on another
        if not parity.ok:
            raise ValueError(parity.line())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": image.numpy()}
        runs["onnxruntime"] = (lambda: session.run(None, feed), path.stat().st_size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        with torch.inference_mode():
            for route, (call, size_bytes) in runs.items():
                times = time_calls(lambda _, call=call: call(), image, settings.warmup, settings.repeats)
                median = statistics.median(times)
                results.append(BenchResult(route, 1, median * 1e3, 1 / median, params, macs, size_bytes,
                                           min(times) * 1e3, len(times)))  # fmt: skip
        return results
    finally:
        torch.set_num_threads(previous)


def _detector_macs(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates of one eval-mode call on ``image`` (convolutions and linear layers, as for classifiers)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()([image])
    return counter.get_total_flops() // 2
