"""Image folders in the ImageFolder layout, ``root/<class>/<image>``, as a directory or inside a ``.zip``.

Class names are the folders of the class root, sorted alphabetically, and give the label indices (as in
torchvision's ``ImageFolder``); the class root is decided explicitly (``train/`` in ``train/<class>/<image>``, see
:mod:`.layout`), and an ambiguous layout is refused. Images are decoded by Pillow (an allow-list of formats, a pixel
limit; see :mod:`.decode`), in worker processes for large sets. A zip member whose unpacked size is absurd, for
itself or for its packed size, is refused before a byte of it is inflated. A file that cannot be decoded
(truncated, not an image, refused) is reported by a :class:`SkippedImageWarning` naming it, and skipped.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .decode import ImageDecodeError, decode_image
from .imageset import ImageSet
from .layout import find_layout

CHUNK = 500  # images per decoding task
PARALLEL_FROM = 4000  # decode in worker processes from this many images on
MAX_FILE_BYTES = 2**30  # a larger image file is refused unread
MAX_RATIO = 100  # a zip member unpacking to more than this many times its packed size is refused unread, ...
RATIO_FROM = 2**20  # ... if it unpacks to more than this (Apache POI's zip-bomb check uses the same 1:100)
READ_WHOLE = 2**20  # zip members up to this size are read at once (Pillow's many small reads are slow on a zip)


class SkippedImageWarning(UserWarning):
    """A file in an image folder could not be used; the message names it and says why."""


@dataclass
class ImageIndex:
    """The image files of an ImageFolder layout and their labels, read from a directory or a zip.

    Safe to hand to worker processes: each opens its own handle on the zip.

    Args:
        source: the directory or ``.zip`` file.
        files: relative paths (directory) or member names (zip), sorted by class then name.
        labels: class index of each file.
        classes: class names, sorted.
        is_zip: ``source`` is a zip file.
    """

    source: Path
    files: list[str]
    labels: list[int]
    classes: list[str]
    is_zip: bool = False
    _zip: zipfile.ZipFile | None = field(default=None, repr=False, compare=False)
    _zip_pid: int = field(default=-1, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.files)

    def open(self, i: int) -> BinaryIO:
        """File ``i``, open for reading once its size is checked; a large zip member streams as it is read.

        Raises:
            ImageDecodeError: the file is too large, or the member unpacks to too much, is encrypted or compressed
                by a method zipfile lacks.
            OSError: the file cannot be opened.
        """
        if not self.is_zip:
            file = (self.source / self.files[i]).open("rb")
            if (size := os.fstat(file.fileno()).st_size) > MAX_FILE_BYTES:
                file.close()
                raise ImageDecodeError(f"{_mib(size)} is over the limit of {_mib(MAX_FILE_BYTES)}: refused unread")
            return file
        archive = self._archive()
        info = archive.getinfo(self.files[i])
        _check_member(info)
        try:
            member = archive.open(info)
        except (RuntimeError, NotImplementedError) as err:  # encrypted, or an unknown compression method
            raise ImageDecodeError(str(err)) from None
        if info.file_size > READ_WHOLE:
            return member
        with member:
            return io.BytesIO(member.read())

    def read(self, i: int) -> bytes:
        """The raw bytes of file ``i`` (checked as by :meth:`open`)."""
        with self.open(i) as file:
            return file.read()

    def decode(self, i: int, grayscale: bool = False) -> torch.Tensor:
        """File ``i`` as ``(C, H, W)`` uint8 (see :func:`decode_image`).

        Raises:
            ImageDecodeError: the file cannot be read, is refused, or is not an image Pillow decodes (one line).
        """
        try:
            with self.open(i) as file:
                return decode_image(file, grayscale)
        except (OSError, zipfile.BadZipFile, zlib.error) as err:  # a damaged archive, a vanished file
            raise ImageDecodeError(str(err) or type(err).__name__) from err

    def name(self, i: int) -> str:
        """File ``i`` as a person would locate it, e.g. ``data.zip:train/cat/0001.jpg``."""
        return f"{self.source}:{self.files[i]}" if self.is_zip else str(self.source / self.files[i])

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():  # a forked worker must not share the parent's handle
            self._zip, self._zip_pid = zipfile.ZipFile(self.source), os.getpid()
        return self._zip

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_zip_pid": -1}


def _check_member(info: zipfile.ZipInfo) -> None:
    """Refuse a member by the sizes its header states; zipfile never inflates past the stated size."""
    size, packed = info.file_size, max(info.compress_size, 1)
    if size > MAX_FILE_BYTES:
        raise ImageDecodeError(f"unpacks to {_mib(size)}, over the limit of {_mib(MAX_FILE_BYTES)}: refused unread")
    if size > RATIO_FROM and size > MAX_RATIO * packed:
        raise ImageDecodeError(f"unpacks to {_mib(size)}, {size / packed:.0f} times its packed size (the limit is "
                               f"{MAX_RATIO} above {_mib(RATIO_FROM)}): refused unread")  # fmt: skip


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def index_images(path: str | Path, min_classes: int = 2) -> ImageIndex:
    """List the images of a folder or zip in ImageFolder layout.

    The class root is decided by :func:`~resnetkit.data.layout.find_layout`. Hidden files (``.DS_Store``,
    ``__MACOSX/``) are ignored; other files without an image extension are counted in one
    :class:`SkippedImageWarning`.

    Args:
        path: a directory or a ``.zip``.
        min_classes: refuse a dataset with fewer classes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a zip, an unsafe or duplicated member name, no image, an ambiguous layout or too few
            classes.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no image folder or zip at {source}")
    is_zip = source.is_file()
    archive = _open_zip(source) if is_zip else None  # kept open in the index: reading the directory is slow
    layout = find_layout(_zip_members(archive, source) if archive else _dir_files(source), source, min_classes)
    if layout.ignored:
        warnings.warn(f"skipping {len(layout.ignored)} non-image file(s) in {source}, e.g. {layout.ignored[0]}",
                      SkippedImageWarning, 2)  # fmt: skip
    return ImageIndex(source, layout.files, layout.labels, layout.classes, is_zip, archive, os.getpid())


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as err:
        raise ValueError(f"{source} is not a folder or a readable zip: {err}") from None


