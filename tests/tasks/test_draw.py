"""Pictures of detections and label maps: boxes land on their borders only, low scores stay off, class colours
blend where the class is and nowhere else, the legend names the classes present, files round-trip."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from resnetkit.tasks.draw import default_palette, draw_detections, draw_segmentation, save_image

CLASSES = ["__background__", "cat", "dog"]


def grey(height: int = 64, width: int = 64, value: int = 100) -> torch.Tensor:
    return torch.full((3, height, width), value, dtype=torch.uint8)


def prediction(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> dict:
    return {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels or [1] * len(boxes))}  # fmt: skip


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: where the pictures differ."""
    return (a != b).any(0)


def test_box_changes_its_border_not_far_from_it():
    image = grey()
    out = draw_detections(image, prediction([[10.0, 10.0, 50.0, 50.0]], [0.93]), CLASSES, width=2)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    diff = changed(out, image)
    assert diff[30, 10] and diff[30, 50] and diff[50, 30]  # left, right and bottom edges
    assert not diff[40, 30]  # inside, below the label
    assert not diff[53:].any() and not diff[:, :8].any() and not diff[:8].any()  # away from the box
    assert torch.equal(image, grey())  # the input is left alone


def test_scores_below_the_threshold_are_not_drawn():
    image = grey()
    boxes = [[4.0, 4.0, 24.0, 24.0], [36.0, 36.0, 60.0, 60.0]]
    out = draw_detections(image, prediction(boxes, [0.9, 0.3]), CLASSES, score_threshold=0.5)
    diff = changed(out, image)
    assert diff[14, 4] and not diff[32:].any()
    assert torch.equal(draw_detections(image, prediction(boxes, [0.2, 0.3]), CLASSES), image)


def test_instance_masks_are_blended_inside_only():
    image = grey()
    probabilities = torch.zeros(1, 1, 64, 64)
    probabilities[0, 0, 20:44, 20:44] = 0.8
    detection = {**prediction([[18.0, 18.0, 46.0, 46.0]], [0.9]), "masks": probabilities}
    diff = changed(draw_detections(image, detection, CLASSES, width=1), image)
    assert diff[40, 30] and diff[30, 40]  # inside the mask, clear of the label
    assert not diff[:16].any() and not diff[48:].any()  # outside the mask and its box
    assert diff[20:44, 20:44].all()  # the whole mask
    assert not diff[34:, :17].any() and not diff[34:, 48:].any()  # beside the box, below its label
    with pytest.raises(ValueError, match="do not match"):
        draw_detections(image, {**detection, "masks": probabilities[..., :32]}, CLASSES)


def test_segmentation_blends_class_colours_and_skips_ignored_pixels():
    image = grey(16, 20)
    labels = torch.zeros(16, 20, dtype=torch.long)
    labels[:, 10:] = 2
    labels[:4] = 255
    palette = default_palette(3)
    out = draw_segmentation(image, labels, ["road", "car", "sky"], alpha=0.5, legend=False)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    for k, (y, x) in ((0, (8, 2)), (2, (8, 15))):
        expected = torch.tensor([0.5 * 100 + 0.5 * c for c in palette[k]])
        assert (out[:, y, x].float() - expected).abs().max() <= 1
    assert torch.equal(out[:, :4], image[:, :4])  # ignored: untouched


def test_legend_names_only_the_present_classes():
    palette = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    names = ["a", "b", "c", "d", "e"]
    labels = torch.zeros(48, 40, dtype=torch.long)
    labels[:, 20:] = 2
    out = draw_segmentation(grey(48, 40), labels, names, palette=palette)
    assert out.shape[:2] == (3, 48) and out.shape[2] > 40  # the strip is appended at the right
    strip = out[:, :, 40:].permute(1, 2, 0).reshape(-1, 3)
    colours = {tuple(pixel) for pixel in strip.tolist()}
    assert palette[0] in colours and palette[2] in colours
    assert not {palette[1], palette[3], palette[4]} & colours
    many = labels.clone()
    many[:10] = 3
    assert draw_segmentation(grey(48, 40), many, names, palette=palette).shape[2] >= out.shape[2]


def test_default_palette_is_camvid_then_deterministic():
    assert default_palette(12)[3] == (128, 64, 128)  # CamVid's road
    big = default_palette(30)
    assert big == default_palette(30) and len(set(big)) == 30


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(grey().float(), prediction([[1.0, 1.0, 5.0, 5.0]], [0.9]), CLASSES)
    with pytest.raises(ValueError, match="outside 0..1"):
        draw_segmentation(grey(4, 4), torch.full((4, 4), 7), ["a", "b"])
    with pytest.raises(ValueError, match="picture.bmp"):
        save_image(grey(), tmp_path / "picture.bmp")


def test_save_png_rereads_exactly_and_jpeg_closely(tmp_path):
    image = draw_segmentation(grey(24, 32), torch.arange(24 * 32).remainder(3).view(24, 32), ["a", "b", "c"])
    save_image(image, tmp_path / "out" / "seg.png")
    with Image.open(tmp_path / "out" / "seg.png") as png:
        assert png.format == "PNG"
        assert torch.equal(torch.tensor(list(png.getdata()), dtype=torch.uint8).T.reshape(image.shape), image)
    save_image(image, tmp_path / "seg.JPG")
    with Image.open(tmp_path / "seg.JPG") as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (image.shape[2], image.shape[1])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "seg.JPG", "seg.png"]  # no temporary files left
