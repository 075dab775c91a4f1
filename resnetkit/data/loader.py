"""The fast path for datasets that fit in memory: batches drawn and augmented on the device that trains.

The uint8 images move to the device once (CIFAR-10's 50k images are 150 MB); every batch is then an index gather
plus a few vectorised ops (:class:`~resnetkit.data.batch.BatchTransform`), with no worker processes, no per-sample
Python and no host-to-device copies (Keller Jordan's cifar10-airbench does the same).

Resuming: the order of an epoch and the randomness of each batch come from a ``torch.Generator`` re-seeded from
``(seed, epoch)`` and ``(seed, epoch, step)``. The whole state is therefore ``{seed, epoch, step}``: save
:meth:`DeviceLoader.state_dict` with a checkpoint, and :meth:`DeviceLoader.load_state_dict` makes the following
batches equal to those of an uninterrupted run, on the same kind of device (CPU and CUDA generators differ).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from .batch import BatchTransform
from .imageset import ImageSet
from .transforms import BatchMix

Batch = tuple[torch.Tensor, torch.Tensor]


class DeviceLoader:
    """Shuffled, augmented batches of an :class:`ImageSet` held on one device.

    Iterating runs the rest of the current epoch (all of it, unless resumed or left mid-way) and then moves to
    the next, so ``for epoch in range(n): for x, y in loader: ...`` is the usual loop; a new iterator always
    continues where the last one stopped.

    Args:
        data: the images; copied to ``device`` once, as uint8.
        batch_size: images per batch.
        transform: uint8 batch to float batch; ``None`` only scales to ``[0, 1]``.
        device: where the images live and batches are made; defaults to the data's device.
        shuffle: a new random order every epoch (``False`` for evaluation: the stored order).
        drop_last: skip the last, smaller batch of an epoch.
        seed: fixes the orders and the augmentation.
        mix: MixUp/CutMix for the augmented batch (see :func:`~resnetkit.data.transforms.batch_mix`).

    Example:
        >>> from resnetkit.data import CIFAR10_MEAN, CIFAR10_STD, AugmentConfig, BatchTransform, digits_splits
        >>> train_set, _, _ = digits_splits()
        >>> cfg = AugmentConfig(size=32, mean=CIFAR10_MEAN[:1], std=CIFAR10_STD[:1])
        >>> train = DeviceLoader(train_set, 512, BatchTransform.from_config(cfg, train=True), device="cpu")
        >>> x, y = next(iter(train))
        >>> tuple(x.shape), x.dtype
        ((512, 1, 32, 32), torch.float32)
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        transform: BatchTransform | None = None,
        *,
        device: torch.device | str | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        mix: BatchMix | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = data.images.to(device) if device is not None else data.images
        self.labels = data.labels.to(self.images.device)
        self.classes = list(data.classes)
        self.batch_size = batch_size
        self.transform = transform if transform is not None else BatchTransform()
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.mix = mix
        self.epoch = 0
        self.step = 0
        self._generator = torch.Generator(device=self.images.device)
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, permutation), computed once per epoch

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.step >= len(self):  # the last batch was taken but the loop not closed (a checkpoint, a break)
            self.epoch, self.step = self.epoch + 1, 0
        order = self._epoch_order()
        for step in range(self.step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            self.step = step + 1  # counted before the yield: a checkpoint taken now resumes after this batch
            yield self._make_batch(index, step)
        self.epoch += 1
        self.step = 0

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None or self._order[0] != self.epoch:
            if self.shuffle:
                self._generator.manual_seed(_derive_seed(self.seed, self.epoch))
                order = torch.randperm(len(self.images), device=self.device, generator=self._generator)
            else:
                order = torch.arange(len(self.images), device=self.device)
            self._order = (self.epoch, order)
        return self._order[1]

    def _make_batch(self, index: torch.Tensor, step: int) -> Batch:
        seed = _derive_seed(self.seed, self.epoch, step)
        self._generator.manual_seed(seed)
        images = self.transform(self.images[index], self._generator)
        labels = self.labels[index]
        if self.mix is not None:
            with torch.random.fork_rng(devices=[]):  # v2.MixUp/CutMix draw from the global CPU generator
                torch.manual_seed(seed)
                images, labels = self.mix(images, labels)
        return images, labels

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: ``{"seed", "epoch", "step"}`` (the step is the next batch to make)."""
        return {"seed": self.seed, "epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict`; the next batch is the one an uninterrupted run made next."""
        if not 0 <= state["step"] <= len(self):
            raise ValueError(f"step {state['step']} is outside an epoch of {len(self)} batches")
        self.seed, self.epoch, self.step = int(state["seed"]), int(state["epoch"]), int(state["step"])


def _derive_seed(*numbers: int) -> int:
    """A well-mixed 63-bit seed from a few integers (nearby inputs give unrelated streams)."""
    digest = hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
