"""Monocular depth metrics, computed as the literature computes them (Eigen et al. 2014; Monodepth2's evaluation).

For each image, over its valid pixels (ground truth above ``min_depth`` and, when given, below ``max_depth``), with
the prediction clamped to ``[min_depth, max_depth]`` and optionally median-scaled (multiplied by
``median(gt) / median(pred)``, for predictions known only up to scale):

* AbsRel ``mean(|d - d*| / d*)``, SqRel ``mean((d - d*)^2 / d*)``,
* RMSE ``sqrt(mean((d - d*)^2))``, RMSE log ``sqrt(mean((log d - log d*)^2))``,
* delta < 1.25^k: the fraction of pixels with ``max(d / d*, d* / d) < 1.25^k``, k = 1, 2, 3.

The numbers of each image are then averaged over the images (Monodepth2's ``compute_errors`` per image, then the
mean), not pooled over all pixels. ``d*`` is the ground truth, ``d`` the prediction, both in metres.
"""

from __future__ import annotations

import math

import torch

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


def valid_mask(target: torch.Tensor, min_depth: float = 1e-3, max_depth: float | None = None) -> torch.Tensor:
    """Pixels with a measured depth: above ``min_depth`` (0 marks no measurement) and below ``max_depth``."""
    mask = target > min_depth
    return mask & (target < max_depth) if max_depth is not None else mask


def image_errors(
    pred: torch.Tensor,
    target: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
    median_scaling: bool = False,
) -> dict[str, float] | None:
    """The :data:`METRICS` of one image (any shape, the same for both), or ``None`` if it has no valid pixel.

    Example:
        >>> errors = image_errors(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]))
        >>> errors["abs_rel"], errors["delta1"]
        (0.25, 0.5)
    """
    mask = valid_mask(target, min_depth, max_depth)
    if not mask.any():
        return None
    gt, d = target[mask].double(), pred[mask].double()
    if median_scaling:
        d = d * (gt.median() / d.median())
    d = d.clamp(min_depth, max_depth if max_depth is not None else math.inf)
    ratio = torch.maximum(gt / d, d / gt)
    out = {"abs_rel": (d - gt).abs().div(gt).mean(), "sq_rel": (d - gt).pow(2).div(gt).mean(),
           "rmse": (d - gt).pow(2).mean().sqrt(), "rmse_log": (d.log() - gt.log()).pow(2).mean().sqrt(),
           **{f"delta{k}": (ratio < 1.25**k).double().mean() for k in (1, 2, 3)}}  # fmt: skip
    return {k: float(v) for k, v in out.items()}


class DepthMeter:
    """The :data:`METRICS` averaged over images, and the mean batch loss (weighted by the batch's images).

    Args:
        min_depth: the valid range's low end (pixels outside the range are not counted; predictions are clamped).
        max_depth: the valid range's high end.
        median_scaling: scale each prediction by ``median(gt) / median(pred)`` first.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None, median_scaling: bool = False):
        self.min_depth, self.max_depth, self.median_scaling = min_depth, max_depth, median_scaling
        self.sums = dict.fromkeys(METRICS, 0.0)
        self.count = 0  # images with valid pixels
        self.empty = 0  # images without
        self.loss_sum, self.loss_count = 0.0, 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        """Add a batch of predictions and ground truths ``(B, 1, H, W)`` or ``(B, H, W)`` in metres."""
        pred, target = pred.detach().float().cpu(), target.detach().float().cpu()
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
        for p, t in zip(pred, target):
            errors = image_errors(p, t, self.min_depth, self.max_depth, self.median_scaling)
            if errors is None:
                self.empty += 1
                continue
            self.count += 1
            for k, v in errors.items():
                self.sums[k] += v
        if loss is not None:
            self.loss_sum += float(loss) * len(pred)
            self.loss_count += len(pred)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.loss_count if self.loss_count else math.nan

    def summary(self) -> dict[str, float]:
        """``loss`` and the :data:`METRICS` (NaN before any image with valid pixels)."""
        return {"loss": self.loss, **{k: self.sums[k] / self.count if self.count else math.nan for k in METRICS}}

    def details(self) -> dict[str, object]:
        """How the numbers were computed, for ``summary.json``."""
        return {"depth_eval": {"images": self.count, "images_without_valid_pixels": self.empty,
                               "min_depth": self.min_depth, "max_depth": self.max_depth,
                               "median_scaling": self.median_scaling}}  # fmt: skip
