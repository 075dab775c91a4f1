"""Smooth synthetic photographs for the task tests: low-frequency colour fields with a few flat objects on them,
so that detectors see edges and regions rather than white noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, height, width) in [0, 1]: a bicubic-upsampled coarse field plus three solid rectangles each."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, height // 24), max(2, width // 24), generator=g)
    images = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    for image in images:
        for _ in range(3):
            h, w = (int(torch.randint(s // 6, s // 2, (1,), generator=g)) for s in (height, width))
            y, x = (int(torch.randint(0, s - e, (1,), generator=g)) for s, e in ((height, h), (width, w)))
            image[:, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=g)
    return images
