"""RGB images and their depth maps, from a folder or a ``.zip``, for supervised monocular depth.

Layout (a single top folder above the splits is allowed)::

    <split>/rgb/<name>.png|jpg|...     the image
    <split>/depth/<name>.png|npy       its depth, matched by file name without extension

A depth PNG holds 16-bit integers in millimetres (NYU-Depth v2's and most RGB-D exports' convention; ``depth_scale``
converts, 1000 by default); a ``.npy`` holds float depths in metres (``(H, W)``, or ``(1, H, W)``). 0 means no
measurement: such pixels are left out of losses and metrics. An image without a depth file, a depth without an
image, or sizes that differ are errors naming the files.

:func:`depth_transform` resizes (image bilinear, depth nearest, so no depth is invented at edges), crops, flips and
normalises; :func:`depth_collate` pads a batch to its largest size (depth 0 in the padding: not counted).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from .decode import ImageDecodeError
from .dense import Files, SkipCounter, pad_stack, stem
from .layout import is_image

DEPTH_EXTENSIONS = (".png", ".npy")
MM_PER_M = 1000.0


class DepthPairs(Dataset):
    """The (image, depth) pairs of one split.

    Args:
        path: a folder or ``.zip`` in the layout of the module's docstring.
        split: ``"train"``, ``"val"``, ...
        transform: ``(image uint8 (3, H, W), depth float (1, H, W) in metres) -> (image, depth)``, e.g.
            :func:`depth_transform`; none: returned as read.
        depth_scale: PNG values per metre (1000: millimetres).
        skip_broken: warn and take the next pair instead of stopping at an undecodable one.

    Raises:
        FileNotFoundError: no ``<split>/rgb`` folder.
        ValueError: images and depth files that do not pair up (the message names them).
    """

    def __init__(
        self,
        path: str,
        split: str,
        transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        depth_scale: float = MM_PER_M,
        skip_broken: bool = False,
    ):
        self.files, self.transform, self.depth_scale, self.skip_broken = (
            Files(path),
            transform,
            depth_scale,
            skip_broken,
        )
        prefix = self._split_prefix(split)
        images = {stem(n): n for n in self.files.names if n.startswith(f"{prefix}rgb/") and is_image(n)}
        depths = {stem(n): n for n in self.files.names
                  if n.startswith(f"{prefix}depth/") and n.lower().endswith(DEPTH_EXTENSIONS)}  # fmt: skip
        if not images:
            raise FileNotFoundError(f"{self.files.name(prefix + 'rgb/')}: no images; {self.files.describe(prefix)}")
        for kind, names, others in (("depth", images, depths), ("image", depths, images)):
            unpaired = sorted(names[k] for k in names.keys() - others.keys())
            if unpaired:
                raise ValueError(f"{self.files.name(unpaired[0])} has no {kind} file of the same name "
                                 f"({len(unpaired)} unpaired in {self.files.source})")  # fmt: skip
        self.pairs = [(images[k], depths[k]) for k in sorted(images)]
        self._skips = SkipCounter()

    def _split_prefix(self, split: str) -> str:
        tops = {name.split("/")[0] for name in self.files.names if "/" in name}
        for prefix in [""] + [f"{top}/" for top in tops if len(tops) == 1]:
            if any(name.startswith(f"{prefix}{split}/rgb/") for name in self.files.names):
                return f"{prefix}{split}/"
        raise FileNotFoundError(f"{self.files.source}: no {split}/rgb/ folder; {self.files.describe()}")

    @property
    def skipped(self) -> int:
        return self._skips.skipped

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        return self._skips.first_good(self._load, i % len(self), len(self), self.skip_broken)

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_name, depth_name = self.pairs[i]
        image, depth = self.files.decode(image_name), self.read_depth(depth_name)
        if image.shape[-2:] != depth.shape[-2:]:
            raise ImageDecodeError(f"{self.files.name(depth_name)}: depth {tuple(depth.shape[-2:])} and image "
                                   f"{tuple(image.shape[-2:])} differ in size")  # fmt: skip
        return self.transform(image, depth) if self.transform else (image, depth)

    def read_depth(self, member: str) -> torch.Tensor:
        """A depth file as ``(1, H, W)`` float32 metres."""
        if PurePosixPath(member).suffix.lower() == ".npy":
            try:
                values = np.load(io.BytesIO(self.files.read(member)), allow_pickle=False)
            except (ValueError, OSError) as err:
                raise ImageDecodeError(f"{self.files.name(member)}: not a .npy array ({err})") from None
            values = values[0] if values.ndim == 3 and values.shape[0] == 1 else values
            if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
                raise ImageDecodeError(f"{self.files.name(member)}: a depth map is (H, W) numbers, got "
                                       f"{values.dtype} {values.shape}")  # fmt: skip
            depth = torch.from_numpy(np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0))
        else:
            depth = self.files.decode_mask(member).float() / self.depth_scale
        return depth[None]


def depth_transform(
    train: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    base_size: int | None = None,
    flip: bool = True,
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(image uint8, depth) -> (normalised float image, depth): the shorter side resized to ``base_size`` first
    (if given); in training then a random ``size`` crop (padded with depth 0 where smaller) and a random flip."""

    def apply(image: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if base_size:
            image = TF.resize(image, base_size, antialias=True)
            depth = F.interpolate(depth[None], size=image.shape[-2:], mode="nearest")[0]
        if train:
            image, depth = _random_crop(image, depth, size)
            if flip and torch.rand(()) < 0.5:
                image, depth = image.flip(-1), depth.flip(-1)
        x = TF.normalize(image.float().div(255), list(mean), list(std))
        return x, depth

    return apply


def _random_crop(image: torch.Tensor, depth: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        image, depth = F.pad(image, (0, pad_w, 0, pad_h)), F.pad(depth, (0, pad_w, 0, pad_h))
        h, w = image.shape[-2:]
    top, left = int(torch.randint(0, h - size + 1, ())), int(torch.randint(0, w - size + 1, ()))
    return image[..., top : top + size, left : left + size], depth[..., top : top + size, left : left + size]


def depth_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and depths stacked, padded bottom/right to the largest (image 0, depth 0: not counted)."""
    images, depths = zip(*batch)
    return pad_stack(list(images), 0.0), pad_stack(list(depths), 0.0)
