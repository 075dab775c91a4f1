"""Labelled video clips for action recognition: a folder (or ``.zip``) of videos or of frame folders, one folder a class.

Layout, one folder per split as UCF101's and Kinetics' split lists are usually laid out::

    root/train/<class>/<clip>.mp4        (or .avi, .mkv, .webm, .mov: decoded by PyAV, FFmpeg's libraries)
    root/train/<class>/<clip>/<frame>.jpg (a clip already cut into frames, in file-name order)
    root/val/<class>/...

The classes are the train split's folders, sorted; a val folder of another name is an error. Videos are decoded with
PyAV (``pip install av``): torchvision 0.29 no longer has ``torchvision.io.read_video``, and PyAV's wheels bundle
FFmpeg, so nothing else needs installing. Only the frames a clip needs are decoded (up to its last one).

Sampling (:func:`sample_indices`) takes ``frames`` (T) indices from a video of N frames:

* ``uniform`` (TSN, Wang et al. 2016): N split into T equal segments, one frame from each (a random one when
  training, the segment's middle in evaluation; clip ``k`` of ``K`` in evaluation shifts within the segments).
* ``dense`` (C3D, R(2+1)D, Tran et al. 2018): T consecutive frames ``frame_stride`` apart, from a random start when
  training, from ``K`` evenly spaced starts in evaluation. Short videos repeat their last frame.

:func:`clip_transform` augments all the frames of a clip alike (one random resized crop, one flip); in evaluation a
video gives ``clips x crops`` views (centre crop, or left/centre/right crops along the longer side), which
the evaluation averages (multi-clip, multi-crop testing).
"""

from __future__ import annotations

import enum
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .decode import ImageDecodeError, decode_image
from .dense import Files, SkipCounter
from .layout import is_image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


class Sampling(enum.Enum):
    UNIFORM = "uniform"  # one frame from each of T segments (TSN)
    DENSE = "dense"  # T consecutive frames, frame_stride apart (3D networks)


def sample_indices(
    num_frames: int,
    frames: int,
    sampling: Sampling,
    frame_stride: int = 1,
    rng: random.Random | None = None,
    clip: int = 0,
    clips: int = 1,
) -> list[int]:
    """``frames`` frame indices of a video of ``num_frames``: random positions with ``rng`` (training), else clip
    ``clip`` of ``clips`` evenly spaced ones (evaluation). Indices past the end repeat the last frame.

    Example:
        >>> sample_indices(16, 4, Sampling.UNIFORM), sample_indices(16, 4, Sampling.DENSE, 2, clip=1, clips=2)
        ([2, 6, 10, 14], [6, 8, 10, 12])
    """
    if num_frames < 1 or frames < 1 or frame_stride < 1:
        raise ValueError(f"need a video with frames and frames, frame_stride >= 1; got {num_frames}, {frames}, "
                         f"{frame_stride}")  # fmt: skip
    if sampling is Sampling.UNIFORM:
        segment = num_frames / frames
        if rng is not None:
            offsets = [rng.random() for _ in range(frames)]
        else:
            offsets = [(clip + 0.5) / clips] * frames
        picked = [int(segment * (i + o)) for i, o in enumerate(offsets)]
    else:
        span = (frames - 1) * frame_stride + 1
        room = max(num_frames - span, 0)
        start = rng.randint(0, room) if rng is not None else (room * (2 * clip + 1)) // (2 * clips)
        picked = [start + i * frame_stride for i in range(frames)]
    return [min(i, num_frames - 1) for i in picked]


