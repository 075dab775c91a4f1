"""Prediction with a trained checkpoint: the model and its preprocessing, rebuilt from the file alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.folder import ImageDecodeError, decode_image
from .train.checkpoint import load_checkpoint, model_from_checkpoint


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


@dataclass
class Predictor:
    """A checkpoint's network with the preprocessing it was trained with."""

    model: torch.nn.Module
    classes: list[str]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        state = load_checkpoint(path)
        norm = state["normalize"]
        return cls(model_from_checkpoint(state).eval(), state["classes"], norm["input_size"], tuple(norm["mean"]),
                   tuple(norm["std"]))  # fmt: skip

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``(C, H, W)`` uint8 -> ``(1, C, S, S)`` normalised float, S the training input size."""
        x = image.unsqueeze(0).float() / 255.0
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def predict(self, image: torch.Tensor, topk: int = 5) -> list[tuple[str, float]]:
        probs = self.model(self.preprocess(image)).softmax(1)[0]
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
