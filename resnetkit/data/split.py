"""Deterministic splits of any dataset into disjoint parts (train / validation / test), fixed by a seed.

He et al. 2015 (Sec. 4.2) tune on a 45k/5k split of the CIFAR-10 training set: ``train_val_split(data, 5000)``.
Stratified splits give every part the same class proportions (to within one image per class), which matters for
small sets such as the 1,797 digits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .imageset import ImageSet

CIFAR_VAL_SIZE = 5000  # the paper's 45k/5k split of the 50k training images


def split_sizes(total: int, sizes: Sequence[int | float]) -> list[int]:
    """Resolve ``sizes`` into image counts that add up to ``total``.

    Args:
        total: number of items to split.
        sizes: either counts that add up to ``total``, or fractions that add up to 1; with fractions, every part
            but the first gets ``floor(fraction * total)`` and the first takes the rest.
    """
    if all(isinstance(s, int) for s in sizes):
        if sum(sizes) != total or min(sizes) < 0:
            raise ValueError(f"split counts {list(sizes)} must be >= 0 and add up to {total}")
        return list(sizes)
    if abs(sum(sizes) - 1.0) > 1e-6 or min(sizes) < 0:
        raise ValueError(f"split fractions {list(sizes)} must be >= 0 and add up to 1")
    rest = [int(f * total) for f in sizes[1:]]
    return [total - sum(rest)] + rest


def split_indices(
    total: int, sizes: Sequence[int | float], *, seed: int = 0, labels: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Partition ``range(total)`` into disjoint parts of the given sizes, the same for the same seed.

    Args:
        total: number of items.
        sizes: counts or fractions of each part, as in :func:`split_sizes`.
        seed: fixes the partition.
        labels: ``(total,)`` class indices to stratify by; ``None`` for a plain random split.

    Returns:
        One sorted int64 index tensor per part.
    """
    counts = split_sizes(total, sizes)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=generator) if labels is None else _stratified_order(labels.cpu(), generator)
    parts = torch.split(order, counts)
    return [part.sort().values for part in parts]


def _stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random order whose every prefix holds each class in proportion to its size.

    Shuffle, then sort by each item's rank within its class divided by the class size: a class of 100 items puts
    one item in every hundredth of the order, so cutting the order anywhere splits every class proportionally.
    """
    shuffled = torch.randperm(len(labels), generator=generator)
    by_class = shuffled[torch.sort(labels[shuffled], stable=True).indices]  # grouped by class, random within
    sorted_labels = labels[by_class]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[sorted_labels]
    position = (rank + 0.5).double() / counts[sorted_labels]
    jitter = torch.rand(len(labels), generator=generator, dtype=torch.float64) * 1e-12  # random order of ties
    return by_class[torch.sort(position + jitter, stable=True).indices]


def split(data: ImageSet, sizes: Sequence[int | float], *, seed: int = 0, stratify: bool = False) -> list[ImageSet]:
    """Split ``data`` into disjoint subsets of the given sizes (see :func:`split_indices`).

    Example:
        >>> from resnetkit.data import load_digits
        >>> train, val, test = split(load_digits(), [0.7, 0.1, 0.2], seed=0, stratify=True)
        >>> len(train), len(val), len(test)
        (1259, 179, 359)
    """
    labels = data.labels if stratify else None
    return [data.subset(index) for index in split_indices(len(data), sizes, seed=seed, labels=labels)]


def train_val_split(
    data: ImageSet, val_size: float = CIFAR_VAL_SIZE, *, seed: int = 0, stratify: bool = False
) -> tuple[ImageSet, ImageSet]:
    """Hold out ``val_size`` images (a count, or a fraction) of ``data`` for validation.

    Returns:
        ``(train, val)``; with the default, CIFAR's 45,000 / 5,000.
    """
    sizes = [len(data) - val_size, val_size] if isinstance(val_size, int) else [1.0 - val_size, val_size]
    train, val = split(data, sizes, seed=seed, stratify=stratify)
    return train, val
