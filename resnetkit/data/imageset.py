"""The in-memory form of every dataset here: images decoded once into one uint8 tensor.

A dataset that fits in memory is decoded a single time into an :class:`ImageSet`; splitting, moving to a device and
batching then work on tensors and never touch a file or an image decoder again (as in Keller Jordan's
cifar10-airbench, where the whole of CIFAR-10 lives on the GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: compare fields explicitly
class ImageSet:
    """Images, labels and class names of a whole dataset, held in memory.

    Also a map-style dataset: ``data[i]`` is ``(image, label)``, so a ``torch.utils.data.DataLoader`` can read it.

    Args:
        images: ``(N, C, H, W)`` uint8 pixels.
        labels: ``(N,)`` int64 class indices.
        classes: class names; label ``i`` means ``classes[i]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be ({len(self.images)},) int64, got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.classes):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), one per class name")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        """The images at ``indices`` (a copy), with the same class names."""
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return ImageSet(self.images[index], self.labels[index], list(self.classes))

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set on ``device``; pixels stay uint8 (a quarter of the memory of float32)."""
        return ImageSet(self.images.to(device), self.labels.to(device), list(self.classes))

    def class_counts(self) -> torch.Tensor:
        """``(num_classes,)`` number of images of each class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def save(self, path: str | Path) -> None:
        """Write the decoded tensors to ``path`` (a cache that :meth:`load` reads back in well under a second)."""
        torch.save({"images": self.images.cpu(), "labels": self.labels.cpu(), "classes": list(self.classes)}, path)

    @classmethod
    def load(cls, path: str | Path) -> ImageSet:
        """Read a file written by :meth:`save` (tensors and strings only: ``weights_only`` loading runs no code)."""
        state = torch.load(path, weights_only=True)
        return cls(state["images"], state["labels"], list(state["classes"]))
