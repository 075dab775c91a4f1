"""Semantic segmentation data: paired image / label-mask files in a folder or ``.zip``, their transforms and collate.

Layouts, found under the dataset's top level or its single top folder (``CamVid/`` in CamVid's zip):

- SegNet's (CamVid): ``<split>/<name>.jpg`` with ``<split>annot/<name>.png``;
- ``<split>/images/`` with ``<split>/masks/``, or ``images/<split>/`` with ``masks/<split>/``.

Image and mask pair by file name without extension. A mask holds class indices (grey levels or palette indices);
``ignore_index`` (CamVid's void, 11) becomes :data:`IGNORE` (255), which losses and metrics skip, and 255 in a mask
always means "ignore". Class names come from a ``classes.txt`` (one per line) beside the split folders, if any.

The transforms are torchvision's v2 on ``(tv_tensors.Image, tv_tensors.Mask)``, so geometry moves image and mask
together and masks are always resampled nearest (torchvision's segmentation reference does the same steps).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .dense import IGNORE, Files, SkipCounter, pad_stack, stem
from .folder import SkippedImageWarning
from .layout import is_image

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif")  # lossless: a JPEG mask's labels would be blurred


class SegmentationDataset(torch.utils.data.Dataset):
    """Paired image / label-mask files in a folder or ``.zip``, decoded on access.

    Args:
        source: a directory or a ``.zip``.
        split: the split's folder name, e.g. ``"train"`` or ``"val"``.
        transform: called as ``transform(image, mask)``, e.g. :func:`segmentation_transform`.
        ignore_index: a label that means "ignore" (CamVid: 11), remapped to :data:`IGNORE`.
        num_classes: labels must lie in ``0..num_classes-1`` (or be ignored); default: the ``classes.txt`` count,
            else unchecked.
        skip_broken: replace an undecodable sample by the next one (a :class:`SkippedImageWarning`, counted in
            :attr:`skipped`) instead of raising.

    Attributes:
        files: ``(image member, mask member)`` pairs, sorted.
        classes: names from ``classes.txt``, else ``str(i)`` for ``i < num_classes``, else empty.

    Raises:
        ValueError: no known layout for ``split``, an image without a mask, or a ``classes.txt`` disagreeing with
            ``num_classes``.
    """

    def __init__(
        self,
        source: str | Path,
        split: str,
        transform: Callable[[Any, Any], Any] | None = None,
        *,
        ignore_index: int | None = None,
        num_classes: int | None = None,
        skip_broken: bool = False,
    ):
        self.data = Files(source)
        prefix, self.files = find_pairs(self.data, split)
        self.classes = _read_classes(self.data, prefix, num_classes)
        self.num_classes = num_classes if num_classes is not None else (len(self.classes) or None)
        self.transform = transform
        self.ignore_index = ignore_index
        self.skip_broken = skip_broken
        self._skips = SkipCounter()

    @property
    def skipped(self) -> int:
        """Undecodable samples met so far (in this process), each replaced by the next."""
        return self._skips.skipped

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        image, mask = self._skips.first_good(self.load, i, len(self.files), self.skip_broken)
        return self.transform(image, mask) if self.transform else (image, mask)

    def load(self, i: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Pair ``i`` untransformed: ``(3, H, W)`` uint8 and ``(H, W)`` int64 labels with :data:`IGNORE`.

        Raises:
            ImageDecodeError: either file cannot be decoded (one line naming it).
            ValueError: sizes differ (naming both files), or a label is not a class nor ignored.
        """
        image_name, mask_name = self.files[i]
        image, mask = self.data.decode(image_name), self.data.decode_mask(mask_name)
        if image.shape[-2:] != mask.shape:
            raise ValueError(f"{self.data.name(mask_name)} is {tuple(mask.shape)[::-1]} (WxH) but its image "
                             f"{self.data.name(image_name)} is {tuple(image.shape[-2:])[::-1]}")  # fmt: skip
        return tv_tensors.Image(image), tv_tensors.Mask(self._labels(mask, mask_name))

    def _labels(self, mask: torch.Tensor, name: str) -> torch.Tensor:
        if self.ignore_index is not None:
            mask[mask == self.ignore_index] = IGNORE
        if self.num_classes is not None:
            bad = (mask >= self.num_classes) & (mask != IGNORE) | (mask < 0)
            if bad.any():
                values = sorted(set(mask[bad].unique().tolist()))
                ignored = f" nor ignore_index {self.ignore_index}" if self.ignore_index is not None else ""
                raise ValueError(f"{self.data.name(name)} has label(s) {values[:5]}, not classes 0..{self.num_classes - 1}"
                                 f"{ignored} nor {IGNORE} (ignored)")  # fmt: skip
        return mask


