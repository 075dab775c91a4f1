"""Action recognition with ResNets: 2D networks with a temporal head, and torchvision's Kinetics-400 video ResNets.

A 2D network sees one frame at a time; what makes it a video model is how the frames are combined.
:class:`TemporalSegmentNetwork` averages (or max-pools) the per-frame logits, the segmental consensus of TSN,
which cannot tell the order of the frames apart. :class:`FrameLSTM` runs an LSTM or a GRU over the per-frame pooled
features (Donahue et al. 2015, LRCN), which can. Both read clips ``(B, C, T, H, W)``, as the 3D networks of
:mod:`resnetkit.models.video` do, and take any 2D variant by name or as a module (with its weights).

torchvision's published Kinetics-400 weights of ``r3d_18``, ``mc3_18`` and ``r2plus1d_18`` are entries here
(``r3d_18.tv_k400``), read from torchvision's own weight enums and fetched through the download, cache and
SHA-256-prefix check of :mod:`resnetkit.tasks.checkpoints`; their keys are renamed to resnetkit's on loading.

References:
    Wang et al. 2016, "Temporal Segment Networks: Towards Good Practices for Deep Action Recognition".
    Donahue et al. 2015, "Long-term Recurrent Convolutional Networks for Visual Recognition and Description".
    Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition".
"""

from __future__ import annotations

import enum
import fnmatch
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import video as tv_video

from ..errors import UnknownNameError
from ..models import Metric, ModelRecord, Preprocess, ResNet, create_model
from ..models.video import from_torchvision_video
from ..options import parse_enum
from ..weights.registry import hash_prefix
from .checkpoints import TaskWeights, fetch_checkpoint


class Consensus(enum.Enum):
    """How TSN combines the frames' logits."""

    AVG = "avg"  # the paper's choice
    MAX = "max"


class Cell(enum.Enum):
    LSTM = "lstm"
    GRU = "gru"


def frames_of(clip: torch.Tensor) -> torch.Tensor:
    """A clip ``(B, C, T, H, W)`` as a batch of frames ``(B * T, C, H, W)``, clip by clip."""
    if clip.dim() != 5:
        raise ValueError(f"expected a clip (B, C, T, H, W), got a tensor of shape {tuple(clip.shape)}")
    b, c, t, h, w = clip.shape
    return clip.transpose(1, 2).reshape(b * t, c, h, w)


def frame_network(backbone: str | ResNet, num_classes: int, **overrides: Any) -> ResNet:
    """A 2D network with ``num_classes`` outputs (0: pooled features): built from a variant name with
    ``create_model``'s ``overrides``, or the given network, its classifier replaced if it has another size."""
    if isinstance(backbone, str):
        backbone = create_model(backbone, num_classes=num_classes, **overrides)
    elif overrides:
        raise ValueError(f"options {sorted(overrides)} apply to a backbone built by name, not to a given network")
    config = getattr(backbone, "config", None)
    if config is None or config.is_video:
        raise ValueError(f"the frame network must be a 2D resnetkit network, got {type(backbone).__name__}"
                         + (f" with conv={config.conv.value!r}" if config is not None else ""))  # fmt: skip
    if backbone.num_classes != num_classes:
        backbone.reset_classifier(num_classes)
    return backbone


