"""Monocular depth: a ResNet encoder, an upsampling decoder with skip connections, and the supervised losses.

:func:`depth_net` builds a :class:`DepthNet`: any resnetkit variant as the encoder (``create_model(...,
features_only=True)``: the stem and the four stages, :mod:`resnetkit.models.features`), and Monodepth2's decoder
(Godard et al. 2019): from the deepest feature up, a 3x3 convolution and ELU, nearest upsampling to the next
feature's size, concatenation with that feature (the skip connection), another 3x3 convolution and ELU; widths 256,
128, 64, 32, 16. The last ``num_scales`` levels each predict a sigmoid ``s`` through a 3x3 convolution, read as
depth ``min_depth * (max_depth / min_depth) ** s``, so every prediction lies in ``[min_depth, max_depth]``.
Monodepth2 reads ``s`` as a disparity instead (``disp_to_depth``), which puts most of the sigmoid's range on near
depths: trained with SGD from scratch it saturated at ``max_depth`` (zero gradient) in our tests; the geometric
mapping spreads the range evenly over log depth, where the scale-invariant loss measures errors. In training mode the network returns the depths of every scale, finest
(input resolution) first; in eval mode the finest only, ``(B, 1, H, W)`` in metres.

Losses, over valid pixels only (ground truth > 0), each scale's prediction upsampled to the ground truth's size and
the scales averaged (:func:`multi_scale_loss`):

* :func:`silog_loss`, the scale-invariant log loss of Eigen et al. 2014: with ``d = log y - log y*`` per pixel,
  ``mean(d^2) - lambda * mean(d)^2`` per image (``lambda = 0.5``, the paper's training value; 1 makes it fully
  scale-invariant), averaged over the images.
* :func:`l1_gradient_loss`: mean absolute error plus the gradient-matching term of Li & Snavely 2018 (MegaDepth)
  and Ranftl et al. 2020 (MiDaS): the mean absolute x and y differences of the residual ``y - y*`` between valid
  neighbours, at 4 scales (every 2^k-th pixel), weighted ``alpha`` (0.5, MiDaS).

References:
    Eigen, Puhrsch & Fergus 2014, "Depth Map Prediction from a Single Image using a Multi-Scale Deep Network".
    Godard et al. 2019, "Digging Into Self-Supervised Monocular Depth Estimation" (Monodepth2).
    Laina et al. 2016, "Deeper Depth Prediction with Fully Convolutional Residual Networks".
    Ranftl et al. 2020, "Towards Robust Monocular Depth Estimation: Mixing Datasets for Zero-shot Cross-dataset
    Transfer" (MiDaS).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import create_model
from ..options import parse_enum

DECODER_WIDTHS = (16, 32, 64, 128, 256)  # Monodepth2's num_ch_dec, finest level first


class DepthLoss(enum.Enum):
    SILOG = "silog"  # scale-invariant log loss (Eigen et al. 2014)
    L1_GRADIENT = "l1_gradient"  # L1 plus gradient matching (MegaDepth, MiDaS)


class ConvELU(nn.Sequential):
    """Monodepth2's ``ConvBlock``: a 3x3 convolution, then ELU; edges padded by replication (Monodepth2 reflects,
    which a 1-pixel map, the deepest one of a small input, cannot)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="replicate"), nn.ELU(inplace=True)
        )


class DepthDecoder(nn.Module):
    """Monodepth2's depth decoder over encoder features of any channels and reductions.

    Args:
        channels: the channels of the encoder features, shallowest (the stem) first.
        widths: decoder widths per level, finest first (as many as there are features).
        num_scales: how many of the finest levels predict a disparity.
    """

    def __init__(self, channels: Sequence[int], widths: Sequence[int] = DECODER_WIDTHS, num_scales: int = 4):
        super().__init__()
        if len(widths) != len(channels):
            raise ValueError(
                f"decoder widths {tuple(widths)} must name one width per encoder feature ({len(channels)})"
            )
        if not 1 <= num_scales <= len(channels):
            raise ValueError(f"num_scales must lie in 1..{len(channels)}, got {num_scales}")
        self.num_scales = num_scales
        n = len(channels)
        self.up = nn.ModuleList(ConvELU(channels[-1] if i == n - 1 else widths[i + 1], widths[i]) for i in range(n))
        self.fuse = nn.ModuleList(ConvELU(widths[i] + (channels[i - 1] if i else 0), widths[i]) for i in range(n))
        self.disp = nn.ModuleList(nn.Conv2d(widths[s], 1, 3, padding=1, padding_mode="replicate")
                                  for s in range(num_scales))  # fmt: skip

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> list[torch.Tensor]:
        """Sigmoid disparities of the ``num_scales`` finest levels, finest (of ``size``) first."""
        x, outputs = features[-1], []
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)
            target = features[i - 1].shape[-2:] if i else size
            x = F.interpolate(x, size=target, mode="nearest")
            x = self.fuse[i](torch.cat([x, features[i - 1]], 1) if i else x)
            if i < self.num_scales:
                outputs.append(torch.sigmoid(self.disp[i](x)))
        return outputs[::-1]