def find_pairs(data: Files, split: str) -> tuple[str, list[tuple[str, str]]]:
    """The folder prefix holding ``split`` and its ``(image, mask)`` pairs, in the first layout that has images.

    Raises:
        ValueError: no layout has images for ``split``, or an image has no mask.
    """
    for prefix in data.prefixes():
        for images, masks in ((f"{split}/", f"{split}annot/"), (f"{split}/images/", f"{split}/masks/"),
                              (f"images/{split}/", f"masks/{split}/")):  # fmt: skip
            found = _children(data, prefix + images, is_image)
            if found and (mask_files := _children(data, prefix + masks, _is_mask)):
                return prefix, _pair(data, found, mask_files)
    raise ValueError(f"{data.source}: no '{split}' split in a known layout ({split}/ + {split}annot/, "
                     f"{split}/images/ + {split}/masks/, images/{split}/ + masks/{split}/); "
                     f"{data.describe(data.prefixes()[-1])}")  # fmt: skip


def _children(data: Files, folder: str, keep: Callable[[str], bool]) -> list[str]:
    """Files directly in ``folder`` that ``keep`` accepts."""
    return [n for n in data.names if n.startswith(folder) and "/" not in n[len(folder) :] and keep(n)]


def _is_mask(name: str) -> bool:
    return name.lower().endswith(MASK_EXTENSIONS)


def _pair(data: Files, images: list[str], masks: list[str]) -> list[tuple[str, str]]:
    by_stem = {stem(m): m for m in masks}
    if missing := [image for image in images if stem(image) not in by_stem]:
        raise ValueError(f"{data.name(missing[0])} has no mask {stem(missing[0])}.png in "
                         f"{masks[0].rsplit('/', 1)[0]}/ ({len(missing)} image(s) without one)")  # fmt: skip
    if extra := len(by_stem) - len(images):
        warnings.warn(f"{data.source}: {extra} mask(s) without an image, e.g. in {masks[0].rsplit('/', 1)[0]}/",
                      SkippedImageWarning, 4)  # fmt: skip
    return [(image, by_stem[stem(image)]) for image in images]


def _read_classes(data: Files, prefix: str, num_classes: int | None) -> list[str]:
    """Names from ``classes.txt`` (blank lines dropped), else ``str(i)`` for each of ``num_classes``."""
    if f"{prefix}classes.txt" not in data:
        return [str(i) for i in range(num_classes or 0)]
    names = [line.strip() for line in data.read(f"{prefix}classes.txt").decode().splitlines() if line.strip()]
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{data.name(prefix + 'classes.txt')} names {len(names)} classes, num_classes={num_classes}")
    return names


class RandomRescale(v2.Transform):
    """Rescale every input by one factor drawn uniformly from ``scale_range`` (masks nearest, images bilinear)."""

    def __init__(self, scale_range: tuple[float, float]):
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        factor = low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, params["size"], antialias=True)


def segmentation_transform(
    train: bool,
    crop_size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    base_size: int | None = None,
) -> v2.Compose:
    """The v2 pipeline on ``(Image, Mask)``: uint8 image and int64 mask in, normalised float image and mask out.

    Train: rescale by a random factor in ``scale_range``, ``RandomCrop(crop_size)`` (padding image 0, mask
    :data:`IGNORE` where the image is smaller), horizontal flip, to float, normalise. Eval: to float, normalise
    (``crop_size`` and ``scale_range`` unused).

    Args:
        train: the training pipeline, else the evaluation one.
        crop_size: training crop, ``int`` or ``(height, width)``.
        mean: per-channel means in [0, 1] units.
        std: per-channel standard deviations in [0, 1] units.
        scale_range: random rescale factors for training.
        flip: random horizontal flips for training.
        base_size: first resize the shorter side to this (both pipelines), e.g. 180 for CamVid at half size.
    """
    steps: list[Any] = [v2.Resize(base_size, antialias=True)] if base_size else []
    if train:
        steps += [RandomRescale(scale_range),
                  v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE})]  # fmt: skip
        steps += [v2.RandomHorizontalFlip()] if flip else []
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def segmentation_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, mask)`` samples into ``(B, 3, H, W)`` and ``(B, H, W)``; smaller ones are padded
    bottom/right to the largest, images with 0 and masks with :data:`IGNORE`."""
    images, masks = zip(*batch)
    return pad_stack(list(images), 0), pad_stack(list(masks), IGNORE)
