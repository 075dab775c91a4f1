"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images").

Read from the official python-format archives, downloaded on demand and verified by MD5. Their batches are Python 2
pickles of dicts holding a numpy array; they are loaded with :class:`_SafeUnpickler`, which resolves only the four
names an array pickle needs (``numpy``'s ``_reconstruct``, ``ndarray`` and ``dtype``, plus ``_codecs.encode`` that
Python 3 writes for bytes in protocol 2; torch's ``weights_only`` loader allows the same). Any other global, e.g.
``os.system``, raises instead of running, so a tampered file cannot execute code. A batch that is not what the
official archive holds (a refused global, a truncated or garbled pickle, the wrong shapes, labels that do not match
the images) is a :class:`CifarFormatError`: one line naming the file, never a traceback, never a silently misaligned
dataset.
"""

from __future__ import annotations

import _codecs
import enum
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import UserError
from ..options import parse_enum
from .download import ChecksumError, DatasetNotFoundError, download_url, extract_tar, file_md5
from .imageset import ImageSet

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

URL_BASE = "https://www.cs.toronto.edu/~kriz/"
"""Where the archives are fetched from; pass ``url_base`` to use a mirror (or a local server in tests)."""

# The official CIFAR statistics in [0, 1] units, for Normalize.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class CifarFormatError(UserError, pickle.UnpicklingError):
    """A CIFAR file that is not what the official archive holds: tampered, truncated or another file.

    Also a ``pickle.UnpicklingError``, what a refused global raised before.
    """


class Cifar(enum.Enum):
    """Which CIFAR."""

    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"  # the 100 fine labels


@dataclass(frozen=True)
class CifarFiles:
    """Names inside one CIFAR archive."""

    title: str
    archive: str
    md5: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str

    def files(self) -> tuple[str, ...]:
        return (self.meta,) + self.train + self.test


CIFAR_FILES = {
    Cifar.CIFAR10: CifarFiles(
        "CIFAR-10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",), meta="batches.meta",
        label_key="labels", names_key="label_names",
    ),
    Cifar.CIFAR100: CifarFiles(
        "CIFAR-100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
        train=("train",), test=("test",), meta="meta", label_key="fine_labels", names_key="fine_label_names",
    ),
}  # fmt: skip


def load_cifar(
    root: str | Path,
    which: Cifar | str = Cifar.CIFAR10,
    *,
    train: bool = True,
    download: bool = True,
    url_base: str = URL_BASE,
    progress: bool = True,
) -> ImageSet:
    """Load the training (50,000) or test (10,000) images of CIFAR-10 or CIFAR-100 as 3x32x32 uint8.

    Args:
        root: folder holding (or receiving) the archive and its extracted folder.
        which: ``Cifar.CIFAR10`` or ``Cifar.CIFAR100`` (or its string value).
        train: the training batches; ``False`` for the test batch.
        download: fetch the archive when neither it nor its folder is under ``root``.
        url_base: address the archive name is appended to.
        progress: show a download progress bar.

    Raises:
        DatasetNotFoundError: missing and not downloadable; the message says which file to place where.
        ChecksumError: the archive in ``root`` or the downloaded one has the wrong MD5.
    """
    spec = CIFAR_FILES[parse_enum(Cifar, which, "which")]
    folder = prepare_cifar(root, spec, download=download, url_base=url_base, progress=progress)
    names = _class_names(folder / spec.meta, spec)
    batches = [_read_batch(folder / name, spec, len(names)) for name in (spec.train if train else spec.test)]
    images = np.concatenate([pixels for pixels, _ in batches]).reshape(-1, 3, 32, 32)  # rows hold R, G, B planes
    labels = np.concatenate([labels for _, labels in batches])
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), names)


def prepare_cifar(
    root: str | Path, spec: CifarFiles, *, download: bool = True, url_base: str = URL_BASE, progress: bool = True
) -> Path:
    """Make sure ``root / spec.folder`` holds every batch: extract an archive found in ``root``, or download it.

    Returns:
        The extracted folder.
    """
    root = Path(root).expanduser()
    folder = root / spec.folder
    if _missing(folder, spec):
        archive = root / spec.archive
        url = f"{url_base.rstrip('/')}/{spec.archive}"
        if download:
            download_url(url, archive, spec.md5, progress=progress)
        elif not archive.is_file():
            raise DatasetNotFoundError(
                f"{spec.title} not found: place {spec.archive} (from {url}, md5 {spec.md5}) in {root}, "
                f"or its extracted {spec.folder}/ there, or pass download=True"
            )
        elif (got := file_md5(archive)) != spec.md5:
            raise ChecksumError(f"{archive} has MD5 {got}, expected {spec.md5}: replace it with the official archive")
        extract_tar(archive, root, spec.folder)
    if missing := _missing(folder, spec):
        raise DatasetNotFoundError(f"{folder} lacks {', '.join(missing)}: delete it and load again to re-extract")
    return folder


def _missing(folder: Path, spec: CifarFiles) -> list[str]:
    return [name for name in spec.files() if not (folder / name).is_file()]


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global (see the module docstring)."""

    ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # name in the original Python 2 files
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # name numpy 2 writes
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # Python 3 protocol-2 bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch") from None


def read_pickle(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR batch or meta file without executing code; byte-string keys become ``str``.

    Raises:
        CifarFormatError: the file is not a pickled dict of plain values and numpy arrays.
    """
    with open(path, "rb") as f:
        try:
            content = _SafeUnpickler(f, encoding="latin1").load()  # latin1: Python 2 str -> str, arrays byte-exact
        except Exception as err:
            # Only the pickle machine and the allowed numpy constructors run, so whatever they raise comes from the
            # file's bytes: mutated copies of a real batch raise UnicodeDecodeError, EOFError, LookupError,
            # TypeError, MemoryError, ... besides UnpicklingError.
            raise CifarFormatError(f"{path} is not a CIFAR pickle ({type(err).__name__}: {_one_line(err)}); "
                                   f"{_REPAIR}") from err  # fmt: skip
    if not isinstance(content, dict):
        raise CifarFormatError(f"{path} holds a {type(content).__name__}, not a dict; {_REPAIR}")
    return {_text(key): value for key, value in content.items()}


_REPAIR = "delete its folder and load again to re-extract the verified archive"


def _class_names(path: Path, spec: CifarFiles) -> list[str]:
    names = read_pickle(path).get(spec.names_key)
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, bytes)) for n in names):
        raise CifarFormatError(f"{path} must hold {spec.names_key!r} as a list of class names; {_REPAIR}")
    return [_text(n) for n in names]


def _read_batch(path: Path, spec: CifarFiles, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, 3072)`` uint8 pixels and ``(N,)`` int64 labels of one batch, checked against each other per batch
    (concatenated, a batch with one label too many and the next with one too few would pass, shifted)."""
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get(spec.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CifarFormatError(f"{path} must hold 'data' as (N, 3072) uint8; {_REPAIR}")
    labels = labels.tolist() if isinstance(labels, np.ndarray) else labels  # the official files hold a list
    if not isinstance(labels, list) or len(labels) != len(data) or not all(type(v) is int for v in labels):
        raise CifarFormatError(f"{path} must hold {spec.label_key!r} as {len(data)} ints, one per image; {_REPAIR}")
    if labels and not 0 <= min(labels) <= max(labels) < num_classes:
        raise CifarFormatError(f"{path} has labels outside [0, {num_classes}); {_REPAIR}")
    return data, np.asarray(labels, dtype=np.int64)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
