"""Prediction with any model file or registry name: the model and its preprocessing, rebuilt from the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.folder import ImageDecodeError, decode_image
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
