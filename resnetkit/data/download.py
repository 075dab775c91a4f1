"""Unpack dataset archives safely; downloads and checksums are the generic helpers of :mod:`resnetkit.io`.

Extraction goes to a temporary folder first and is renamed into place, so a folder under its final name is whole.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from ..io import ChecksumError, DatasetNotFoundError, download_url, file_digest, file_md5

__all__ = ["ChecksumError", "DatasetNotFoundError", "download_url", "extract_tar", "file_digest", "file_md5"]


def extract_tar(archive: str | Path, root: str | Path, folder: str) -> Path:
    """Unpack the top-level ``folder`` of a tar archive into ``root``, atomically.

    Members are extracted with the ``"data"`` filter (no absolute paths, no ``..``, no links out, no devices).

    Args:
        archive: a ``.tar``, ``.tar.gz`` or ``.tgz`` file.
        root: folder that receives ``folder``.
        folder: the archive's top-level folder to keep.

    Returns:
        ``root / folder``.

    Raises:
        DatasetNotFoundError: the archive has no such folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        with tarfile.open(archive) as tar:
            _extract_safely(tar, tmp)
        source = Path(tmp) / folder
        if not source.is_dir():
            raise DatasetNotFoundError(
                f"{archive} has no top-level folder {folder!r}: replace it with the official archive"
            )
        if not (root / folder).exists():
            os.replace(source, root / folder)
    return root / folder


def _extract_safely(tar: tarfile.TarFile, dest: str) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
        tar.extractall(dest, filter="data")
        return
    base = Path(dest).resolve()
    for member in tar.getmembers():
        inside = base in (base / member.name).resolve().parents
        if not inside or not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing to extract {member.name!r} from {tar.name}")
    tar.extractall(dest)

