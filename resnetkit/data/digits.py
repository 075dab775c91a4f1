"""The embedded default dataset: scikit-learn's handwritten digits (the UCI "Optical Recognition of Handwritten
Digits" test set, Alpaydin & Kaynak 1998): 1,797 grey 8x8 images, classes "0" to "9", no download needed.

There is no official split; :func:`digits_splits` makes a stratified train/validation/test split fixed by a seed,
so a test set is held out from every choice made on the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .imageset import ImageSet
from .split import split


def load_digits() -> ImageSet:
    """All 1,797 digits as ``(N, 1, 8, 8)`` uint8: the original 0..16 grey levels scaled to 0..255."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: scikit-learn is slow to import

    bunch = sklearn_digits()
    levels = torch.from_numpy(bunch.images).round().to(torch.int32)  # (N, 8, 8) values 0..16
    images = ((levels * 255 + 8) // 16).to(torch.uint8).unsqueeze(1)  # 16 -> 255, rounded to nearest
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return ImageSet(images, labels, [str(d) for d in range(10)])


def digits_splits(seed: int = 0, sizes: Sequence[float] = (0.7, 0.1, 0.2)) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Stratified ``(train, val, test)`` parts of the digits (1,259 / 179 / 359 images by default).

    Args:
        seed: fixes the split; keep it fixed across experiments so the test part stays unseen.
        sizes: fractions of train, validation and test.
    """
    train, val, test = split(load_digits(), sizes, seed=seed, stratify=True)
    return train, val, test
