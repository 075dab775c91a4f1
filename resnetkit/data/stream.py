"""The streaming path for datasets too big to hold decoded: a ``torch.utils.data.DataLoader`` whose workers
read, decode and augment one image at a time with the v2 transforms, and mix whole batches in ``collate_fn``.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .folder import ImageDecodeError, SkippedImageWarning, decode_image, index_images
from .transforms import BatchMix

MAX_SKIPS = 32  # consecutive undecodable files tolerated before giving up


class ImageFolderDataset(Dataset):
    """Images of a folder or zip in ImageFolder layout, decoded on access.

    A file that cannot be decoded is reported once (a :class:`SkippedImageWarning` naming it) and replaced by the
    next decodable one, so a damaged file never stops an epoch.

    Args:
        path: a directory, or a ``.zip`` (one top-level folder is skipped, as in :func:`index_images`).
        transform: applied to each ``(C, H, W)`` uint8 image, e.g. ``train_transform(cfg)``.
        grayscale: decode to 1 channel instead of 3.
    """

    def __init__(
        self, path: str | Path, transform: Callable[[torch.Tensor], Any] | None = None, grayscale: bool = False
    ):
        self.index = index_images(path)
        self.transform = transform
        self.grayscale = grayscale
        self._reported: set[int] = set()

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        for j in range(i, i + MAX_SKIPS):
            j %= len(self.index)
            try:
                image = decode_image(self.index.read(j), self.grayscale)
            except (ImageDecodeError, OSError, zipfile.BadZipFile) as err:
                self._report(j, err)
                continue
            return (self.transform(image) if self.transform else image), self.index.labels[j]
        raise ImageDecodeError(f"{MAX_SKIPS} files in a row from {self.index.name(i)} on cannot be decoded")

    def _report(self, j: int, err: Exception) -> None:
        if j not in self._reported:
            self._reported.add(j)
            warnings.warn(f"skipping {self.index.name(j)}: {err}", SkippedImageWarning, 3)


class MixCollate:
    """``collate_fn`` that stacks samples and applies MixUp/CutMix to the batch (a class: workers pickle it)."""

    def __init__(self, mix: BatchMix):
        self.mix = mix

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(*default_collate(samples))


def folder_loader(
    path: str | Path,
    transform: Callable[[torch.Tensor], Any] | None,
    batch_size: int,
    *,
    shuffle: bool = True,
    workers: int = 4,
    drop_last: bool = False,
    seed: int = 0,
    mix: BatchMix | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader that streams an image folder or zip through per-sample transforms in worker processes.

    With ``workers > 0`` the batches, augmentation included, are fixed by ``seed`` (each worker's torch generator
    is seeded from the loader's); with ``workers=0`` augmentation draws from the global generator.

    Args:
        path: folder or zip in ImageFolder layout.
        transform: per-sample pipeline, e.g. ``train_transform(cfg)`` or ``eval_transform(cfg)``.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch, from a generator seeded with ``seed``.
        workers: decoding processes; 0 decodes in the main process.
        drop_last: skip the last, smaller batch.
        seed: fixes the shuffling and the workers' seeds.
        mix: MixUp/CutMix applied to every collated batch (see ``batch_mix``).
        pin_memory: page-locked batches, for faster copies to a GPU.
    """
    return DataLoader(
        ImageFolderDataset(path, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=MixCollate(mix) if mix is not None else None,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
