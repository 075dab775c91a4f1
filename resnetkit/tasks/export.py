"""Detection and segmentation models as ONNX files, checked in ONNX Runtime against eager PyTorch.

A segmentation model exports as :class:`SegmentationLogits` (its ``"out"`` logits, one tensor), which the
classifiers' exporter (:func:`resnetkit.deploy.export.export_onnx`, torch.export-based) takes as it is; the CLI
joins the two. torchvision's detectors do not pass ``torch.export`` (data-dependent shapes in the RPN and NMS), so
:func:`export_detector_onnx` uses the TorchScript-based exporter at opset 17, the route torchvision tests its
detectors on: one image of any height and width in (``(3, H, W)`` float in [0, 1]), ``boxes``, ``labels``,
``scores`` (and ``masks``) out, in the image's coordinates, as in eager mode.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..deploy.bench import BenchResult, BenchSettings, safetensors_bytes, time_calls
from ..models.complexity import count_params

DETECTOR_OPSET = 17
# What passes: boxes within 0.01 pixel and scores within 1e-3 of eager, the same labels, and instance masks (after
# the usual 0.5 threshold) differing on at most 0.5% of their pixels: the exported graph pastes masks into the image
# with torchvision's ONNX-specific loop, whose interpolation differs at mask borders from the eager paste.
TOLERANCES = {"boxes": 1e-2, "labels": 0.0, "scores": 1e-3, "masks": 5e-3}


class SegmentationLogits(nn.Module):
    """A torchvision segmentation model seen as images ``(B, 3, H, W)`` -> logits ``(B, K, H, W)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]


@dataclass(frozen=True)
class DetectorParity:
    """How the ONNX detector's outputs compare with eager PyTorch's on the check images: the largest difference of
    boxes (pixels), labels and scores, and the share of mask pixels that disagree after thresholding at 0.5."""

    path: str
    images: int
    detections: int
    worst: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(v <= TOLERANCES[k] for k, v in self.worst.items())  # False for NaN and inf too

    def line(self) -> str:
        worst = ", ".join(f"{k} {v:.2e}" for k, v in self.worst.items())
        verdict = "ok" if self.ok else f"FAILED (tolerances {TOLERANCES})"
        return f"{self.path}: ONNX Runtime vs eager on {self.images} images, {self.detections} detections: {worst}; {verdict}"


def output_names(model: nn.Module) -> list[str]:
    masks = getattr(getattr(model, "roi_heads", None), "has_mask", lambda: False)()
    return ["boxes", "labels", "scores"] + (["masks"] if masks else [])


def export_detector_onnx(model: nn.Module, path: str | Path, images: list[torch.Tensor]) -> DetectorParity:
    """Write a torchvision detector as ONNX (one image, any size) and check it on ``images`` (of other sizes
    than the first, which is traced) in ONNX Runtime; a :class:`DetectorParity` whose ``ok`` says if it passed."""
    model.eval()
    names = output_names(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and torchvision's trace warnings
        torch.onnx.export(model, ([images[0]],), str(path), dynamo=False, opset_version=DETECTOR_OPSET,
                          input_names=["image"], output_names=names,
                          dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in names}})  # fmt: skip
    return check_detector(path, model, images[1:] or images)


def check_detector(path: str | Path, model: nn.Module, images: list[torch.Tensor]) -> DetectorParity:
    """Run the ONNX file and the eager model on each image and compare (inf when the two find a different number
    of objects)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    count = 0
    with torch.no_grad():
        for image in images:
            got = dict(zip(names, session.run(None, {"image": image.numpy()})))
            expected = model([image])[0]
            count += len(expected["boxes"])
            for name in names:
                worst[name] = max(worst[name], _difference(name, torch.from_numpy(got[name]), expected[name]))
    return DetectorParity(str(path), len(images), count, worst)


def _difference(name: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    if got.shape != expected.shape:
        return float("inf")
    if not got.numel():
        return 0.0
    if name == "masks":
        return ((got > 0.5) != (expected > 0.5)).float().mean().item()
    return (got.float() - expected.float()).abs().max().item()


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
                times = time_calls(lambda _: call(), image, settings.warmup, settings.repeats)
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
