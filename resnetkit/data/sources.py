"""What a recipe's ``data.dataset`` may name: a built-in dataset, or the path of an image folder or ``.zip``."""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import UnknownNameError

NAMED_DATASETS = ("digits", "cifar10", "cifar100")  # embedded (digits) or downloaded on first use (CIFAR)


def check_dataset(dataset: str) -> None:
    """Return if ``dataset`` is a built-in name or an existing path, else raise a one-line error; reads no data.

    Raises:
        FileNotFoundError: ``dataset`` looks like a path (``/data/train.zip``, ``images/``) and there is none.
        UnknownNameError: ``dataset`` is a bare name that is not built in; the message names the closest one.
    """
    if dataset in NAMED_DATASETS or Path(dataset).exists():
        return
    if _looks_like_a_path(dataset):
        raise FileNotFoundError(f"dataset {dataset} does not exist (give an image folder or .zip in ImageFolder "
                                "layout)")  # fmt: skip
    close = difflib.get_close_matches(dataset, NAMED_DATASETS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownNameError(f"unknown dataset {dataset!r}; {hint}give {', '.join(NAMED_DATASETS)} or the path of an "
                           "image folder or .zip")  # fmt: skip


def _looks_like_a_path(text: str) -> bool:
    """``a/b``, ``train.zip``, ``./x``, ``~/x``: a path; ``cifar-10``: a (mistyped) name."""
    path = Path(text)
    return len(path.parts) > 1 or bool(path.suffix) or text.startswith((".", "~"))