class TemporalSegmentNetwork(nn.Module):
    """TSN: the 2D network on every frame, then the consensus of the frames' logits (mean or max over time).

    Args:
        backbone: a 2D variant name or network (with its weights); its classifier gets ``num_classes`` outputs.
        num_classes: actions to recognise.
        consensus: ``"avg"`` (TSN) or ``"max"``.
        **overrides: ``create_model`` options for a backbone given by name (``pretrained=True``, ``drop_rate``).

    Example:
        >>> tsn = TemporalSegmentNetwork("cifar_resnet20", num_classes=5)
        >>> tsn(torch.randn(2, 3, 4, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self, backbone: str | ResNet, num_classes: int, consensus: Consensus | str = Consensus.AVG, **overrides: Any
    ):
        super().__init__()
        self.backbone = frame_network(backbone, num_classes, **overrides)
        self.consensus = parse_enum(Consensus, consensus, "consensus")

    def forward_frames(self, clip: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, num_classes)``."""
        logits = self.backbone(frames_of(clip))  # (B * T, num_classes)
        return logits.view(clip.shape[0], clip.shape[2], -1)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """The frames' pooled features, averaged over time: ``(B, num_features)``."""
        x = self.backbone.forward_head(self.backbone.forward_features(frames_of(clip)), pre_logits=True)
        return x.view(clip.shape[0], clip.shape[2], -1).mean(1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        logits = self.forward_frames(clip)  # (B, T, K)
        if self.consensus is Consensus.MAX:
            return logits.amax(1)
        return logits.mean(1)


class RecurrentHead(nn.Module):
    """An LSTM or GRU over a sequence of feature vectors ``(B, T, in_features)``; the last step's top hidden state
    goes through a linear classifier.

    Args:
        in_features: size of each step's features.
        hidden: hidden size of the recurrent cell.
        num_classes: outputs.
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: stacked recurrent layers.
        dropout: dropout between stacked layers and before the classifier.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_classes: int,
        cell: Cell | str = Cell.LSTM,
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.cell = parse_enum(Cell, cell, "cell")
        rnn = nn.LSTM if self.cell is Cell.LSTM else nn.GRU
        self.rnn = rnn(in_features, hidden, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, hidden)
        return self.fc(self.dropout(out[:, -1]))


class FrameLSTM(nn.Module):
    """The 2D network's pooled features of every frame, in order, through a :class:`RecurrentHead`.

    Args:
        backbone: a 2D variant name (built without a classifier) or network (its classifier is skipped).
        hidden: hidden size of the recurrent cell.
        num_classes: actions to recognise.
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: stacked recurrent layers.
        dropout: see :class:`RecurrentHead`.
        **overrides: ``create_model`` options for a backbone given by name.
    """

    def __init__(
        self,
        backbone: str | ResNet,
        hidden: int,
        num_classes: int,
        cell: Cell | str = Cell.LSTM,
        num_layers: int = 1,
        dropout: float = 0.0,
        **overrides: Any,
    ):
        super().__init__()
        self.backbone = frame_network(backbone, 0, **overrides)
        self.head = RecurrentHead(self.backbone.num_features, hidden, num_classes, cell, num_layers, dropout)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        features = self.backbone(frames_of(clip))  # (B * T, num_features)
        return self.head(features.view(clip.shape[0], clip.shape[2], -1))


# -- torchvision's Kinetics-400 video ResNets ---------------------------------------------------------------------

_SOURCES = [
    (tv_video.R3D_18_Weights.KINETICS400_V1, "r3d_18"),
    (tv_video.MC3_18_Weights.KINETICS400_V1, "mc3_18"),
    (tv_video.R2Plus1D_18_Weights.KINETICS400_V1, "r2plus1d_18"),
]
TAG = "tv_k400"


def _entries() -> dict[str, TaskWeights]:
    entries = {}
    for weights, arch in _SOURCES:
        filename = weights.url.rsplit("/", 1)[-1]
        entry = TaskWeights(
            f"{arch}.{TAG}", "create_model", arch, weights.url, filename, hash_prefix(filename),
            tuple(weights.meta["categories"]), dict(weights.meta["_metrics"]), weights.meta["num_params"],
            weights.meta["_file_size"], weights.meta["recipe"],
        )  # fmt: skip
        entries[entry.name] = entry
    return entries


VIDEO_WEIGHTS: dict[str, TaskWeights] = _entries()
# torchvision's VideoClassification: frames resized to 128x171, centre-cropped to 112, Kinetics statistics.
KINETICS_PREPROCESS = Preprocess(112, 128, mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))


def list_video_weights(pattern: str = "*") -> list[str]:
    """Names of the known video checkpoints matching a shell-style pattern."""
    return sorted(n for n in VIDEO_WEIGHTS if fnmatch.fnmatchcase(n, pattern))


def get_video_weights(name: str) -> TaskWeights:
    """The entry called ``name`` (``r3d_18.tv_k400``, or ``r3d_18`` for it); unknown names list the known ones."""
    try:
        return VIDEO_WEIGHTS[name if "." in name else f"{name}.{TAG}"]
    except KeyError:
        raise UnknownNameError(f"unknown video weights {name!r}; known: {', '.join(list_video_weights())}") from None


def load_video_checkpoint(
    model: ResNet, entry: TaskWeights | str, cache: str | Path | None = None, progress: bool = True
) -> ResNet:
    """Load a torchvision video checkpoint into ``model`` (built to match) strictly, after the download, cache and
    checksum path of :func:`~resnetkit.tasks.fetch_checkpoint`, renaming its keys to resnetkit's; returns it."""
    if isinstance(entry, str):
        entry = get_video_weights(entry)
    path = fetch_checkpoint(entry, cache, progress)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(from_torchvision_video(state), strict=True, assign=True)
    return model


def pretrained_video_model(
    name: str, cache: str | Path | None = None, progress: bool = True, **overrides: Any
) -> ResNet:
    """The video ResNet of a checkpoint with its weights, and a record: Kinetics' classes, torchvision's
    preprocessing and published accuracy (``model.record``).

    Example:
        >>> entry = get_video_weights("r2plus1d_18")
        >>> entry.name, entry.sha256, entry.num_classes
        ('r2plus1d_18.tv_k400', '91a641e6', 400)
    """
    entry = get_video_weights(name)
    with torch.device("meta"):  # every tensor comes from the checkpoint
        model = create_model(entry.backbone, num_classes=entry.num_classes, **overrides)
    load_video_checkpoint(model, entry, cache, progress)
    metrics = tuple(Metric(dataset, "val", m["acc@1"], m["acc@5"]) for dataset, m in entry.metrics.items())
    model.record = ModelRecord(entry.backbone, model.config, KINETICS_PREPROCESS, entry.categories, metrics,
                               entry.recipe, entry.url, extra={"name": entry.name})  # fmt: skip
    return model
