"""Small generated datasets for the dense tasks, written as real PNG/JPEG files in folders and zips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """``(H, W, 3)`` or ``(H, W)`` uint8 as an encoded image."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt)
    return out.getvalue()


def write(root: Path, files: dict[str, bytes], as_zip: bool) -> Path:
    """``files`` (member name -> bytes) under the folder ``root``, or in ``root.zip`` (stored)."""
    if as_zip:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return path
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
