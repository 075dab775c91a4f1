"""Pictures of what a detector or a segmenter saw: boxes, instance masks and label maps drawn on the image.

:func:`draw_detections` blends each kept instance mask in its own colour (torchvision's
``draw_segmentation_masks``, one instance at a time so that overlaps mix rather than turn black), then draws the
boxes with ``"class 0.93"`` labels (``draw_bounding_boxes``) in the same colours. :func:`draw_segmentation`
blends a label map's classes over the image and appends a legend strip (a swatch and the name of each class
present) drawn with PIL. :func:`save_image` writes the result as PNG or JPEG, atomically.

Labels use DejaVu Sans, the TrueType font matplotlib ships (found through ``matplotlib.font_manager``, imported
only here), at a size that grows with the image so that labels stay readable on large photographs; without
matplotlib, PIL's built-in font. Images are uint8 (3, H, W) tensors, as ``torchvision.io.decode_image`` gives them.
"""

from __future__ import annotations

import colorsys
import functools
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..io import atomic_write

Colour = tuple[int, int, int]

# CamVid's 11 classes as SegNet colours them (sky, building, pole, road, pavement, tree, sign, fence, car,
# pedestrian, bicyclist), then void; used for label maps of 12 classes or fewer
CAMVID_PALETTE: list[Colour] = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0),
]  # fmt: skip
IGNORE_INDEX = 255
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def distinct_colours(n: int) -> list[Colour]:
    """``n`` bright colours, the same for the same ``n``: hues stepped by the golden ratio so neighbours differ."""
    hues = ((i * 0.618033988749895) % 1.0 for i in range(n))
    return [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)) for h in hues]  # type: ignore[misc]


def default_palette(num_classes: int) -> list[Colour]:
    """CamVid's colours for 12 classes or fewer, else :func:`distinct_colours`."""
    return CAMVID_PALETTE[:num_classes] if num_classes <= len(CAMVID_PALETTE) else distinct_colours(num_classes)


def draw_detections(image: torch.Tensor, prediction: dict, class_names: list[str], *, score_threshold: float = 0.5,
                    mask_threshold: float = 0.5, width: int = 3) -> torch.Tensor:  # fmt: skip
    """A detector's output drawn on its image: instance masks (if present) blended in distinct colours, then boxes
    labelled ``"class 0.93"`` in the same colours.

    Args:
        image: uint8 (3, H, W).
        prediction: one image's torchvision detector output: ``boxes`` (N, 4) XYXY, ``labels`` (N,), and
            optionally ``scores`` (N,) and ``masks`` (N, 1, H, W) probabilities (or (N, H, W) bool).
        class_names: label k is ``class_names[k]`` (torchvision's, with ``"__background__"`` at 0).
        score_threshold: detections scoring below it are not drawn.
        mask_threshold: a mask pixel belongs to the instance from this probability on.
        width: box line width in pixels.

    Returns:
        uint8 (3, H, W), a new tensor.
    """
    _check_image(image)
    image = image.detach().cpu()
    boxes, labels = prediction["boxes"].detach().cpu().float(), prediction["labels"].detach().cpu()
    scores = prediction.get("scores")
    scores = scores.detach().cpu().float() if scores is not None else torch.ones(len(boxes))
    keep = (scores >= score_threshold).nonzero().flatten()
    keep = keep[scores[keep].argsort()]  # lowest first: the best detection is drawn last, on top
    if not len(keep):
        return image.clone()
    colours = distinct_colours(len(boxes))
    colours = [colours[i] for i in keep.tolist()]
    out = image
    if prediction.get("masks") is not None:
        masks = _instance_masks(prediction["masks"].detach().cpu(), mask_threshold, image.shape[-2:])
        for i, colour in zip(keep.tolist(), colours):
            out = draw_segmentation_masks(out, masks[i], alpha=0.5, colors=colour)
    texts = [f"{_name(class_names, int(labels[i]))} {float(scores[i]):.2f}" for i in keep.tolist()]
    font, size = _font_path(), _font_size(image.shape[-2:], 0.025)
    return draw_bounding_boxes(out, boxes[keep], texts, colors=colours, width=width, font=font,
                               font_size=size if font else None, fill_labels=True,
                               label_colors=[_text_colour(c) for c in colours])  # fmt: skip


