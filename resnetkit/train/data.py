"""From a recipe's data section to the batches the engine consumes.

Datasets that fit in memory (digits, CIFAR, small folders) are decoded once and served by
:class:`~resnetkit.data.DeviceLoader`, augmented a whole batch at a time on the training device. Augmentations
that only exist per sample (ImageNet crops, auto-augment policies, random erasing), and folders with
``in_memory: false``, go through a ``DataLoader`` with the v2 transforms instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..data import (
    AugmentConfig,
    BatchTransform,
    DeviceLoader,
    ImageFolderDataset,
    ImageSet,
    batch_mix,
    digits_splits,
    eval_transform,
    load_cifar,
    load_image_folder,
    split_indices,
    train_transform,
    train_val_split,
)
from ..data.stream import FolderLoader, MixCollate
from ..models import IMAGENET_MEAN, IMAGENET_STD
from .config import DataSection, TrainConfig
from .distributed import World, shard

Batch = tuple[torch.Tensor, torch.Tensor]
CIFARS = ("cifar10", "cifar100")


@dataclass
class RunData:
    """Training batches for each epoch and evaluation batches for each split, already on the device."""

    train: DeviceLoader | DataLoader
    evals: dict[str, DeviceLoader | DataLoader]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device
    world: World

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """This process's share of each global batch of ``epoch``: the same whatever epoch came before."""
        if isinstance(self.train, DeviceLoader):
            self.train.load_state_dict({"seed": self.train.seed, "epoch": epoch, "step": 0})
            return ((shard(x, self.world), shard(y, self.world)) for x, y in self.train)
        if isinstance(self.train.sampler, DistributedSampler):
            self.train.sampler.set_epoch(epoch)
        return _to_device(self.train, self.device)

    def val_batches(self) -> Iterable[Batch]:
        return self._batches(self.evals["val"])

    def eval_splits(self, include_train: bool = False) -> dict[str, Iterable[Batch]]:
        """Evaluation batches (no augmentation) of val, test where the dataset has one, and train if asked."""
        return {name: self._batches(loader) for name, loader in self.evals.items() if include_train or name != "train"}

    def skipped(self, split: str) -> int:
        """Undecodable images left out of the latest pass over ``split`` (streamed datasets; 0 in memory)."""
        return getattr(self.evals[split], "skipped", 0)

    def _batches(self, loader: DeviceLoader | DataLoader) -> Iterable[Batch]:
        return loader if isinstance(loader, DeviceLoader) else _to_device(loader, self.device)


def load_splits(cfg: DataSection, in_chans: int | None = None, progress: bool = True) -> dict[str, ImageSet]:
    """Decode the dataset and split it: ``train``, ``val`` and, where there is one, ``test``.

    Args:
        progress: show a bar while a folder or zip is decoded.
    """
    if cfg.dataset == "digits":
        val, test = cfg.val_size, cfg.test_size
        train_part, val_part, test_part = digits_splits(cfg.split_seed, (1.0 - val - test, val, test))
        return {"train": train_part, "val": val_part, "test": test_part}
    val_size = int(cfg.val_size) if cfg.val_size >= 1 else cfg.val_size
    if cfg.dataset in CIFARS:
        full = load_cifar(cfg.root, cfg.dataset, train=True, download=cfg.download)
        train_part, val_part = train_val_split(full, val_size, seed=cfg.split_seed)
        test = load_cifar(cfg.root, cfg.dataset, train=False, download=cfg.download)
        return {"train": train_part, "val": val_part, "test": test}
    path = Path(cfg.dataset)
    if not path.exists():
        raise FileNotFoundError(f"dataset {cfg.dataset!r} is neither digits, cifar10, cifar100 nor an existing folder or .zip")
    full = load_image_folder(path, size=cfg.input_size if cfg.augment.value != "imagenet" else None,
                             grayscale=in_chans == 1, progress=progress)  # fmt: skip
    train_part, val_part = train_val_split(full, val_size, seed=cfg.split_seed)
    return {"train": train_part, "val": val_part}


