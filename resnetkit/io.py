"""Generic file helpers, used by every layer: atomic writes, checksums, resumable downloads, one-line messages.

A download streams into ``<name>.part`` next to its destination and resumes from it with an HTTP ``Range`` request
when an earlier attempt was cut off (servers that ignore the header simply send the whole file again). The checksum
(MD5 or SHA-256) is checked before the file is renamed into place, so a file under its final name is always
complete and verified. :func:`atomic_write` gives every other file the same guarantee: a temporary file, flushed,
then renamed over the old one.

This module imports nothing from resnetkit: it is the bottom layer.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

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

    Only ``https://`` addresses with a checksum are fetched, unless the environment variable
    ``RESNETKIT_ALLOW_INSECURE_DOWNLOADS=1`` opts in to plain ``http://`` and ``file://`` addresses and to
    downloads without a checksum (a local mirror, a test server).

    Args:
        url: an ``https://`` address (``http://``, ``file://`` with the opt-in).
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
    _check_source(url, md5 or sha256)
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


INSECURE_OPT_IN = "RESNETKIT_ALLOW_INSECURE_DOWNLOADS"


def _check_source(url: str, checksum: str | None) -> None:
    """Refuse, in one line, what could hand us other bytes unnoticed: no TLS, or nothing to verify them by."""
    if os.environ.get(INSECURE_OPT_IN) == "1":
        return
    if not url.startswith("https://"):
        raise ValueError(f"refusing to download {url}: only https:// addresses, unless {INSECURE_OPT_IN}=1")
    if not checksum:
        raise ValueError(f"refusing to download {url} without a checksum to verify it, unless {INSECURE_OPT_IN}=1")


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
    got = part.stat().st_size
    if total and got < total:  # the server closed the connection early: keep the part, the next call resumes it
        raise ConnectionError(f"the connection dropped after {got:,} of {total:,} bytes; run again to resume")


def atomic_write(path: str | Path, write: Callable[[Any], Any]) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, flush it to disk, then rename it to ``path``:
    an interrupted write never leaves a broken file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # an ordinary file (0666 less the umask, applied by the OS: no process-wide umask juggling), never an existing one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (libraries raise multi-line errors; ours are one line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders the numbers inside names by value: ``resnet18`` before ``resnet101``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _one_line(text: str) -> str:
    return " ".join(text.split())
