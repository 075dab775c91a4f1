"""Inflation (Carreira & Zisserman 2017, I3D): the 3D network of a 2D one, its kernels spread over time.

A ``k x k`` kernel repeated over ``t`` frames and divided by ``t`` sums, on a clip of identical frames, to the 2D
kernel on one frame: the "boring video" is a fixed point, and an ImageNet network becomes a video network that
starts where the image network is. Padding time by replicating the end frames (``time_pad="replicate"``) makes this
hold exactly, at the clip's ends too.

References:
    Carreira & Zisserman 2017, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset" (I3D).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Conv, ResNetConfig, TimePad
from .record import ModelRecord
from .registry import create_model
from .resnet import ResNet


def inflate(
    source: ResNet | ModelRecord | str,
    time_kernel: int = 3,
    center: bool = False,
    conv: Conv | str = Conv.D3,
    time_pad: TimePad | str = TimePad.REPLICATE,
) -> ResNet:
    """The 3D network of a 2D one, its kernels inflated over time (Carreira & Zisserman 2017, I3D).

    Each ``k x k`` kernel becomes ``t x k x k``: repeated ``t`` times and divided by ``t`` (or, with ``center``,
    placed in the middle frame with zeros around it); 1x1 kernels, norms and the classifier are copied. The stem's
    7x7/2 convolution strides space only and its max-pool pools each frame; the units stride time with space. With
    the default ``time_pad="replicate"`` a clip of identical frames gives exactly the 2D network's output on one
    frame; ``"zeros"`` (as torchvision's video networks pad) does so away from the clip's ends.

    Args:
        source: a 2D network with its weights (``resnetkit.load_model("resnet50.tv2_in1k")`` for pretrained ones),
            a model record, or a variant name (both: fresh weights).
        time_kernel: temporal size ``t`` of the inflated 3x3s and of the stem's 7x7.
        center: centre-initialise the kernels instead of spreading them over time.
        conv: ``"3d"``, or ``"mc"`` (only the stem and the first stage see time).
        time_pad: how the inflated convolutions pad time.

    Example:
        >>> video = inflate("resnet18")
        >>> video.config.conv.value, tuple(video.layer1[0].conv1.weight.shape)
        ('3d', (64, 64, 3, 3, 3))
    """
    model = _network_2d(source)
    config = model.config.replace(conv=conv, time_kernel=time_kernel, time_pad=time_pad)
    if config.conv not in (Conv.D3, Conv.MC):
        raise ValueError(f"inflate makes conv='3d' or 'mc' networks, not {config.conv.value!r}")
    with torch.device("meta"):  # every tensor comes from the 2D network
        video = type(model).from_config(config)
    target = video.state_dict()
    state = {key: inflate_kernel(value, target[key].shape, center) for key, value in model.state_dict().items()}
    video.load_state_dict(state, strict=True, assign=True)
    if getattr(model, "record", None) is not None:  # a loaded network: keep its provenance, not its measurements
        video.record = model.record.replace(config=config, metrics=(), source=f"inflated from {model.record.arch}")
    return video


def inflate_kernel(weight: torch.Tensor, shape: torch.Size, center: bool = False) -> torch.Tensor:
    """A 2D kernel ``(O, I, k, k)`` as the 3D kernel of ``shape`` ``(O, I, t, k, k)``; anything else unchanged."""
    if weight.dim() != 4 or len(shape) != 5:
        return weight
    t = shape[2]
    if not center:
        return weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    out = weight.new_zeros(shape)
    out[:, :, t // 2] = weight
    return out


def _network_2d(source: ResNet | ModelRecord | str) -> ResNet:
    if isinstance(source, str):
        source = create_model(source)
    elif not isinstance(source, nn.Module):  # a ModelRecord
        if source.edits:
            raise ValueError(f"record of {source.arch} has architecture edits (pruning, factorisation): cannot inflate")
        source = source.build()
    config = getattr(source, "config", None)
    if not isinstance(config, ResNetConfig) or config.is_video:
        kind = f"a {config.conv.value} network" if isinstance(config, ResNetConfig) else type(source).__name__
        raise ValueError(f"inflate needs a 2D resnetkit network, got {kind}")
    return source
