"""Augmentation of a whole batch at once, on the batch's device, with vectorised tensor ops (no per-sample Python).

Per-sample randomness (crop offsets, flips) is drawn as one tensor per batch from an explicit
``torch.Generator``, so a batch is a pure function of its pixels and the generator's seed. The operations and
their order match :func:`resnetkit.data.transforms.train_transform` for ``Augment.CIFAR``: resize, zero-pad and
crop, flip, normalise (the padding is zero in pixel space, as in v2.RandomCrop, not zero after normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .transforms import Augment, AugmentConfig, AutoAugment


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad every side by ``padding`` and crop each image back to its size at its own random offset.

    Args:
        images: ``(B, C, H, W)``.
        padding: pixels of zeros on each side; the offsets are uniform in ``[0, 2 * padding]``.
        generator: source of the offsets, on the images' device.

    Returns:
        ``(B, C, H, W)``, laid out channels-last (what the gather produces; ``.contiguous()`` if that matters).
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=images.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    crops = padded[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C): one gather for the whole batch
    return crops.permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for float images in ``[0, 1]``."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


@dataclass(frozen=True)
class BatchTransform:
    """uint8 batch in, augmented and normalised float batch out, on the batch's device.

    Args:
        size: side of the output (bilinear resize, e.g. digits 8 -> 32); ``None`` keeps the input size.
        padding: random crop with this zero padding; 0 for none.
        flip: random horizontal flips.
        mean: per-channel mean in ``[0, 1]`` units.
        std: per-channel standard deviation.
        dtype: floating type of the output (``torch.bfloat16`` halves the memory traffic on a GPU).
        channels_last: lay the output out channels-last, the fast layout for convolutions on tensor cores.
    """

    size: int | None = None
    padding: int = 0
    flip: bool = False
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    @staticmethod
    def can_augment(cfg: AugmentConfig) -> bool:
        """Whether whole batches can get ``cfg``'s training augmentation (resize, crop, flip; MixUp/CutMix come
        after); ImageNet's random resized crops, auto-augment policies and random erasing exist only per sample."""
        return cfg.augment is not Augment.IMAGENET and cfg.auto_augment is AutoAugment.NONE and not cfg.erase_prob

    @classmethod
    def from_config(
        cls, cfg: AugmentConfig, *, train: bool, dtype: torch.dtype = torch.float32, channels_last: bool = False
    ) -> BatchTransform:
        """The device counterpart of ``train_transform(cfg)`` (``train=True``) or ``eval_transform(cfg)``.

        Raises:
            ValueError: ``cfg`` asks for training augmentation that only the per-sample pipeline has (see
                :meth:`can_augment`).
        """
        if train and not cls.can_augment(cfg):
            raise ValueError(
                "the device loader augments with crop, flip and MixUp/CutMix only; use folder_loader() "
                f"(per-sample v2 transforms) for augment={cfg.augment.value}, auto_augment={cfg.auto_augment.value}, "
                f"erase_prob={cfg.erase_prob}"
            )
        augment = train and cfg.augment is Augment.CIFAR
        return cls(
            size=cfg.size, padding=cfg.padding if augment else 0, flip=augment and cfg.flip,
            mean=cfg.mean, std=cfg.std, dtype=dtype, channels_last=channels_last,
        )  # fmt: skip

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment ``(B, C, H, W)`` uint8 ``images`` with randomness from ``generator``."""
        x = images  # stays uint8 (a quarter of the bytes to move) until a resize needs floats
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = _to_unit_float(x)  # float32: bilinear resize has no low-precision kernels on CPU
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if self.padding:
            x = random_crop(x, self.padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        x = normalize(_to_unit_float(x), self.mean, self.std)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.dtype, memory_format=memory_format)


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in ``[0, 1]``; float input is returned as it is."""
    return images.to(torch.float32).div_(255) if images.dtype == torch.uint8 else images