def build_data(cfg: TrainConfig, device: torch.device, world: World,
               normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> RunData:  # fmt: skip
    """Loaders for a run: the train loader draws global batches of ``data.batch_size``.

    Args:
        normalize: ``(mean, std)`` to use, e.g. a checkpoint's; by default measured on the training split.
    """
    d = cfg.data
    if not d.in_memory and Path(d.dataset).exists():
        return _streaming_data(cfg, device, world, normalize)
    splits = load_splits(d, progress=cfg.progress and world.is_main)
    mean, std = normalize or channel_stats(splits["train"].images)
    aug = _augment_config(d, mean, std)
    dtype_kw = {"channels_last": cfg.channels_last}
    if BatchTransform.can_augment(aug):
        train = DeviceLoader(splits["train"], d.batch_size, BatchTransform.from_config(aug, train=True, **dtype_kw),
                             device=device, drop_last=True, seed=cfg.seed, mix=batch_mix(aug, len(splits["train"].classes)))  # fmt: skip
    else:  # augmentation that only exists per sample: decoded images through DataLoader workers
        train = _train_loader(_Transformed(splits["train"], train_transform(aug)), d, world, cfg.seed, aug)
    evals = {name: DeviceLoader(part, d.eval_batch_size, BatchTransform.from_config(aug, train=False, **dtype_kw),
                                device=device, shuffle=False)
             for name, part in splits.items()}  # fmt: skip
    return RunData(train, evals, splits["train"].classes, mean, std, device, world)


def _streaming_data(cfg: TrainConfig, device: torch.device, world: World, normalize) -> RunData:
    """A folder too big to decode at once: per-sample decoding and augmentation in DataLoader workers."""
    d = cfg.data
    mean, std = normalize or (IMAGENET_MEAN, IMAGENET_STD)
    aug = _augment_config(d, mean, std)
    train_set = ImageFolderDataset(d.dataset, train_transform(aug))
    eval_set = ImageFolderDataset(d.dataset, eval_transform(aug), skip_broken=True)  # each image counted once
    val_size = int(d.val_size) if d.val_size >= 1 else d.val_size
    train_idx, val_idx = split_indices(len(train_set), [len(train_set) - val_size, val_size] if isinstance(val_size, int)
                                       else [1 - val_size, val_size], seed=d.split_seed)  # fmt: skip
    train = _train_loader(Subset(train_set, train_idx.tolist()), d, world, cfg.seed, aug)
    evals = {"val": FolderLoader(Subset(eval_set, val_idx.tolist()), batch_size=d.eval_batch_size, num_workers=d.workers,
                                 collate_fn=MixCollate(), persistent_workers=d.workers > 0)}  # fmt: skip
    return RunData(train, evals, train_set.classes, tuple(mean), tuple(std), device, world)


def _train_loader(dataset: Dataset, d: DataSection, world: World, seed: int, aug: AugmentConfig) -> DataLoader:
    """Shuffled (sharded under DDP), mixed per batch if the recipe says so; full batches only."""
    mix = batch_mix(aug, len(getattr(dataset, "classes", None) or _classes_of(dataset)))
    return train_loader(dataset, d, world, seed, MixCollate(mix) if mix else None)


def train_loader(dataset: Dataset, d: DataSection, world: World, seed: int, collate_fn=None) -> DataLoader:
    """Per-sample training batches through DataLoader workers: shuffled with ``seed`` (sharded under DDP, each
    process taking ``batch_size / world size``), full batches only."""
    sampler = DistributedSampler(dataset, world.size, world.rank, shuffle=True, seed=seed) if world.distributed else None
    return DataLoader(dataset, batch_size=d.batch_size // world.size, shuffle=sampler is None, sampler=sampler,
                      num_workers=d.workers, drop_last=True, generator=torch.Generator().manual_seed(seed),
                      collate_fn=collate_fn, persistent_workers=d.workers > 0)  # fmt: skip


def _classes_of(dataset: Dataset) -> list[str]:
    return dataset.dataset.classes if isinstance(dataset, Subset) else dataset.classes


class _Transformed(Dataset):
    """An in-memory ImageSet seen through a per-sample transform."""

    def __init__(self, data: ImageSet, transform):
        self.data, self.transform, self.classes = data, transform, data.classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image, label = self.data[i]
        return self.transform(image), label


def _augment_config(d: DataSection, mean, std) -> AugmentConfig:
    return AugmentConfig(augment=d.augment, size=d.input_size, padding=d.padding, flip=d.flip,
                         auto_augment=d.auto_augment, erase_prob=d.random_erasing, mix=d.mix,
                         mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha, mean=mean, std=std)  # fmt: skip


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 ``(N, C, H, W)`` images, in ``[0, 1]`` units.

    Sums in float64 over chunks of images, so memory stays small even for the 50k CIFAR images.
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].double().transpose(0, 1).flatten(1) / 255.0  # (C, chunk * H * W)
        total += x.sum(1)
        squares += x.square().sum(1)
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _to_device(loader: DataLoader, device: torch.device) -> Iterator[Batch]:
    for images, labels in loader:
        yield to_device(images, device), to_device(labels, device)


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors, and the lists, tuples and dicts of them that detection batches are, moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
