"""The streaming path for datasets too big to hold decoded: a ``torch.utils.data.DataLoader`` whose workers
read, decode and augment one image at a time with the v2 transforms, and mix whole batches in ``collate_fn``.

An undecodable file is never counted twice: :func:`folder_loader` leaves it out of its batch and counts it
(:attr:`FolderLoader.skipped`); a training set built directly on :class:`ImageFolderDataset` replaces it by the next.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from .folder import ImageDecodeError, SkippedImageWarning, index_images
from .transforms import BatchMix

MAX_SKIPS = 32  # consecutive undecodable files tolerated before giving up, where each is replaced by the next


class ImageFolderDataset(Dataset):
    """Images of a folder or zip in ImageFolder layout, decoded on access.

    A file that cannot be decoded is reported once (a :class:`SkippedImageWarning` naming it). By default it is
    replaced by the next decodable one, so a damaged file never stops an epoch nor shrinks a batch; with
    ``skip_broken`` its sample is ``None`` instead, which :class:`MixCollate` leaves out of the batch, so that
    evaluation counts every image once and none twice.

    Args:
        path: a directory, or a ``.zip`` (its class root decided as in :func:`index_images`).
        transform: applied to each ``(C, H, W)`` uint8 image, e.g. ``train_transform(cfg)``.
        grayscale: decode to 1 channel instead of 3.
        skip_broken: give ``None`` for an undecodable file rather than the next decodable one.
        min_classes: refuse a dataset with fewer classes.
    """

    def __init__(
        self,
        path: str | Path,
        transform: Callable[[torch.Tensor], Any] | None = None,
        grayscale: bool = False,
        *,
        skip_broken: bool = False,
        min_classes: int = 2,
    ):
        self.index = index_images(path, min_classes)
        self.transform = transform
        self.grayscale = grayscale
        self.skip_broken = skip_broken
        self._reported: set[int] = set()

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        if self.skip_broken:
            return self._sample(i)
        for j in range(i, i + MAX_SKIPS):
            if (sample := self._sample(j % len(self.index))) is not None:
                return sample
        raise ImageDecodeError(f"{MAX_SKIPS} files in a row from {self.index.name(i)} on cannot be decoded")

    def _sample(self, j: int) -> tuple[Any, int] | None:
        """File ``j`` transformed, with its label; ``None`` (reported once) if it cannot be decoded."""
        try:
            image = self.index.decode(j, self.grayscale)
        except ImageDecodeError as err:
            if j not in self._reported:
                self._reported.add(j)
                warnings.warn(f"skipping {self.index.name(j)}: {err}", SkippedImageWarning, 3)
            return None
        return (self.transform(image) if self.transform else image), self.index.labels[j]


class MixCollate:
    """``collate_fn`` that stacks samples, leaving out the ``None`` of undecodable files, and applies MixUp/CutMix
    to the batch if given one (a class: workers pickle it). A batch with no sample left is ``None``."""

    def __init__(self, mix: BatchMix | None = None):
        self.mix = mix

    def __call__(self, samples: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not (kept := [sample for sample in samples if sample is not None]):
            return None
        batch = default_collate(kept)
        return self.mix(*batch) if self.mix is not None else batch


class FolderLoader(DataLoader):
    """A DataLoader over an :class:`ImageFolderDataset` with ``skip_broken``: batches leave undecodable files out,
    a batch with none left is not yielded, and :attr:`skipped` counts the files left out of the latest pass."""

    def __init__(self, dataset: ImageFolderDataset, *args: Any, **kwargs: Any):
        super().__init__(dataset, *args, **kwargs)
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped, seen = 0, 0
        remaining = len(self) * self.batch_size if self.drop_last else len(self.sampler)
        for batch in super().__iter__():
            expected = min(self.batch_size, remaining)  # every batch is full but the last
            remaining -= expected
            self.skipped += expected - (0 if batch is None else len(batch[1]))
            if batch is not None:
                seen += len(batch[1])
                yield batch
        if not seen and self.skipped:
            raise ImageDecodeError(f"none of the {self.skipped} files of {_source(self.dataset)} could be decoded")


def _source(dataset: Dataset) -> str:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return str(dataset.index.source)


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
    min_classes: int = 2,
) -> FolderLoader:
    """A DataLoader that streams an image folder or zip through per-sample transforms in worker processes.

    An undecodable file is reported (a :class:`SkippedImageWarning` from the process that met it), left out of its
    batch, and counted in the loader's ``skipped``: an evaluation counts each image once.

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
        min_classes: refuse a folder with fewer classes.
    """
    return FolderLoader(
        ImageFolderDataset(path, transform, skip_broken=True, min_classes=min_classes),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=MixCollate(mix),
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
