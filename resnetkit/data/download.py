"""Fetch files (dataset archives, pretrained weights) and unpack archives with the standard library only.

A download streams into ``<name>.part`` next to its destination and resumes from it with an HTTP ``Range`` request
when an earlier attempt was cut off (servers that ignore the header simply send the whole file again). The checksum
(MD5 or SHA-256) is checked before the file is renamed into place, so a file under its final name is always
complete and verified.
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
    """A file (dataset or weights) is neither on disk nor downloadable; the one-line message says which file to
    place where."""


class ChecksumError(ValueError):
    """A file's checksum differs from the published one."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``"md5"`` or ``"sha256"``), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_md5(path: str | Path) -> str:
    """Hex MD5 digest of a file."""
    return file_digest(path, "md5")


def checksum_mismatch(path: str | Path, md5: str | None = None, sha256: str | None = None) -> str | None:
    """``None`` when ``path`` has the expected digests, else what it has instead ("SHA-256 ab12..., expected ...").

    ``sha256`` may be a prefix of the hex digest (at least 8 digits), as torchvision publishes in its file names.
    """
    for name, algorithm, expected in (("MD5", "md5", md5), ("SHA-256", "sha256", sha256)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if not got.startswith(expected.lower()) or len(expected) < 8:
            return f"{name} {got}, expected {expected}"
    return None


def download_url(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, unless ``dest`` already exists with the right checksum.

    Args:
        url: an ``http(s)://`` or ``file://`` address.
        dest: final path of the file; its folder is created.
        md5: expected hex MD5 digest; ``None`` skips it.
        sha256: expected hex SHA-256 digest or a prefix of it (8 digits or more); ``None`` skips it.
        timeout: seconds to wait for the server to connect or send data.
        progress: show a tqdm bar.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DatasetNotFoundError: the server could not be reached or refused the file; the message names the file to
            place by hand and where. A partial ``.part`` file is kept for the next attempt to resume.
        ChecksumError: the downloaded bytes have the wrong checksum; the partial file is deleted.
    """
    dest = Path(dest)
    if dest.is_file() and checksum_mismatch(dest, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, timeout, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        checksum = f" (md5 {md5})" if md5 else f" (sha256 {sha256})" if sha256 else ""
        raise DatasetNotFoundError(
            _one_line(f"cannot download {url} ({reason}): place {dest.name}{checksum} at {dest}")
        ) from err
    if mismatch := checksum_mismatch(part, md5, sha256):
        part.unlink()
        raise ChecksumError(f"{url} downloaded with {mismatch}; deleted it, retry or place a good copy at {dest}")
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