def decode_video(data: bytes, indices: Sequence[int] | None = None, name: str = "video") -> list[np.ndarray]:
    """The RGB frames ``(H, W, 3)`` uint8 of an encoded video at ``indices`` (all frames if ``None``), in that order.

    Raises:
        ImageDecodeError: not a video PyAV can decode, or fewer frames than an index asks for; names ``name``.
    """
    import av  # PyAV: an optional dependency of the video tasks

    wanted = None if indices is None else sorted(set(indices))
    decoded: dict[int, np.ndarray] = {}
    seen = 0
    try:
        with av.open(io.BytesIO(data)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                seen = i + 1
                if wanted is None or i in wanted:
                    decoded[i] = frame.to_ndarray(format="rgb24")
                if wanted is not None and i >= wanted[-1]:
                    break
    except (av.FFmpegError, ValueError, IndexError) as err:
        raise ImageDecodeError(f"{name}: not a decodable video ({err})") from None
    if indices is None:
        return [decoded[i] for i in range(len(decoded))]
    missing = [i for i in wanted if i not in decoded]
    if missing:
        raise ImageDecodeError(f"{name}: frame {missing[0]} asked for, the video has {seen}")
    return [decoded[i] for i in indices]


def count_frames(data: bytes, name: str = "video") -> int:
    """The number of frames of an encoded video: the container's count, or decoded to find it."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            if stream.frames > 0:
                return int(stream.frames)
            return sum(1 for _ in container.decode(video=0))
    except (av.FFmpegError, ValueError, IndexError) as err:
        raise ImageDecodeError(f"{name}: not a decodable video ({err})") from None


def clip_transform(
    train: bool,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.25, 1.0),
    flip: bool = True,
    crops: int = 1,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frames ``(T, 3, H, W)`` uint8 -> a normalised clip ``(3, T, size, size)``, the same crop and flip for every
    frame; in evaluation ``(crops, 3, T, size, size)``: the shorter side resized to ``size``, then the centre crop
    (``crops=1``) or the left/top, centre and right/bottom ones (``crops=3``).

    Note that a flip reverses left-right motion: leave ``flip`` off where the direction is the label.
    """
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 (centre) or 3 (both ends and centre), got {crops}")
    normalise = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    if train:
        steps = [v2.RandomResizedCrop(size, scale=scale, antialias=True)] + (
            [v2.RandomHorizontalFlip()] if flip else []
        )
        augment = v2.Compose(steps)
        return lambda frames: normalise(augment(frames)).transpose(0, 1)

    def views(frames: torch.Tensor) -> torch.Tensor:
        frames = TF.resize(frames, size, antialias=True)  # the shorter side: only the longer one has room to move
        h, w = frames.shape[-2:]
        out = []
        for p in [0.5] if crops == 1 else [0.0, 0.5, 1.0]:
            top, left = round((h - size) * p), round((w - size) * p)
            out.append(normalise(frames[..., top : top + size, left : left + size]).transpose(0, 1))
        return torch.stack(out)

    return views


class VideoFolder(Dataset):
    """The clips of one split, sampled and transformed per item.

    Args:
        path: a folder or ``.zip`` with ``<split>/<class>/<clip>.mp4`` videos or ``<split>/<class>/<clip>/*.jpg``
            frame folders (see the module's docstring); a single top folder above the splits is allowed.
        split: ``"train"``, ``"val"``, ...
        frames: T, frames per clip.
        sampling: ``"uniform"`` or ``"dense"``.
        frame_stride: frames between two sampled ones (``dense``).
        train: random temporal sampling (one clip per item); else ``clips`` evenly spaced clips per item.
        transform: frames ``(T, 3, H, W)`` uint8 -> tensor, e.g. :func:`clip_transform`.
        clips: clips per video in evaluation.
        classes: the class names in label order (the val split takes the train split's); default: the folders.
        skip_broken: warn and take the next clip instead of stopping at an undecodable one.

    Items are ``(clip, label)``; in evaluation the clip tensors of the ``clips`` clips are stacked on a new first
    dimension (and their crops flattened into it), so a batch is ``(B, clips * crops, 3, T, H, W)``.
    """

    def __init__(
        self,
        path: str,
        split: str,
        frames: int = 8,
        sampling: Sampling | str = Sampling.DENSE,
        frame_stride: int = 1,
        train: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clips: int = 1,
        classes: Sequence[str] | None = None,
        skip_broken: bool = False,
    ):
        self.files = Files(path)
        self.sampling = Sampling(sampling) if isinstance(sampling, str) else sampling
        self.frames, self.frame_stride, self.train, self.clips = frames, frame_stride, train, clips
        self.transform, self.skip_broken = transform, skip_broken
        prefix = self._split_prefix(split)
        self.samples = _clips_under(self.files.names, prefix)
        found = sorted({c for c, _ in self.samples})
        if not self.samples:
            raise FileNotFoundError(f"{self.files.name(prefix)}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame "
                                    f"folders in <class>/ folders; {self.files.describe(prefix)}")  # fmt: skip
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f"{self.files.name(prefix)}: class folders {unknown} are not among the classes "
                             f"{self.classes}")  # fmt: skip
        self.labels = [self.classes.index(c) for c, _ in self.samples]
        self._counts: dict[int, int] = {}
        self._skips = SkipCounter()

    def _split_prefix(self, split: str) -> str:
        tops = {name.split("/")[0] for name in self.files.names if "/" in name}
        for prefix in [""] + [f"{top}/" for top in tops if len(tops) == 1]:
            if any(name.startswith(f"{prefix}{split}/") for name in self.files.names):
                return f"{prefix}{split}/"
        raise FileNotFoundError(f"{self.files.source}: no {split}/ folder; {self.files.describe()}")

    @property
    def skipped(self) -> int:
        return self._skips.skipped

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        return self._skips.first_good(self._load, i % len(self), len(self), self.skip_broken)

    def _load(self, i: int) -> tuple[torch.Tensor, int]:
        _, members = self.samples[i]
        n = self._num_frames(i)
        if self.train:
            picks = [sample_indices(n, self.frames, self.sampling, self.frame_stride, random.Random(_seed()))]
        else:
            picks = [sample_indices(n, self.frames, self.sampling, self.frame_stride, None, k, self.clips)
                     for k in range(self.clips)]  # fmt: skip
        clips = [self._transform(self._frames(members, indices)) for indices in picks]
        if self.train:
            return clips[0], self.labels[i]
        return torch.cat([c if c.dim() == 5 else c[None] for c in clips]), self.labels[i]

    def _transform(self, frames: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return frames.transpose(0, 1)  # (3, T, H, W) uint8
        return self.transform(frames)

    def _num_frames(self, i: int) -> int:
        if i not in self._counts:
            members = self.samples[i][1]
            self._counts[i] = len(members) if len(members) > 1 or is_image(members[0]) else \
                count_frames(self.files.read(members[0]), self.files.name(members[0]))  # fmt: skip
        return self._counts[i]

    def _frames(self, members: list[str], indices: list[int]) -> torch.Tensor:
        """Frames ``(T, 3, H, W)`` uint8 at ``indices``, from a video or a frame folder."""
        if len(members) == 1 and not is_image(members[0]):
            arrays = decode_video(self.files.read(members[0]), indices, self.files.name(members[0]))
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return torch.stack([self.files.decode(members[j]) for j in indices])


def _seed() -> int:
    """A per-item seed drawn from torch's generator, so DataLoader workers and ``torch.manual_seed`` govern it."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


def _clips_under(names: list[str], prefix: str) -> list[tuple[str, list[str]]]:
    """``(class, members)`` of every clip under ``prefix``: a video file is one member, a frame folder its images
    in name order."""
    videos, folders = [], {}
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = PurePosixPath(name[len(prefix) :]).parts
        if len(parts) == 2 and name.lower().endswith(VIDEO_EXTENSIONS):
            videos.append((parts[0], [name]))
        elif len(parts) == 3 and is_image(name):
            folders.setdefault((parts[0], parts[1]), []).append(name)
    clips = videos + [(cls, sorted(members)) for (cls, _), members in folders.items()]
    return sorted(clips, key=lambda c: c[1][0])


def read_clip_frames(path: str | Path, frames: int, sampling: Sampling | str, frame_stride: int = 1,
                     clips: int = 1) -> list[torch.Tensor]:  # fmt: skip
    """The ``clips`` evenly spaced clips of one video file or frame folder, as evaluation samples them: each
    ``(T, 3, H, W)`` uint8 (for a prediction on a single video, outside a dataset)."""
    path, sampling = Path(path), Sampling(sampling) if isinstance(sampling, str) else sampling
    if path.is_dir():
        names = sorted(p for p in path.iterdir() if is_image(p.name))
        if not names:
            raise FileNotFoundError(f"{path}: no frames (images) in this folder")
        picks = [sample_indices(len(names), frames, sampling, frame_stride, None, k, clips) for k in range(clips)]
        return [torch.stack([decode_image(names[i].read_bytes()) for i in p]) for p in picks]
    data = path.read_bytes()
    n = count_frames(data, str(path))
    picks = [sample_indices(n, frames, sampling, frame_stride, None, k, clips) for k in range(clips)]
    return [torch.from_numpy(np.stack(decode_video(data, p, str(path)))).permute(0, 3, 1, 2) for p in picks]
