"""Where the classes of an ImageFolder layout start, decided from the file names alone.

The class root is the deepest folder that every image lies under and that holds nothing but class folders: in
``train/<class>/<image>`` (a zip's usual shape) it is ``train/``. Files that are not images (a ``README.md`` beside
``train/``) do not move it; they are ignored and counted. A layout that could mean two things is refused with a
one-line error that shows the entries found, rather than trained on a guess: images beside the class folders, or
class folders that hold only folders (``train/`` and ``val/`` side by side, each with the classes inside). So is a
member name that climbs out of the archive (``..``) or is absolute, and a dataset with fewer than two classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
SHOWN = 6  # entries of a folder quoted in an error

Parts = tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """The images of an ImageFolder layout and their classes.

    Args:
        root: the class root, e.g. ``"train/"``; ``""`` for the top level.
        classes: class names, sorted; label ``i`` means ``classes[i]``.
        files: image paths (as given), sorted by class then name.
        labels: class index of each file.
        ignored: files that are not images, in the order given.
    """

    root: str
    classes: list[str]
    files: list[str]
    labels: list[int]
    ignored: list[str]


def find_layout(names: Iterable[str], source: str | Path, min_classes: int = 2) -> Layout:
    """Decide the class root of ``names`` (``/``-separated paths of files) and label each image.

    Hidden files and folders (``.DS_Store``, ``__MACOSX/``) are left out; other files without an image extension
    come back in :attr:`Layout.ignored`.

    Args:
        names: file paths relative to the dataset, e.g. zip member names.
        source: the dataset, named in errors.
        min_classes: refuse fewer classes than this.

    Raises:
        ValueError: an unsafe name, no image, an ambiguous layout or too few classes (one line with the layout).
    """
    names = list(names)
    _refuse_unsafe(names, source)
    visible = [name for name in names if not _hidden(name)]
    images = sorted(tuple(name.split("/")) for name in visible if is_image(name))
    root = _class_root(images)
    if problem := _problem(images, root, min_classes):
        raise ValueError(f"{source}: {problem}; {_describe(visible, root)}")
    classes = sorted({parts[len(root)] for parts in images})
    label_of = {name: i for i, name in enumerate(classes)}
    return Layout(
        root="".join(f"{part}/" for part in root),
        classes=classes,
        files=["/".join(parts) for parts in images],
        labels=[label_of[parts[len(root)]] for parts in images],
        ignored=[name for name in visible if not is_image(name)],
    )


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _refuse_unsafe(names: list[str], source: str | Path) -> None:
    """Refuse names that climb out (``..``), are absolute or have an empty part: never read, never dropped quietly."""
    unsafe = [name for name in names if name.startswith("/") or any(p in ("", "..") for p in name.split("/"))]
    if unsafe:
        raise ValueError(f"{source} has {len(unsafe)} unsafe member name(s) (absolute, empty parts or '..'), "
                         f"e.g. {unsafe[0]!r}: refusing it")  # fmt: skip


def _class_root(images: list[Parts]) -> Parts:
    """Descend while the folder holds no image and one folder, itself holding folders of images (not a class)."""
    root: Parts = ()
    while True:
        depth = len(root)
        folders = {parts[depth] for parts in images if len(parts) > depth + 1}
        loose = any(len(parts) == depth + 1 for parts in images)
        if loose or len(folders) != 1 or not any(len(parts) > depth + 2 for parts in images):
            return root
        root += tuple(folders)


def _problem(images: list[Parts], root: Parts, min_classes: int) -> str | None:
    """What makes the classes below ``root`` unusable, or ``None``."""
    depth = len(root)
    if not images:
        return f"no images, expected <class>/<image> with one of {sorted(IMAGE_EXTENSIONS)}"
    if loose := [parts for parts in images if len(parts) == depth + 1]:
        return f"ambiguous layout, {len(loose)} image(s) outside class folders, e.g. {'/'.join(loose[0])!r}"
    if not any(len(parts) == depth + 2 for parts in images):
        return "ambiguous layout, no class folder holds images itself (splits side by side, e.g. train/ and val/?)"
    if (count := len({parts[depth] for parts in images})) < min_classes:
        return f"{count} class folder(s), a dataset needs at least {min_classes}"
    return None


def _describe(names: list[str], root: Parts) -> str:
    """The entries of folder ``root`` among ``names``, e.g. ``top level: README.md, train/``."""
    depth = len(root)
    split = [tuple(name.split("/")) for name in names]
    entries = sorted(
        {p[depth] + ("/" if len(p) > depth + 1 else "") for p in split if len(p) > depth and p[:depth] == root}
    )
    more = f", ... ({len(entries)} entries)" if len(entries) > SHOWN else ""
    where = f"in {'/'.join(root)}/" if root else "top level"
    return f"{where}: {', '.join(entries[:SHOWN]) or 'nothing'}{more}"
