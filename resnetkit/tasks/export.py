"""Detection and segmentation models as ONNX files, checked in ONNX Runtime against eager PyTorch.

A segmentation model exports as :class:`SegmentationLogits` (its ``"out"`` logits, one tensor), which the
classifiers' exporter (:func:`resnetkit.deploy.export.export_onnx`, torch.export-based) takes as it is; the CLI
joins the two. torchvision's detectors do not pass ``torch.export`` (data-dependent shapes in the RPN and NMS), so
:func:`export_detector_onnx` uses the TorchScript-based exporter at opset 17, the route torchvision tests its
detectors on: one image of any height and width in (``(3, H, W)`` float in [0, 1]), ``boxes``, ``labels``,
``scores`` (and ``masks``) out, in the image's coordinates, as in eager mode.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

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
