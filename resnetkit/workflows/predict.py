"""Prediction with any model file or registry name: the model and its preprocessing, rebuilt from the file; and
where in the image the model found its answer (a class activation map over the image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..analysis.cam import class_activation_maps, overlay
from ..data.folder import ImageDecodeError, decode_image
from ..io import atomic_write
from ..models import Preprocess
from ..weights import load_model


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


@dataclass
class Predictor:
    """A network with the preprocessing its weights expect."""

    model: torch.nn.Module
    classes: list[str]
    preprocess: Preprocess

    @classmethod
    def load(cls, source: str | Path) -> Predictor:
        """A model file (a run's checkpoint, converted or published weights, a torchvision checkpoint) or a
        registry name (``resnet50.tv2_in1k``), with the preprocessing its record gives."""
        model = load_model(source).eval()
        record = model.record
        classes = list(record.classes) or [str(i) for i in range(model.num_classes)]
        return cls(model, classes, record.preprocess)

    @property
    def in_chans(self) -> int:
        return len(self.preprocess.mean)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, topk: int = 5) -> list[tuple[str, float]]:
        """Top-``topk`` (class, probability) for one ``(C, H, W)`` uint8 image."""
        logits = self.model(self.preprocess(image).unsqueeze(0))
        if not torch.isfinite(logits).all():
            raise ValueError("the model's outputs are not finite (NaN or inf): its weights are broken")
        probs = logits.softmax(1)[0]
        values, indices = probs.topk(min(topk, len(self.classes)))
        return [(self.classes[i], float(p)) for p, i in zip(values, indices)]

    def predict_file(self, path: str | Path, topk: int = 5) -> Prediction:
        """Predict one image file; raises ImageDecodeError (one line) for unreadable files."""
        return Prediction(str(path), self.predict(read_image(path, grayscale=self.in_chans == 1), topk))

    def cam(self, image: torch.Tensor, method: str = "gradcam") -> tuple[np.ndarray, tuple[str, float]]:
        """The class activation map of the top-1 class of one ``(C, H, W)`` uint8 image, over the image.

        The map covers the part of the image the model sees, its centre crop (see :func:`crop_region`), and is
        drawn there at the image's own resolution; the rest of the image is left as it is.

        Args:
            image: ``(C, H, W)`` uint8.
            method: a method of :func:`resnetkit.analysis.class_activation_maps` (``gradcam``, ``scorecam``, ...).

        Returns:
            ``(picture, (class, probability))``: the image with the map, ``(H, W, 3)`` uint8 RGB, and the class.
        """
        result = class_activation_maps(self.model, self.preprocess(image).unsqueeze(0), method=method, progress=False)
        region = crop_region(self.preprocess, image.shape[-2], image.shape[-1])
        picture = overlay(image.permute(1, 2, 0).numpy(), result.maps[0], region=region)
        return picture, (self.classes[result.classes[0]], result.probabilities[0])

    def save_cam(self, path: str | Path, out: str | Path, method: str = "gradcam") -> tuple[str, float]:
        """Write :meth:`cam` of an image file as a PNG at ``out``; returns the (class, probability) explained."""
        picture, top = self.cam(read_image(path, grayscale=self.in_chans == 1), method)
        atomic_write(out, lambda f: Image.fromarray(picture).save(f, format="PNG"))
        return top


def crop_region(preprocess: Preprocess, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)``, in the image's own pixels, of the centre crop that ``preprocess`` keeps of
    a ``height`` x ``width`` image: the shorter side is resized to ``resize_size`` (the longer one as torchvision
    rounds it), then ``crop_size`` is cut from the middle."""
    resize, crop = preprocess.resize_size, preprocess.crop_size
    longer = int(resize * max(height, width) / min(height, width))
    resized_h, resized_w = (resize, longer) if height <= width else (longer, resize)
    top, left = round((resized_h - crop) / 2), round((resized_w - crop) / 2)  # as torchvision's center_crop
    y0, x0 = round(top * height / resized_h), round(left * width / resized_w)
    y1, x1 = round((top + crop) * height / resized_h), round((left + crop) * width / resized_w)
    return y0, x0, min(y1, height) - y0, min(x1, width) - x0


def read_image(path: str | Path, grayscale: bool = False) -> torch.Tensor:
    """Read an image file as ``(C, H, W)`` uint8 (see :func:`decode_image` for the modes handled).

    Raises:
        ImageDecodeError: one line naming the file, for missing, truncated or non-image files.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageDecodeError(f"{path}: {err.strerror or err}") from None
    try:
        return decode_image(data, grayscale=grayscale)
    except ImageDecodeError as err:
        raise ImageDecodeError(f"{path}: {err}") from None
