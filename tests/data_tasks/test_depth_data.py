"""The RGB + depth reader on generated scenes: 16-bit millimetre PNGs and .npy metres, folders and zips, pairing
errors that name the files, and transforms that keep image and depth aligned."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.data.decode import ImageDecodeError
from resnetkit.data.depth import DepthPairs, depth_collate, depth_transform
from tests.data_tasks.generated import encode

NEAR, FAR = 1.5, 8.0


def depth_scene(rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and its depth in metres: a ground plane receding towards the top (8 m at the horizon, 2 m at
    the bottom) and a box at a random place and depth (1.5-5 m); brightness falls with inverse depth, with a little
    colour noise, so the depth can be read from the image."""
    rows = np.linspace(FAR, 2.0, size)[:, None].repeat(size, 1)
    depth = rows.copy()
    w, h = rng.integers(6, 14, size=2)
    x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
    depth[y0 : y0 + h, x0 : x0 + w] = rng.uniform(NEAR, 5.0)
    level = (1 / depth - 1 / FAR) / (1 / NEAR - 1 / FAR)  # 0 far .. 1 near
    image = 30 + 200 * level[..., None] * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 4, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), depth.astype(np.float32)


def png16(depth: np.ndarray) -> bytes:
    """Depth in metres as a 16-bit PNG in millimetres."""
    out = io.BytesIO()
    Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(out, "PNG")
    return out.getvalue()


def npy(depth: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, depth)
    return out.getvalue()


def depth_zip(path: Path, n_train: int = 8, n_val: int = 4, size: int = 32, seed: int = 0) -> Path:
    """``scenes/{train,val}/rgb/*.png`` with ``depth/*.png`` (train, millimetres) or ``depth/*.npy`` (val, metres)."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                image, depth = depth_scene(rng, size)
                archive.writestr(f"scenes/{split}/rgb/{i:04d}.png", encode(image))
                archive.writestr(f"scenes/{split}/depth/{i:04d}.{'png' if split == 'train' else 'npy'}",
                                 png16(depth) if split == "train" else npy(depth))  # fmt: skip
    return path


def test_png_millimetres_and_npy_metres(tmp_path):
    path = depth_zip(tmp_path / "d.zip", 3, 2)
    train, val = DepthPairs(str(path), "train"), DepthPairs(str(path), "val")
    assert len(train) == 3 and len(val) == 2
    image, depth = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert depth.shape == (1, 32, 32) and depth.dtype == torch.float32
    _, truth = depth_scene(np.random.default_rng(0))
    assert torch.allclose(depth[0], torch.from_numpy(truth), atol=5e-4)  # millimetre rounding
    assert val[0][1].min() >= NEAR - 1e-6 and val[0][1].max() <= FAR + 1e-6


def test_folder_layout_pairing_errors_and_sizes(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "nyu"
    for sub in ("train/rgb", "train/depth"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        image, depth = depth_scene(rng)
        (root / "train/rgb" / f"{i}.jpg").write_bytes(encode(image, "JPEG"))
        (root / "train/depth" / f"{i}.png").write_bytes(png16(depth))
    assert len(DepthPairs(str(root), "train")) == 2
    with pytest.raises(FileNotFoundError, match="no val/rgb/ folder"):
        DepthPairs(str(root), "val")
    (root / "train/depth" / "1.png").write_bytes(png16(np.ones((16, 16), np.float32)))
    with pytest.raises(ImageDecodeError, match=r"1.png: depth \(16, 16\) and image \(32, 32\) differ in size"):
        DepthPairs(str(root), "train")[1]
    (root / "train/rgb" / "2.jpg").write_bytes(encode(depth_scene(rng)[0], "JPEG"))
    with pytest.raises(ValueError, match=r"2.jpg has no depth file of the same name \(1 unpaired"):
        DepthPairs(str(root), "train")
    (root / "train/rgb" / "2.jpg").unlink()
    (root / "train/depth" / "0.png").write_bytes(encode(np.zeros((32, 32, 3), np.uint8)))
    with pytest.raises(ImageDecodeError, match="0.png: a RGB image is not a label mask"):
        DepthPairs(str(root), "train")[0]


def test_transform_keeps_image_and_depth_aligned():
    torch.manual_seed(0)
    depth = torch.arange(1, 40 * 48 + 1, dtype=torch.float32).view(1, 40, 48)
    image = (depth.remainder(256)).to(torch.uint8).expand(3, -1, -1)  # the image repeats the depth's values
    tf = depth_transform(True, 24, (0.0,) * 3, (1 / 255,) * 3)
    for _ in range(5):
        x, d = tf(image, depth)
        assert x.shape == (3, 24, 24) and d.shape == (1, 24, 24)
        assert torch.allclose(x[0], d[0].remainder(256), atol=1e-3)  # same crop, same flip
    small = depth_transform(True, 48, (0.0,) * 3, (1.0,) * 3)(image[:, :20, :20], depth[:, :20, :20])
    assert small[1].shape == (1, 48, 48) and (small[1] == 0).sum() == 48 * 48 - 400  # padded with "no depth"
    resized = depth_transform(False, 0, (0.0,) * 3, (1.0,) * 3, base_size=20)(image, depth)
    assert resized[1].shape == (1, 20, 24) and set(resized[1].unique().tolist()) <= set(depth.unique().tolist())
    images, depths = depth_collate(
        [(torch.zeros(3, 4, 6), torch.ones(1, 4, 6)), (torch.zeros(3, 5, 5), torch.ones(1, 5, 5))]
    )
    assert images.shape == (2, 3, 5, 6) and depths[0, 0, 4].sum() == 0 and depths[1, 0, :, 5].sum() == 0