class DepthNet(nn.Module):
    """A resnetkit encoder and a :class:`DepthDecoder`; see :func:`depth_net`.

    Attributes:
        encoder: the :class:`~resnetkit.models.features.FeatureExtractor` (its ``config`` is the variant's).
        decoder: the :class:`DepthDecoder`.
        min_depth: the smallest prediction, in metres.
        max_depth: the largest prediction, in metres.
    """

    def __init__(self, encoder: nn.Module, decoder: DepthDecoder, min_depth: float, max_depth: float):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")
        self.encoder, self.decoder = encoder, decoder
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)

    def to_depth(self, s: torch.Tensor) -> torch.Tensor:
        """A sigmoid output ``s`` in [0, 1] as a depth in [min_depth, max_depth], geometrically: ``min_depth *
        (max_depth / min_depth) ** s``."""
        low, high = math.log(self.min_depth), math.log(self.max_depth)
        return torch.exp(low + (high - low) * s)

    def forward_scales(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Depths ``(B, 1, h, w)`` of every scale, finest (input resolution) first."""
        disparities = self.decoder(self.encoder(images), images.shape[-2:])
        return [self.to_depth(d) for d in disparities]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        scales = self.forward_scales(images)
        return scales if self.training else scales[0]


def depth_net(
    backbone_name: str = "resnet18",
    *,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    num_scales: int = 4,
    decoder_widths: Sequence[int] = DECODER_WIDTHS,
    pretrained_backbone: bool | str = False,
    frozen_stages: int = -1,
    **backbone_options: Any,
) -> DepthNet:
    """A Monodepth2-style depth network on any resnetkit variant (Monodepth2's own: ``"resnet18"``).

    Args:
        backbone_name: a name of ``resnetkit.list_models()`` (2D); its stem and every stage feed the decoder.
        min_depth: the smallest prediction, in metres (Monodepth2: 0.1; NYU: 0.1).
        max_depth: the largest prediction, in metres (Monodepth2: 100; NYU: 10).
        num_scales: output scales (1-5); the losses average over them.
        decoder_widths: one width per level, finest first (Monodepth2's 16, 32, 64, 128, 256).
        pretrained_backbone: classification weights for the encoder, as ``create_model(pretrained=...)`` takes them.
        frozen_stages: stem and first stages frozen (``create_model``'s option).
        **backbone_options: further ``create_model`` overrides (``layers``, ``widths``, ``norm``, ...).

    Example:
        >>> net = depth_net("resnet18", max_depth=10.0).eval()
        >>> net(torch.randn(1, 3, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
    """
    encoder = create_model(backbone_name, features_only=True, pretrained=pretrained_backbone,
                           frozen_stages=frozen_stages, **backbone_options)  # fmt: skip
    if encoder.config.is_video:
        raise ValueError(f"depth_net needs a 2D variant, got the video network {backbone_name}")
    channels = [encoder.feature_info.channels(i) for i in encoder.feature_info.out_indices]
    widths = tuple(decoder_widths)[: len(channels)]
    return DepthNet(encoder, DepthDecoder(channels, widths, num_scales), min_depth, max_depth)


# -- losses ---------------------------------------------------------------------------------------------------------


def silog_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Eigen et al.'s scale-invariant log loss ``mean(d^2) - lam * mean(d)^2``, ``d = log pred - log target`` over
    each image's ``mask`` pixels, averaged over the images that have any. ``(B, 1, H, W)`` each."""
    m = mask.float()
    d = (pred.clamp_min(1e-6).log() - target.clamp_min(1e-6).log()) * m
    n = m.flatten(1).sum(1)
    has = n > 0
    mean_sq, mean = d.pow(2).flatten(1).sum(1) / n.clamp_min(1), d.flatten(1).sum(1) / n.clamp_min(1)
    per_image = mean_sq - lam * mean.pow(2)
    return per_image[has].mean() if has.any() else pred.sum() * 0


def gradient_matching(residual: torch.Tensor, mask: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """MiDaS's gradient-matching term: at every 2^k-th pixel (k < ``scales``), the absolute x and y differences of
    the masked residual between neighbours both valid, summed and divided by the valid pixels; summed over k."""
    total = residual.sum() * 0
    for k in range(scales):
        r, m = residual[..., :: 2**k, :: 2**k], mask[..., :: 2**k, :: 2**k].float()
        r = r * m
        gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * m[..., :, 1:] * m[..., :, :-1]
        gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * m[..., 1:, :] * m[..., :-1, :]
        total = total + (gx.sum() + gy.sum()) / m.sum().clamp_min(1)
    return total


def l1_gradient_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5,
                     scales: int = 4) -> torch.Tensor:  # fmt: skip
    """Mean absolute error over ``mask`` plus ``alpha`` times :func:`gradient_matching` of ``pred - target``."""
    m = mask.float()
    residual = pred - target
    l1 = (residual.abs() * m).sum() / m.sum().clamp_min(1)
    return l1 + alpha * gradient_matching(residual, mask, scales)


LOSSES: dict[DepthLoss, Callable[..., torch.Tensor]] = {DepthLoss.SILOG: silog_loss,
                                                        DepthLoss.L1_GRADIENT: l1_gradient_loss}  # fmt: skip


def multi_scale_loss(
    outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor, loss: DepthLoss | str = DepthLoss.SILOG,
    min_depth: float = 1e-3, max_depth: float | None = None,
) -> torch.Tensor:  # fmt: skip
    """``loss`` of each scale's depth (bilinearly upsampled to the target's size, as Monodepth2 does) against
    ``target`` ``(B, 1, H, W)`` over its valid pixels (above ``min_depth``, below ``max_depth``), averaged over the
    scales."""
    fn = LOSSES[parse_enum(DepthLoss, loss, "loss")]
    mask = target > min_depth
    if max_depth is not None:
        mask = mask & (target < max_depth)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else outputs
    total = 0
    for out in outputs:
        if out.shape[-2:] != target.shape[-2:]:
            out = F.interpolate(out, size=target.shape[-2:], mode="bilinear", align_corners=False)
        total = total + fn(out.float(), target.float(), mask)
    return total / len(outputs)


# -- prediction ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_depth(model: nn.Module, image: torch.Tensor, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> torch.Tensor:  # fmt: skip
    """The depth map ``(H, W)`` in metres of an RGB ``(3, H, W)`` uint8 image, normalised with ``mean``/``std``
    (default: the model record's preprocessing, else ImageNet's)."""
    preprocess = getattr(getattr(model, "record", None), "preprocess", None)
    mean = mean or (preprocess.mean if preprocess else (0.485, 0.456, 0.406))
    std = std or (preprocess.std if preprocess else (0.229, 0.224, 0.225))
    x = image.float().div(255)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    param = next(model.parameters())
    model.eval()
    return model(x[None].to(param.device, param.dtype))[0, 0].float().cpu()


def colorize_depth(depth: torch.Tensor | np.ndarray, cmap: str = "magma") -> np.ndarray:
    """A depth map ``(H, W)`` as ``(H, W, 3)`` uint8 RGB: its inverse (near is bright), normalised from the smallest
    value to the 95th percentile and coloured with ``cmap`` (Monodepth2's pictures). Invalid (<= 0) pixels are black."""
    from matplotlib import colormaps

    depth = np.asarray(depth.cpu() if isinstance(depth, torch.Tensor) else depth, dtype=np.float64)
    valid = depth > 0
    inverse = np.where(valid, 1 / np.where(valid, depth, 1), 0.0)
    low, high = (inverse[valid].min(), np.percentile(inverse[valid], 95)) if valid.any() else (0.0, 1.0)
    scaled = np.clip((inverse - low) / max(high - low, 1e-12), 0, 1)
    rgb = (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)
    rgb[~valid] = 0
    return rgb
