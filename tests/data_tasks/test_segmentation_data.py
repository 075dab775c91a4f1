"""SegmentationDataset, its transforms and collate, on generated PNG/JPEG pairs (whose mask is a function of the
pixel colour, so alignment survives every transform visibly) and on the shared CamVid zip when present."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from resnetkit.data import (
    IGNORE,
    SegmentationDataset,
    SkippedImageWarning,
    segmentation_collate,
    segmentation_transform,
)
from resnetkit.data.decode import ImageDecodeError

from .generated import SHARED, encode, write

COLOURS = np.array([[20, 200, 100], [120, 40, 220], [230, 160, 10], [250, 250, 250]], np.uint8)  # label 3 = void
CAMVID = SHARED / "camvid-trainval.zip"


def labels(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    """Labels 0..3 in 4x4 blocks (so rescaling keeps most pixels inside one block)."""
    blocks = np.random.default_rng(seed).integers(0, 4, (height // 4, width // 4), dtype=np.uint8)
    return blocks.repeat(4, 0).repeat(4, 1)


def segnet_files(split: str = "train", n: int = 3, top: str = "Toy/") -> dict[str, bytes]:
    files = {}
    for i in range(n):
        label = labels(i)
        files[f"{top}{split}/f{i}.png"] = encode(COLOURS[label])  # PNG: colours exact
        files[f"{top}{split}annot/f{i}.png"] = encode(label)
    return files


def colour_labels(image: torch.Tensor) -> torch.Tensor:
    """The label whose colour is nearest each pixel of a float image in [0, 1] (mean 0, std 1); black = IGNORE."""
    palette = torch.cat([torch.tensor(COLOURS, dtype=torch.float32) / 255, torch.zeros(1, 3)])
    distance = ((image.permute(1, 2, 0)[..., None, :] - palette) ** 2).sum(-1)
    nearest = distance.argmin(-1)
    return torch.where(nearest >= 3, IGNORE, nearest)  # void (3) was remapped to IGNORE, padding is black


@pytest.mark.parametrize("as_zip", [False, True])
def test_segnet_layout_labels_and_ignore_remap(tmp_path, as_zip):
    source = write(tmp_path / "toy", segnet_files() | segnet_files("val", 2), as_zip)
    data = SegmentationDataset(source, "train", ignore_index=3, num_classes=3)
    assert len(data) == 3 and len(SegmentationDataset(source, "val")) == 2
    assert data.files[0] == ("Toy/train/f0.png", "Toy/trainannot/f0.png") and data.classes == ["0", "1", "2"]
    image, mask = data[0]
    expected = torch.from_numpy(labels(0)).long()
    expected[expected == 3] = IGNORE
    assert (
        image.dtype == torch.uint8
        and image.shape == (3, 24, 32)
        and torch.equal(image.permute(1, 2, 0), torch.from_numpy(COLOURS[labels(0)]))
    )
    assert mask.dtype == torch.int64 and torch.equal(mask, expected)
    assert pickle.loads(pickle.dumps(data))[1][1].shape == (24, 32)


@pytest.mark.parametrize("shape", ["split_first", "kind_first"])
def test_images_masks_layouts_and_classes_txt(tmp_path, shape):
    files = {}
    for i in range(2):
        image, mask = ("val/images", "val/masks") if shape == "split_first" else ("images/val", "masks/val")
        files[f"{image}/a{i}.jpg"] = encode(COLOURS[labels(i)], "JPEG")
        files[f"{mask}/a{i}.png"] = encode(labels(i))
    files["classes.txt"] = b"sky\nroad\ncar\nvoid\n"
    data = SegmentationDataset(write(tmp_path / "toy", files, True), "val")
    assert len(data) == 2 and data.classes == ["sky", "road", "car", "void"] and data.num_classes == 4
    assert torch.equal(data[1][1], torch.from_numpy(labels(1)).long())


def test_train_transform_keeps_image_and_mask_aligned(tmp_path):
    data = SegmentationDataset(write(tmp_path / "toy", segnet_files(), False), "train", ignore_index=3)
    exact = segmentation_transform(True, (40, 28), (0, 0, 0), (1, 1, 1), scale_range=(1.0, 1.0))
    torch.manual_seed(1)
    for i in range(3):  # crop larger than the image in height: padded image 0 and mask IGNORE, flips on and off
        image, mask = exact(*data.load(i))
        assert image.shape == (3, 40, 28) and image.dtype == torch.float32 and mask.shape == (40, 28)
        assert (mask == IGNORE).sum() >= 16 * 28 and torch.equal(colour_labels(image), mask)
    scaled = segmentation_transform(True, 20, (0, 0, 0), (1, 1, 1), scale_range=(0.5, 2.0))
    for i in range(3):  # bilinear image against nearest mask: they agree away from the block edges
        image, mask = scaled(*data.load(i))
        assert image.shape == (3, 20, 20) and (colour_labels(image) == mask).float().mean() > 0.8


def test_eval_transform_and_base_size(tmp_path):
    data = SegmentationDataset(write(tmp_path / "toy", segnet_files(), False), "train")
    image, mask = segmentation_transform(False, 0, (0.5,) * 3, (0.5,) * 3)(*data.load(0))
    assert image.shape == (3, 24, 32) and torch.allclose(image * 0.5 + 0.5, data.load(0)[0] / 255)
    assert torch.equal(mask, data.load(0)[1])
    image, mask = segmentation_transform(False, 0, (0,) * 3, (1,) * 3, base_size=12)(*data.load(0))
    assert image.shape == (3, 12, 16) and torch.equal(mask, data.load(0)[1][::2, ::2])
    image, mask = segmentation_transform(True, 8, (0,) * 3, (1,) * 3, base_size=12, scale_range=(1, 1))(*data.load(0))
    assert image.shape == (3, 8, 8) and mask.shape == (8, 8)


def test_collate_pads_bottom_right(tmp_path):
    a = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.int64))
    b = (torch.ones(3, 6, 3), torch.ones(6, 3, dtype=torch.int64))
    images, masks = segmentation_collate([a, b])
    assert images.shape == (2, 3, 6, 5) and masks.shape == (2, 6, 5) and masks.dtype == torch.int64
    assert images[0, :, 4:].abs().sum() == 0 and (masks[0, 4:] == IGNORE).all() and (masks[1, :, 3:] == IGNORE).all()
    assert (masks[0, :4] == 0).all() and (masks[1, :, :3] == 1).all()


def test_errors_name_the_files(tmp_path):
    files = segnet_files(top="")
    missing = {k: v for k, v in files.items() if k != "trainannot/f1.png"}
    with pytest.raises(ValueError, match=r"train/f1.png has no mask"):
        SegmentationDataset(write(tmp_path / "a", missing, True), "train")
    with pytest.raises(ValueError, match=r"no 'test' split .*top level: train/, trainannot/"):
        SegmentationDataset(write(tmp_path / "b", files, True), "test")
    with pytest.raises(ValueError, match=r"trainannot/f0.png has label\(s\) \[3\], not classes 0..2"):
        SegmentationDataset(write(tmp_path / "c", files, False), "train", num_classes=3)[0]
    resized = files | {"trainannot/f2.png": encode(labels(2, 24, 28))}
    with pytest.raises(ValueError, match=r"trainannot/f2.png is \(28, 24\) .* its image .*train/f2.png is \(32, 24\)"):
        SegmentationDataset(write(tmp_path / "d", resized, True), "train")[2]
    colour = files | {"trainannot/f0.png": encode(COLOURS[labels(0)])}
    with pytest.raises(ImageDecodeError, match=r"trainannot/f0.png: a RGB image is not a label mask"):
        SegmentationDataset(write(tmp_path / "e", colour, True), "train")[0]


def test_broken_image_raises_or_is_skipped(tmp_path):
    files = segnet_files(top="") | {"train/f1.png": b"not a png"}
    source = write(tmp_path / "toy", files, True)
    with pytest.raises(ImageDecodeError, match=r"toy.zip:train/f1.png: not an image"):
        SegmentationDataset(source, "train")[1]
    data = SegmentationDataset(source, "train", skip_broken=True)
    with pytest.warns(SkippedImageWarning, match="train/f1.png"):
        _, mask = data[1]
    assert torch.equal(mask, data.load(2)[1]) and data.skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImageWarning)  # reported once
        data[1]
    assert data.skipped == 1


@pytest.mark.skipif(not CAMVID.exists(), reason="shared CamVid zip not present")
def test_real_camvid():
    train = SegmentationDataset(CAMVID, "train", ignore_index=11, num_classes=11)
    val = SegmentationDataset(CAMVID, "val", ignore_index=11, num_classes=11)
    assert len(train) == 367 and len(val) == 101
    for image, mask in (train[0], val[100]):
        assert image.shape == (3, 360, 480) and image.dtype == torch.uint8 and mask.shape == (360, 480)
        assert set(mask.unique().tolist()) <= set(range(11)) | {IGNORE}


def test_dataloader_workers_reopen_the_zip(tmp_path):
    data = SegmentationDataset(write(tmp_path / "toy", segnet_files(), True), "train", ignore_index=3)
    data.transform = segmentation_transform(True, 16, (0,) * 3, (1,) * 3)
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1, collate_fn=segmentation_collate)
    images, masks = next(iter(loader))
    assert images.shape == (3, 3, 16, 16) and masks.shape == (3, 16, 16) and masks.dtype == torch.int64
