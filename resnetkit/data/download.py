"""Fetch and unpack dataset archives with the standard library only (``urllib``, ``hashlib``, ``tarfile``).

A download streams into ``<name>.part`` next to its destination and resumes from it with an HTTP ``Range`` request
when an earlier attempt was cut off (servers that ignore the header simply send the whole file again). The MD5 is
checked before the file is renamed into place, so a file under its final name is always complete and verified.
Extraction goes to a temporary folder first and is renamed into place the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the one-line message says which file to place where."""


class ChecksumError(ValueError):
    """A file's MD5 differs from the published one."""


def file_md5(path: str | Path) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(
    url: str, dest: str | Path, md5: str | None = None, *, timeout: float = 30.0, progress: bool = True
) -> Path:
    """Download ``url`` to ``dest``, unless ``dest`` already exists with the right checksum.

    Args:
        url: an ``http(s)://`` or ``file://`` address.
        dest: final path of the file; its folder is created.
        md5: expected hex digest; ``None`` skips verification.
        timeout: seconds to wait for the server to connect or send data.
        progress: show a tqdm bar.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DatasetNotFoundError: the server could not be reached or refused the file; the message names the file to
            place by hand and where. A partial ``.part`` file is kept for the next attempt to resume.
        ChecksumError: the downloaded bytes have the wrong MD5; the partial file is deleted.
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, timeout, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        checksum = f" (md5 {md5})" if md5 else ""
        raise DatasetNotFoundError(
            _one_line(f"cannot download {url} ({reason}): place {dest.name}{checksum} at {dest}")
        ) from err
    if md5 is not None and (got := file_md5(part)) != md5:
        part.unlink()
        raise ChecksumError(
            f"{url} downloaded with MD5 {got}, expected {md5}; deleted it, retry or place a good copy at {dest}"
        )
    os.replace(part, dest)  # atomic on one filesystem: dest is either absent or complete
    return dest


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming after the bytes already there when the server allows it."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range not satisfiable: the partial file is already whole
            return
        raise
    with response:
        resumed = have and response.status == 206
        total = int(response.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with (
            open(part, "ab" if resumed else "wb") as f,
            tqdm(
                total=total or None,
                initial=have if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=part.stem,
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


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


def _one_line(text: str) -> str:
    return " ".join(text.split())