def draw_segmentation(image: torch.Tensor, labels: torch.Tensor, class_names: list[str], *, alpha: float = 0.5,
                      palette: list[Colour] | None = None, legend: bool = True) -> torch.Tensor:  # fmt: skip
    """A label map blended over its image, class k in ``palette[k]`` (255, ignore, is not drawn), and a legend
    strip at the right naming the classes present.

    Args:
        image: uint8 (3, H, W).
        labels: (H, W) integer class indices, 255 where ignored (ground truth's void, or ``logits.argmax(0)``).
        class_names: K names, one per class.
        alpha: opacity of the class colours (0 leaves the image, 1 paints flat colours).
        palette: K RGB colours; :func:`default_palette` by default.
        legend: append the legend strip (nothing is appended when no class is present).

    Returns:
        uint8 (3, H, W + legend width), a new tensor.
    """
    _check_image(image)
    image, labels = image.detach().cpu(), labels.detach().cpu()
    palette = default_palette(len(class_names)) if palette is None else list(palette)
    if labels.shape != image.shape[-2:]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match the image's {tuple(image.shape[-2:])}")
    if len(palette) < len(class_names):
        raise ValueError(f"a palette of {len(palette)} colours for {len(class_names)} classes")
    present = [int(k) for k in labels.unique() if int(k) != IGNORE_INDEX]
    if any(k < 0 or k >= len(class_names) for k in present):
        raise ValueError(f"labels {present} outside 0..{len(class_names) - 1} (and {IGNORE_INDEX}, ignored)")
    if not present:
        return image.clone()
    masks = torch.stack([labels == k for k in present])
    out = draw_segmentation_masks(image, masks, alpha=alpha, colors=[tuple(palette[k]) for k in present])
    if not legend:
        return out
    strip = _legend(out.shape[-2], [(class_names[k], tuple(palette[k])) for k in present])
    return torch.cat([out, strip], dim=2)


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 (3, H, W) image as PNG or JPEG (by the suffix of ``path``), atomically."""
    path = Path(path)
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: cannot tell the image format, use a .png, .jpg or .jpeg name")
    _check_image(image)
    picture = to_pil_image(image.detach().cpu())
    options = {"quality": 95} if image_format == "JPEG" else {}
    atomic_write(path, lambda f: picture.save(f, format=image_format, **options))


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3 or len(image) != 3:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a uint8 (3, H, W) image, got {got}")


def _instance_masks(masks: torch.Tensor, threshold: float, size: torch.Size) -> torch.Tensor:
    """(N, H, W) bool from Mask R-CNN's (N, 1, H, W) probabilities (or masks already (N, H, W))."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.shape[-2:] != size:
        raise ValueError(f"masks {tuple(masks.shape[-2:])} do not match the image's {tuple(size)}")
    return masks >= threshold if masks.is_floating_point() else masks.bool()


def _name(class_names: list[str], label: int) -> str:
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def _text_colour(background: Colour) -> Colour:
    """Black on light colours, white on dark ones (ITU-R 601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


@functools.cache
def _font_path() -> str | None:
    """DejaVu Sans as matplotlib ships it, or ``None`` (PIL's built-in font) without matplotlib."""
    try:
        from matplotlib import font_manager  # imported where it draws: the CLI starts without it
    except ImportError:
        return None
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)


def _font_size(size: torch.Size | tuple[int, int], fraction: float) -> int:
    """Pixels for text of ``fraction`` of the image's larger side, at least 10."""
    return max(10, round(fraction * max(size)))


def _font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_path()
    return ImageFont.truetype(path, pixels) if path else ImageFont.load_default(pixels)


def _legend(height: int, entries: list[tuple[str, Colour]]) -> torch.Tensor:
    """uint8 (3, height, W): white strip, a swatch and a name per entry, in as many columns as the height needs."""
    pixels = _font_size((height, 0), 0.04)
    font, row, pad = _font(pixels), round(1.6 * pixels), pixels // 2
    rows = max(1, (height - pad) // row)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    column = pad + pixels + pad + math.ceil(max(measure.textlength(name, font=font) for name, _ in entries)) + pad
    strip = Image.new("RGB", (column * math.ceil(len(entries) / rows), height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for i, (name, colour) in enumerate(entries):
        x, y = pad + (i // rows) * column, pad + (i % rows) * row
        draw.rectangle((x, y, x + pixels - 1, y + pixels - 1), fill=colour, outline=(0, 0, 0))
        draw.text((x + pixels + pad, y + pixels // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
    return pil_to_tensor(strip)