def _dir_files(root: Path) -> list[str]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = Path(folder).relative_to(root).as_posix()
        files += [n if prefix == "." else f"{prefix}/{n}" for n in names if not n.startswith(".")]
    return files


def _zip_members(archive: zipfile.ZipFile, source: Path) -> list[str]:
    """The archive's file names; a name stored twice is refused (a reader would see only one of the two)."""
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    if len(set(names)) < len(names):
        seen: set[str] = set()
        twice = sorted({n for n in names if n in seen or seen.add(n)})
        raise ValueError(f"{source} stores {len(twice)} member name(s) more than once, e.g. {twice[0]!r}: "
                         "which copy is meant is ambiguous; refusing it")  # fmt: skip
    return names


def iter_decoded(
    index: ImageIndex, *, grayscale: bool = False, size: int | None = None, workers: int = 0, progress: bool = True
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(i, image)`` in order for every file of ``index`` that decodes; warn about and skip the others.

    Args:
        index: the files.
        grayscale: decode to 1 channel instead of 3.
        size: resize to ``size x size`` (bilinear, antialiased); ``None`` keeps each image's size.
        workers: decode in this many worker processes; 0 decodes here.
        progress: show a tqdm bar.
    """
    chunks = [range(start, min(start + CHUNK, len(index))) for start in range(0, len(index), CHUNK)]
    bar = tqdm(total=len(index), desc=f"decoding {index.source.name}", unit="img", disable=not progress)
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(index,)) if workers else None
    _set_worker_index(index)  # for map() here
    try:
        for chunk in (pool.map if pool else map)(
            _decode_chunk, chunks, [grayscale] * len(chunks), [size] * len(chunks)
        ):
            for i, result in chunk:
                if isinstance(result, str):
                    warnings.warn(f"skipping {index.name(i)}: {result}", SkippedImageWarning, 2)
                else:
                    yield i, torch.from_numpy(result)
            bar.update(len(chunk))
    finally:
        bar.close()
        _set_worker_index(None)
        if pool:
            pool.shutdown(cancel_futures=True)


_worker_index: ImageIndex | None = None


def _set_worker_index(index: ImageIndex | None) -> None:
    global _worker_index
    _worker_index = index


def _init_worker(index: ImageIndex) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: no OpenMP pool per process (and none inherited by fork)
    _set_worker_index(index)


def _decode_chunk(indices: range, grayscale: bool, size: int | None) -> list[tuple[int, np.ndarray | str]]:
    """Decode files ``indices`` of the worker's index: numpy arrays (cheap to send back) or error messages."""
    out = []
    for i in indices:
        try:
            image = _worker_index.decode(i, grayscale)
        except ImageDecodeError as err:
            out.append((i, str(err)))
            continue
        if size is not None and image.shape[-2:] != (size, size):
            image = TF.resize(image, [size, size], antialias=True)
        out.append((i, image.numpy()))
    return out


def load_image_folder(
    path: str | Path,
    *,
    size: int | None = None,
    grayscale: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ImageSet:
    """Decode every image of a folder or zip in ImageFolder layout into memory, once.

    Args:
        path: a directory, or a ``.zip`` file (optionally with one top-level folder, e.g. ``train/``).
        size: resize every image to ``size x size`` (bilinear, antialiased); ``None`` requires equal sizes.
        grayscale: 1 channel instead of 3.
        workers: decoding processes; 0 decodes here; ``None``: up to 8 (one per core but one) for 4,000 images
            or more on machines with more than 2 cores, else 0.
        progress: show a tqdm bar while decoding.

    Returns:
        The images, labels from the sorted class folders, and the class names.

    Raises:
        ValueError: images differ in size and ``size`` is ``None``; or no image decoded.
    """
    index = index_images(path)
    if workers is None:  # with 2 cores or fewer, shipping the arrays back costs more than the second core gains
        cores = os.cpu_count() or 1
        workers = min(8, cores - 1) if cores > 2 and len(index) >= PARALLEL_FROM else 0
    kept, images = [], []
    for i, image in iter_decoded(index, grayscale=grayscale, size=size, workers=workers, progress=progress):
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"{index.name(i)} is {tuple(image.shape)}, {index.name(kept[0])} is {tuple(images[0].shape)}: "
                "pass size= to resize every image"
            )
        kept.append(i)
        images.append(image)
    if not images:
        raise ValueError(f"no image in {index.source} could be decoded")
    labels = torch.tensor([index.labels[i] for i in kept], dtype=torch.int64)
    return ImageSet(torch.stack(images), labels, list(index.classes))
