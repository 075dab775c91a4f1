"""via_to_coco, CocoDetection, its transforms and collate, on generated images with rectangle-shaped polygons (which
pycocotools rasterises exactly) in VIA and COCO files, and on the shared balloon zip when present."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision import tv_tensors

from resnetkit.data import CocoDetection, SkippedImageWarning, detection_collate, detection_transform, via_to_coco
from resnetkit.data.decode import ImageDecodeError

from .generated import SHARED, encode, write

BALLOON = SHARED / "balloon.zip"
RECTS = {"a.png": [(4, 5, 12, 15), (20, 2, 38, 10)], "b.png": [], "c.jpg": [(1, 1, 9, 29)]}  # x0, y0, x1, y1
WIDTH, HEIGHT = 40, 30


def rect_region(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"shape_attributes": {"name": "polygon", "all_points_x": [x0, x1, x1, x0], "all_points_y": [y0, y0, y1, y1]},
            "region_attributes": {}}  # fmt: skip


def via(rects: dict[str, list[tuple]] = RECTS) -> dict:
    """A VIA 1.x export: keys are filename + byte size, ``size`` is bytes, regions a dict keyed "0", "1", ..."""
    return {f"{name}123": {"filename": name, "size": 123, "file_attributes": {},
                           "regions": {str(k): rect_region(*r) for k, r in enumerate(boxes)}}
            for name, boxes in rects.items()}  # fmt: skip


def images(rects: dict[str, list[tuple]] = RECTS, folder: str = "balloonish/train/") -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return {f"{folder}{name}": encode(pixels, "JPEG" if name.endswith(".jpg") else "PNG") for name in rects}


def via_zip(tmp_path, rects=RECTS, name="toy", as_zip=True):
    files = images(rects) | {"balloonish/train/via_region_data.json": json.dumps(via(rects)).encode()}
    return write(tmp_path / name, files | {"README.md": b"toy"}, as_zip)


def test_via_to_coco_boxes_from_polygon_extents_and_sizes_given():
    coco = via_to_coco(via(), {name: (WIDTH, HEIGHT) for name in RECTS}, "balloon")
    assert coco["categories"] == [{"id": 1, "name": "balloon"}]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "a.png", 40, 30), (2, "b.png", 40, 30), (3, "c.jpg", 40, 30)]  # fmt: skip
    first, second, third = coco["annotations"]
    assert first["bbox"] == [4, 5, 8, 10] and first["area"] == 80 and first["iscrowd"] == 0 and first["image_id"] == 1
    assert first["segmentation"] == [[4, 5, 12, 5, 12, 15, 4, 15]] and first["category_id"] == 1
    assert (
        second["bbox"] == [20, 2, 18, 8]
        and third["image_id"] == 3
        and [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    )
    rect = {"k": {"filename": "r.png", "regions": [{"shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": 3,
                                                                            "height": 4}}]}}  # fmt: skip
    assert via_to_coco(rect, {"r.png": (10, 10)})["annotations"][0]["bbox"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"'a.png' has no pixel size \(its 'size' is the file's bytes\)"):
        via_to_coco(via())
    circle = {"k": {"filename": "r.png", "regions": {"0": {"shape_attributes": {"name": "circle"}}}}}
    with pytest.raises(ValueError, match="'r.png' is a 'circle'"):
        via_to_coco(circle, {"r.png": (10, 10)})


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
@pytest.mark.parametrize("as_zip", [True, False])
def test_via_dataset_targets_and_masks(tmp_path, as_zip):
    data = CocoDetection(via_zip(tmp_path, as_zip=as_zip), "train")
    assert len(data) == 3 and data.classes == ["__background__", "balloonish"] and data.ids == [1, 2, 3]
    image, target = data[0]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[4, 5, 12, 15], [20, 2, 38, 10]] and target["boxes"].dtype == torch.float32
    assert target["boxes"].format.value == "XYXY" and tuple(target["boxes"].canvas_size) == (HEIGHT, WIDTH)
    assert target["labels"].tolist() == [1, 1] and target["image_id"] == 1 and target["iscrowd"].tolist() == [0, 0]
    assert target["area"].tolist() == [80, 144] and target["masks"].shape == (2, HEIGHT, WIDTH)
    assert (
        target["masks"].dtype == torch.uint8 and target["masks"][0, 5:15, 4:12].all() and target["masks"][0].sum() == 80
    )
    polygon = data.coco.anns[2]["segmentation"]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, HEIGHT, WIDTH)))
    assert torch.equal(target["masks"][1], torch.from_numpy(expected))
    _, empty = data[1]  # an image without annotations is kept
    assert (
        empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,) and empty["masks"].shape == (0, HEIGHT, WIDTH)
    )
    assert "masks" not in CocoDetection(via_zip(tmp_path, name="m"), "train", masks=False)[0][1]
    assert pickle.loads(pickle.dumps(data))[2][1]["boxes"].tolist() == [[1, 1, 9, 29]]
    assert data.coco.getAnnIds(imgIds=[1]) == [1, 2] and CocoDetection(via_zip(tmp_path, name="c"), "train",
                                                                       category="balloon").classes[1] == "balloon"  # fmt: skip


def test_coco_json_layout_crowd_and_category_ids(tmp_path):
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((4, 6), np.uint8), ((2, 24), (3, 31)))))
    rle["counts"] = rle["counts"].decode()
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
            "categories": [{"id": 9, "name": "dog"}, {"id": 3, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 9, "bbox": [4, 5, 8, 10], "area": 80, "iscrowd": 0,
                             "segmentation": [[4, 5, 12, 5, 12, 15, 4, 15]]},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [3, 2, 6, 4], "area": 24, "iscrowd": 1,
                             "segmentation": rle}]}  # fmt: skip
    files = images(folder="val/") | {"annotations/instances_val.json": json.dumps(coco).encode()}
    data = CocoDetection(write(tmp_path / "coco", files, True), "val")
    assert len(data) == 1 and data.classes == ["__background__", "cat", "dog"] and data.ids == [7]
    _, target = data[0]
    assert target["labels"].tolist() == [2, 1] and target["iscrowd"].tolist() == [0, 1] and target["image_id"] == 7
    assert target["masks"][1].sum() == 24 and target["masks"][1, 2:6, 3:9].all()
    (tmp_path / "elsewhere.json").write_text(json.dumps(coco))
    given = CocoDetection(
        write(tmp_path / "only_images", images(folder="val/"), False),
        "val",
        annotation=str(tmp_path / "elsewhere.json"),
    )
    assert given.ids == [7] and given[0][1]["labels"].tolist() == [2, 1]


def test_flip_moves_boxes_and_masks_together(tmp_path):
    data = CocoDetection(via_zip(tmp_path), "train", transform=detection_transform(True))
    flipped = 0
    for seed in range(6):
        torch.manual_seed(seed)
        image, target = data[0]
        assert image.dtype == torch.float32 and image.max() <= 1
        boxes = target["boxes"].tolist()
        flipped += boxes[0] == [WIDTH - 12, 5, WIDTH - 4, 15]
        assert boxes[0] in ([4, 5, 12, 15], [WIDTH - 12, 5, WIDTH - 4, 15])
        for box, mask in zip(boxes, target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
        original = data.load(0)[0].float() / 255
        assert torch.allclose(image, original) or torch.allclose(image, original.flip(-1))
    assert 0 < flipped < 6
    image, target = CocoDetection(via_zip(tmp_path, name="e"), "train", transform=detection_transform(False))[2]
    assert image.dtype == torch.float32 and target["boxes"].tolist() == [[1, 1, 9, 29]]


def assert_boxes_bound_masks(target: dict, size: int) -> None:
    for box, mask in zip(target["boxes"].tolist(), target["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert all(abs(a - b) <= 1 for a, b in zip(box, tight)) and 0 <= min(box) and max(box) <= size


def test_large_scale_jitter_pads_or_crops_to_a_square_with_boxes_and_masks(tmp_path):
    data = CocoDetection(via_zip(tmp_path), "train")
    image, target = data[0]  # 40x30, boxes 8x10 and 18x8
    torch.manual_seed(0)
    small, shrunk = detection_transform(True, flip=False, jitter_size=32, scale_range=(0.5, 0.5))(image, target)
    assert small.shape == (3, 32, 32) and shrunk["masks"].shape == (2, 32, 32)
    sides = (shrunk["boxes"][:, 2:] - shrunk["boxes"][:, :2]).flatten()  # scaled by min(32/40, 32/30) * 0.5 = 0.4
    assert sides.tolist() == pytest.approx([3.2, 4.0, 7.2, 3.2], abs=1e-4)
    padded = (torch.round(small * 255) == torch.tensor([124, 116, 104])[:, None, None]).all(0)
    assert padded.sum() >= 32 * 32 - 16 * 12  # the 16x12 photo sits in a mean-filled square
    assert_boxes_bound_masks(shrunk, 32)
    kept = set()
    for seed in range(8):  # a 26x19 photo, a random 16x16 window of it; boxes outside it are dropped
        torch.manual_seed(seed)
        big, cropped = detection_transform(True, flip=False, jitter_size=16, scale_range=(1.6, 1.6))(image, target)
        assert big.shape == (3, 16, 16) and len(cropped["labels"]) == len(cropped["masks"]) == len(cropped["boxes"])
        assert_boxes_bound_masks(cropped, 16)
        kept.add(len(cropped["boxes"]))
    assert len(kept) > 1


def test_sanitize_drops_a_box_with_its_fields():
    image = torch.zeros(3, 10, 10)
    target = {"boxes": torch.tensor([[1.0, 1, 5, 5], [3, 3, 3, 8]]), "labels": torch.tensor([1, 2]),
              "area": torch.tensor([16.0, 0]), "iscrowd": torch.tensor([0, 1]), "image_id": 4,
              "masks": torch.zeros(2, 10, 10, dtype=torch.uint8)}  # fmt: skip
    target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(10, 10))
    target["masks"] = tv_tensors.Mask(target["masks"])
    _, out = detection_transform(True, flip=False)(tv_tensors.Image(image), target)
    assert out["labels"].tolist() == [1] and out["area"].tolist() == [16] and out["iscrowd"].tolist() == [0]
    assert out["masks"].shape == (1, 10, 10) and out["image_id"] == 4


def test_collate_keeps_lists(tmp_path):
    data = CocoDetection(via_zip(tmp_path), "train", transform=detection_transform(False))
    images, targets = detection_collate([data[0], data[1]])
    assert isinstance(images, list) and len(images) == 2 and [t["image_id"] for t in targets] == [1, 2]


def test_bad_annotations(tmp_path):
    outside = dict(RECTS, **{"a.png": [(4, 5, 12, 15), (30, 2, 45, 10)]})
    with pytest.raises(
        ValueError, match=r"via_region_data.json: annotation 2 of a.png \(40x30\) leaves the image by 5 px"
    ):
        CocoDetection(via_zip(tmp_path, outside, "o"), "train")
    with pytest.warns(SkippedImageWarning, match=r"1 annotation\(s\) clipped to the image, e.g. 2 of a.png"):
        data = CocoDetection(via_zip(tmp_path, outside, "p"), "train", skip_broken=True)
    assert data[0][1]["boxes"].tolist() == [[4, 5, 12, 15], [30, 2, 40, 10]]
    thin = dict(RECTS, **{"c.jpg": [(1, 1, 9, 29), (5, 5, 5.5, 20)]})
    with pytest.warns(SkippedImageWarning, match=r"1 annotation\(s\) dropped, 1 px or thinner, e.g. 4 of c.jpg"):
        data = CocoDetection(via_zip(tmp_path, thin, "t"), "train")
    assert len(data[2][1]["boxes"]) == 1 and len(data.coco.anns) == 3


def test_missing_and_broken_images(tmp_path):
    files = images() | {"balloonish/train/via_region_data.json": json.dumps(via(RECTS | {"gone.png": []})).encode()}
    with pytest.raises(ValueError, match=r"via_region_data.json names gone.png, not in .*m.zip"):
        CocoDetection(write(tmp_path / "m", files, True), "train")
    with pytest.warns(SkippedImageWarning, match=r"leaving out 1 image\(s\) missing or unreadable, e.g. gone.png"):
        data = CocoDetection(write(tmp_path / "n", files, True), "train", skip_broken=True)
    assert len(data) == 3 and len(data.coco.imgs) == 3
    coco = via_to_coco(via(), {n: (WIDTH, HEIGHT) for n in RECTS})
    broken = images(folder="train/") | {"train/b.png": b"garbage", "train.json": json.dumps(coco).encode()}
    source = write(tmp_path / "b", broken, True)
    with pytest.raises(ImageDecodeError, match=r"b.zip:train/b.png: not an image"):
        CocoDetection(source, "train")[1]
    data = CocoDetection(source, "train", skip_broken=True)
    with pytest.warns(SkippedImageWarning, match="train/b.png"):
        assert data[1][1]["image_id"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImageWarning)
        data[1]
    assert data.skipped == 1
    with pytest.raises(ValueError, match=r"no annotations for 'val' \(looked for"):
        CocoDetection(source, "val")


@pytest.mark.skipif(not BALLOON.exists(), reason="shared balloon zip not present")
def test_real_balloon():
    train, val = CocoDetection(BALLOON, "train"), CocoDetection(BALLOON, "val")
    assert (len(train), len(val), len(train.coco.anns), len(val.coco.anns)) == (61, 13, 255, 50)
    assert train.classes == val.classes == ["__background__", "balloon"]
    image, target = val[0]
    n = len(target["boxes"])
    assert n >= 1 and target["masks"].shape == (n, *image.shape[-2:]) and (target["labels"] == 1).all()
    boxes, masks = target["boxes"], target["masks"]
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (masks.flatten(1).sum(1) > 0).all()


def test_dataloader_workers_reopen_the_zip(tmp_path):
    data = CocoDetection(via_zip(tmp_path), "train", transform=detection_transform(True))
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1, collate_fn=detection_collate)
    images, targets = next(iter(loader))
    assert [image.shape for image in images] == [(3, HEIGHT, WIDTH)] * 3 and [len(t["boxes"]) for t in targets] == [
        2,
        0,
        1,
    ]
