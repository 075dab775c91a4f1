"""Image folders in the ImageFolder layout, ``root/<class>/<image>``, as a directory or inside a ``.zip``.

Class names are the first-level folders, sorted alphabetically, and give the label indices (as in torchvision's
``ImageFolder``). In a zip, a single top-level folder holding every class (``train/<class>/<image>``) is skipped.
Images are decoded by Pillow (every common format; ``torchvision.io`` decoding is deprecated since 0.29), in
worker processes for large sets. Grey, palette, RGBA and CMYK images are converted to RGB. A file that cannot be
decoded (truncated, or not an image) is reported by a :class:`SkippedImageWarning` naming it, and skipped.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from .imageset import ImageSet

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
CHUNK = 500  # images per decoding task
PARALLEL_FROM = 4000  # decode in worker processes from this many images on


class SkippedImageWarning(UserWarning):
    """A file in an image folder could not be used; the message names it and says why."""


class ImageDecodeError(ValueError):
    """Pillow could not decode a file."""


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

    def read(self, i: int) -> bytes:
        """The raw bytes of file ``i``."""
        if not self.is_zip:
            return (self.source / self.files[i]).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():  # a forked worker must not share the parent's handle
            self._zip, self._zip_pid = zipfile.ZipFile(self.source), os.getpid()
        return self._zip.read(self.files[i])

    def name(self, i: int) -> str:
        """File ``i`` as a person would locate it, e.g. ``data.zip:train/cat/0001.jpg``."""
        return f"{self.source}:{self.files[i]}" if self.is_zip else str(self.source / self.files[i])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_zip_pid": -1}


def index_images(path: str | Path) -> ImageIndex:
    """List the images of a folder or zip in ImageFolder layout.

    Hidden files (``.DS_Store``, ``__MACOSX/``) are ignored; other files without an image extension are reported
    in one :class:`SkippedImageWarning`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no image was found in ``<class>/`` folders.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no image folder or zip at {source}")
    is_zip = source.is_file()
    archive = zipfile.ZipFile(source) if is_zip else None  # kept open in the index: reading the directory is slow
    names = _zip_members(archive) if archive else _dir_files(source)
    skip = _common_folders(names) if is_zip else 0
    entries = [(name, name.split("/")[skip:]) for name in names]
    entries = [(name, parts) for name, parts in entries if len(parts) >= 2]  # files beside the class folders: none
    images = [(parts, name) for name, parts in entries if _is_image(name)]
    if others := [name for name, _ in entries if not _is_image(name)]:
        warnings.warn(f"skipping {len(others)} non-image file(s) in {source}, e.g. {others[0]}", SkippedImageWarning, 2)
    if not images:
        raise ValueError(f"no images in {source}: expected <class>/<image> with one of {sorted(IMAGE_EXTENSIONS)}")
    images.sort()
    classes = sorted({parts[0] for parts, _ in images})
    label_of = {name: i for i, name in enumerate(classes)}
    files, labels = [name for _, name in images], [label_of[parts[0]] for parts, _ in images]
    return ImageIndex(source, files, labels, classes, is_zip=is_zip, _zip=archive, _zip_pid=os.getpid())


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _dir_files(root: Path) -> list[str]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        prefix = Path(folder).relative_to(root).as_posix()
        files += [n if prefix == "." else f"{prefix}/{n}" for n in names if not n.startswith(".")]
    return files


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")  # Pillow's modes for 16-bit grey (PNG and TIFF)


def _zip_members(archive: zipfile.ZipFile) -> list[str]:
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    return [n for n in names if not any(part.startswith(".") or part == "__MACOSX" for part in n.split("/"))]


def _common_folders(names: list[str]) -> int:
    """How many leading folders every member shares while a class folder still lies below them."""
    split = [name.split("/") for name in names]
    depth = 0
    while split and all(len(p) >= depth + 3 and p[depth] == split[0][depth] for p in split):
        depth += 1
    return depth


def decode_image(data: bytes, grayscale: bool = False) -> torch.Tensor:
    """Decode an encoded image into ``(C, H, W)`` uint8, C = 3 (RGB) or 1 (grey); the first frame of animations.

    Grey, RGBA (alpha dropped), palette, CMYK and 16-bit images are converted; photos are turned upright by their
    EXIF orientation.

    Raises:
        ImageDecodeError: the bytes are not a complete image in a format Pillow reads.
    """
    mode = "L" if grayscale else "RGB"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in SIXTEEN_BIT:
                image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).round().astype(np.uint8))
            if image.mode == "P":
                image = image.convert("RGBA")  # a palette with transparency must pass through RGBA
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.array(image)  # decodes; a copy, writable
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(str(err) or type(err).__name__) from err
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)).permute(2, 0, 1)


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
            image = decode_image(_worker_index.read(i), grayscale)
        except (ImageDecodeError, OSError, zipfile.BadZipFile) as err:
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
