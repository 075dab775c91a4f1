"""Prediction with a trained checkpoint or a weights file: the model and its preprocessing, rebuilt from the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .data.folder import ImageDecodeError, decode_image
from .train.checkpoint import load_checkpoint, model_from_checkpoint
from .weights import Preprocess, load_model


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
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        """A training checkpoint: the input size and normalisation it was trained with (resize, no crop)."""
        state = load_checkpoint(path)
        norm = state["normalize"]
        size = norm["input_size"]
        preprocess = Preprocess(crop_size=size, resize_size=size, mean=norm["mean"], std=norm["std"])
        return cls(model_from_checkpoint(state).eval(), state["classes"], preprocess)

    @classmethod
    def from_weights(cls, source: str | Path) -> Predictor:
        """A resnetkit weights file or registry name (``resnet50.tv2_in1k``): the weights' own preprocessing."""
        model = load_model(source).eval()
        meta = model.weights_meta
        classes = list(meta.classes) or [str(i) for i in range(model.num_classes)]
        return cls(model, classes, meta.preprocess)

    @property
    def in_chans(self) -> int:
        return len(self.preprocess.mean)

    @torch.no_grad()
    def predict(self, image: torch.Tensor, topk: int = 5) -> list[tuple[str, float]]:
        """Top-``topk`` (class, probability) for one ``(C, H, W)`` uint8 image."""
        probs = self.model(self.preprocess(image).unsqueeze(0)).softmax(1)[0]
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
