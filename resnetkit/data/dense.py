"""What the dense-prediction datasets share: the files of a folder or zip, label masks decoded as indices, padding.

:class:`Files` lists a dataset's files once and reads them by name, through :class:`~.folder.ImageIndex` (so the
same size limits, zip-bomb checks and per-process zip handles apply, and it pickles for DataLoader workers). A label
mask is decoded by :func:`decode_mask` to its stored values (palette indices, grey levels), never converted to RGB
or grey as a photo would be. :func:`pad_stack` stacks tensors of different sizes, padding bottom/right.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from .decode import FORMATS, MAX_PIXELS, ImageDecodeError, _check_pixels
from .folder import ImageIndex, SkippedImageWarning, _dir_files, _open_zip, _zip_members
from .layout import _hidden, _refuse_unsafe, is_image

IGNORE = 255  # the label of pixels a loss and a metric ignore (torchvision's and mmseg's convention)
MASK_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")  # index-valued modes; RGB colour-coded masks are refused
MAX_SKIPS = 32  # consecutive undecodable samples tolerated before giving up (as in .stream)
T = TypeVar("T")


class Files:
    """The visible files of a directory or ``.zip``, read by their ``/``-separated names.

    Args:
        path: a directory or a ``.zip``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a readable zip, or an unsafe or duplicated member name.
    """

    def __init__(self, path: str | Path):
        source = Path(path).expanduser()
        if not source.exists():
            raise FileNotFoundError(f"no dataset folder or zip at {source}")
        archive = _open_zip(source) if source.is_file() else None
        names = _zip_members(archive, source) if archive else _dir_files(source)
        _refuse_unsafe(names, source)
        names = sorted(name for name in names if not _hidden(name))
        self.index = ImageIndex(source, names, [0] * len(names), [], archive is not None, archive, os.getpid())
        self._position = {name: i for i, name in enumerate(names)}

    @property
    def source(self) -> Path:
        return self.index.source

    @property
    def names(self) -> list[str]:
        return self.index.files

    def __contains__(self, name: str) -> bool:
        return name in self._position

    def name(self, member: str) -> str:
        """``member`` as a person would locate it, e.g. ``data.zip:train/0001.png``."""
        return f"{self.source}:{member}" if self.index.is_zip else str(self.source / member)

    def read(self, member: str) -> bytes:
        """The bytes of ``member`` (size-checked as :meth:`ImageIndex.open` does)."""
        try:
            return self.index.read(self._position[member])
        except (OSError, zipfile.BadZipFile, zlib.error) as err:
            raise ImageDecodeError(f"{self.name(member)}: {err or type(err).__name__}") from err

    def decode(self, member: str) -> torch.Tensor:
        """``member`` as an RGB ``(3, H, W)`` uint8 image.

        Raises:
            ImageDecodeError: one line naming the file.
        """
        try:
            return self.index.decode(self._position[member])
        except ImageDecodeError as err:
            raise ImageDecodeError(f"{self.name(member)}: {err}") from None

    def decode_mask(self, member: str) -> torch.Tensor:
        """``member`` as an ``(H, W)`` int64 label mask (see :func:`decode_mask`); errors name the file."""
        try:
            return decode_mask(self.read(member))
        except ImageDecodeError as err:
            raise ImageDecodeError(f"{self.name(member)}: {err}") from None

    def top_folder(self) -> str | None:
        """The single top-level folder every image lies in (``"CamVid"``), or ``None``."""
        tops = {name.split("/")[0] for name in self.names if "/" in name and is_image(name)}
        return next(iter(tops)) if len(tops) == 1 else None

    def prefixes(self) -> list[str]:
        """Where a dataset's splits may start: the top level, then the single top folder if there is one."""
        top = self.top_folder()
        return [""] + ([f"{top}/"] if top else [])

    def describe(self, prefix: str = "") -> str:
        """The entries of folder ``prefix``, for errors, e.g. ``top level: CamVid/``."""
        depth = prefix.count("/")
        entries = sorted({"/".join(n.split("/")[: depth + 1]) + ("/" if n.count("/") > depth else "")
                          for n in self.names if n.startswith(prefix)})  # fmt: skip
        shown = ", ".join(e[len(prefix):] for e in entries[:8]) + (f", ... ({len(entries)})" if len(entries) > 8 else "")  # fmt: skip
        return f"{prefix or 'top level'}: {shown or 'nothing'}"


def decode_mask(data: bytes) -> torch.Tensor:
    """A label image's stored values as ``(H, W)`` int64: grey levels, palette indices or 16-bit values.

    Raises:
        ImageDecodeError: not an image in an allowed format, too many pixels, or a colour (RGB) image, whose values
            are not labels.
    """
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            _check_pixels(image, MAX_PIXELS)
            if image.mode not in MASK_MODES:
                raise ImageDecodeError(f"a {image.mode} image is not a label mask (expected one of {MASK_MODES}: "
                                       "grey levels or palette indices)")  # fmt: skip
            values = np.array(image)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(f"not an image in an allowed format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(str(err) or type(err).__name__) from err
    return torch.from_numpy(values.astype(np.int64))


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an encoded image as :func:`~.decode.decode_image` returns it (EXIF rotation applied),
    read from the header without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # Orientation: transposed by exif_transpose
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(str(err) or type(err).__name__) from None
    return (height, width) if rotated else (width, height)


def stem(member: str) -> str:
    """The file name without folder and extension."""
    return PurePosixPath(member).stem


def pad_stack(tensors: list[torch.Tensor], fill: float) -> torch.Tensor:
    """Stack ``(..., H, W)`` tensors, padding each bottom/right with ``fill`` to the largest height and width."""
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    plain = [t.as_subclass(torch.Tensor) for t in tensors]
    if all(t.shape[-2:] == (height, width) for t in plain):
        return torch.stack(plain)
    out = plain[0].new_full((len(plain), *plain[0].shape[:-2], height, width), fill)
    for i, t in enumerate(plain):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


class SkipCounter:
    """Replaces an undecodable sample by the next one, warning once per file and counting them in ``skipped``."""

    def __init__(self) -> None:
        self.skipped = 0
        self._reported: set[int] = set()

    def first_good(self, load: Callable[[int], T], i: int, n: int, skip_broken: bool) -> T:
        """``load(j)`` for the first ``j`` from ``i`` on (cyclically) that decodes; errors raise unless skipping."""
        for j in range(i, i + MAX_SKIPS):
            try:
                return load(j % n)
            except ImageDecodeError as err:
                if not skip_broken:
                    raise
                if j % n not in self._reported:
                    self._reported.add(j % n)
                    self.skipped += 1
                    warnings.warn(f"skipping {err}", SkippedImageWarning, 4)
        raise ImageDecodeError(f"{MAX_SKIPS} samples in a row from index {i} on cannot be decoded")
