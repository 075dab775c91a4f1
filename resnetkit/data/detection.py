"""Object detection and instance segmentation data: COCO-format datasets in a folder or ``.zip``, VGG Image
Annotator exports converted to COCO, the v2 transforms and torchvision's detection collate.

A split is ``<split>/`` holding the images, with its annotations in the first of: ``annotations/instances_<split>.json``
(COCO), ``<split>/_annotations.coco.json`` (Roboflow), ``<split>.json``, ``annotations/<split>.json``, or
``<split>/via_region_data.json`` (VIA 1.x, as matterport's balloon set; converted by :func:`via_to_coco`). The
ground truth is kept as pycocotools' ``COCO`` object (:attr:`CocoDetection.coco`), which the COCO metric reads, and
polygons and RLE masks are rasterised by its ``annToMask``.

Targets follow torchvision's detectors: XYXY boxes in pixels, labels 1..K (0 is the background), one uint8 mask
per instance. Annotations are checked when the dataset is built: a box or polygon that leaves the image by more
than :data:`TOLERANCE` pixels is an error naming the file and the annotation (clipped, with a warning, under
``skip_broken``); within that tolerance it is clipped quietly; a box thinner than :data:`MIN_SIZE` after clipping is
dropped with a warning, from the targets and from :attr:`coco` alike, so that the metric sees what training sees.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .dense import Files, SkipCounter, image_size
from .folder import SkippedImageWarning

if TYPE_CHECKING:
    from pycocotools.coco import COCO

TOLERANCE = 1.0  # pixels an annotation may leave the image by before it is called broken (rounding in exports)
MIN_SIZE = 1.0  # boxes whose width or height is at most this, after clipping, are dropped


def via_to_coco(
    via: dict, image_sizes: dict[str, tuple[int, int]] | None = None, category: str = "object"
) -> dict[str, Any]:
    """A VGG Image Annotator 1.x export (or a 2.x project's ``_via_img_metadata``) as a COCO dataset dict.

    Each region becomes an annotation: its polygon as the segmentation, ``bbox`` the polygon's extents (XYWH),
    ``area`` the rasterised polygon's pixel count (as COCO's), ``iscrowd`` 0; ``rect`` regions become 4-point
    polygons. Image ids are 1.. in the export's order; there is one category, id 1.

    Args:
        via: the parsed JSON.
        image_sizes: ``{filename: (width, height)}`` in pixels; VIA's ``size`` is the file's size in bytes, so the
            pixel sizes must come from the images (as :class:`CocoDetection` reads them) unless the entries carry
            ``width``/``height``.
        category: the category's name.

    Raises:
        ValueError: an image without a pixel size, or a region that is not a polygon or rectangle.
    """
    entries = via.get("_via_img_metadata", via)
    images, annotations = [], []
    for image_id, entry in enumerate(entries.values(), 1):
        filename = entry["filename"]
        width, height = _via_size(entry, image_sizes)
        images.append({"id": image_id, "file_name": filename, "width": width, "height": height})
        regions = entry.get("regions") or {}
        for region in regions.values() if isinstance(regions, dict) else regions:
            polygon = _via_polygon(region["shape_attributes"], filename)
            annotations.append(_polygon_annotation(len(annotations) + 1, image_id, polygon, height, width))
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": category}]}


def _via_size(entry: dict, image_sizes: dict[str, tuple[int, int]] | None) -> tuple[int, int]:
    if image_sizes and entry["filename"] in image_sizes:
        return tuple(image_sizes[entry["filename"]])
    if "width" in entry and "height" in entry:
        return int(entry["width"]), int(entry["height"])
    raise ValueError(f"VIA entry {entry['filename']!r} has no pixel size (its 'size' is the file's bytes): "
                     "pass image_sizes={filename: (width, height)}")  # fmt: skip


def _via_polygon(shape: dict, filename: str) -> list[float]:
    """A region's outline as COCO's flat ``[x0, y0, x1, y1, ...]``."""
    if shape.get("name") == "polygon":
        return [float(c) for xy in zip(shape["all_points_x"], shape["all_points_y"]) for c in xy]
    if shape.get("name") == "rect":
        x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    raise ValueError(f"VIA region of {filename!r} is a {shape.get('name')!r}; only polygon and rect are read")


def _polygon_annotation(ann_id: int, image_id: int, polygon: list[float], height: int, width: int) -> dict:
    xs, ys = polygon[0::2], polygon[1::2]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    mask_utils = _pycocotools().mask
    area = float(mask_utils.area(mask_utils.frPyObjects([polygon], height, width))[0])
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": [polygon], "bbox": bbox,
            "area": area, "iscrowd": 0}  # fmt: skip


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection / instance-segmentation dataset in a folder or ``.zip``, decoded on access.

    Images without annotations are kept, with empty targets. Pickles for DataLoader workers.

    Args:
        source: a directory or a ``.zip``.
        split: the split's folder name, e.g. ``"train"``.
        transform: called as ``transform(image, target)``, e.g. :func:`detection_transform`.
        annotation: the annotation file, as a member of ``source`` or a path on disk; default: found (see above).
        masks: rasterise instance masks into the targets.
        skip_broken: clip broken annotations and leave out missing images (each with a warning), and replace an
            undecodable image by the next (counted in :attr:`skipped`), instead of raising.
        category: the class name for a VIA export; default: the dataset's folder (``"balloon"``) or file name.

    Attributes:
        classes: ``["__background__", *category names]``; index = label.
        coco: the ground truth (pycocotools), with the dataset's image ids, after the checks above.
        ids: the image ids, in sample order.

    Raises:
        ValueError: no annotation file, a broken annotation, or a missing image (each named).
    """

    def __init__(
        self,
        source: str | Path,
        split: str,
        transform: Callable[[Any, Any], Any] | None = None,
        *,
        annotation: str | None = None,
        masks: bool = True,
        skip_broken: bool = False,
        category: str | None = None,
    ):
        self.data = Files(source)
        self.transform = transform
        self.masks = masks
        self.skip_broken = skip_broken
        prefix, member, dataset = self._annotations(split, annotation, category)
        self.annotation_file = member
        self.paths = self._image_paths(dataset, prefix, split, member)
        dataset["annotations"] = _checked(dataset, member, skip_broken)
        self.coco = _coco(dataset)
        self.ids = [image["id"] for image in dataset["images"]]
        categories = sorted(dataset["categories"], key=lambda c: c["id"])
        self.classes = ["__background__"] + [c["name"] for c in categories]
        self.label_of = {c["id"]: i for i, c in enumerate(categories, 1)}
        self._skips = SkipCounter()

    @property
    def skipped(self) -> int:
        """Undecodable images met so far (in this process), each replaced by the next."""
        return self._skips.skipped

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        image, target = self._skips.first_good(self.load, i, len(self.ids), self.skip_broken)
        return self.transform(image, target) if self.transform else (image, target)

    def load(self, i: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """Image ``i`` untransformed, and its target (see the module docstring).

        Raises:
            ImageDecodeError: the image cannot be decoded (one line naming it).
            ValueError: its size is not the one the annotations give.
        """
        image_id = self.ids[i]
        info = self.coco.imgs[image_id]
        image = self.data.decode(self.paths[image_id])
        if tuple(image.shape[-2:]) != (info["height"], info["width"]):
            raise ValueError(f"{self.data.name(self.paths[image_id])} is {image.shape[-1]}x{image.shape[-2]} but "
                             f"{self.annotation_file} says {info['width']}x{info['height']}")  # fmt: skip
        return tv_tensors.Image(image), self._target(image_id, info["height"], info["width"])

    def _target(self, image_id: int, height: int, width: int) -> dict[str, Any]:
        anns = self.coco.imgToAnns.get(image_id, [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
            "area": torch.tensor([a["area"] for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([a.get("iscrowd", 0) for a in anns], dtype=torch.int64),
        }
        if self.masks:
            with warnings.catch_warnings():  # pycocotools' Cython calls np.array(copy=False), which numpy 2 deprecates
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                stack = np.stack([self.coco.annToMask(a) for a in anns]) if anns else np.zeros((0, height, width))
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stack.astype(np.uint8)))
        return target

    def _annotations(self, split: str, annotation: str | None, category: str | None) -> tuple[str, str, dict]:
        """The split's folder prefix, the annotation file's name and its content as a COCO dict."""
        if annotation is not None:
            member, text = self._read_annotation(annotation)
            prefix = self._split_prefix(split)
        else:
            prefix, member = self._find_annotation(split)
            text = self.data.read(member)
        try:
            content = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{member} is not JSON: {err}") from None
        if "images" in content and "annotations" in content:
            return prefix, member, content
        entries = content.get("_via_img_metadata", content)
        sizes = self._via_sizes(entries, f"{prefix}{split}/", member)
        name = category or (prefix.rstrip("/") or Path(self.data.source).stem)
        kept = {key: entry for key, entry in entries.items() if entry["filename"] in sizes}
        return prefix, member, via_to_coco(kept, sizes, name)

    def _via_sizes(self, entries: dict, folder: str, member: str) -> dict[str, tuple[int, int]]:
        """``(width, height)`` of each image a VIA export names, read from the file headers in ``folder``; a missing
        or unreadable file is an error naming it, or left out with a warning (skip_broken)."""
        sizes, broken = {}, []
        for filename in dict.fromkeys(entry["filename"] for entry in entries.values()):
            path = folder + filename
            try:
                if path not in self.data:
                    raise ValueError(f"{member} names {filename}, not in {self.data.source} (looked for {path})")
                sizes[filename] = image_size(self.data.read(path))
            except ValueError as err:  # ImageDecodeError included
                if not self.skip_broken:
                    raise ValueError(str(err) if path not in self.data else f"{self.data.name(path)}: {err}") from None
                broken.append(filename)
        if broken:
            warnings.warn(f"{member}: leaving out {len(broken)} image(s) missing or unreadable, e.g. {broken[0]}",
                          SkippedImageWarning, 4)  # fmt: skip
        return sizes

    def _split_prefix(self, split: str) -> str:
        """The folder prefix under which ``<split>/`` lies (the single top folder first, then the top level)."""
        for prefix in self.data.prefixes()[::-1]:
            if any(name.startswith(f"{prefix}{split}/") for name in self.data.names):
                return prefix
        return ""

    def _read_annotation(self, annotation: str) -> tuple[str, bytes]:
        """A member of the dataset, or else a file on disk."""
        if annotation in self.data:
            return annotation, self.data.read(annotation)
        if Path(annotation).is_file():
            return annotation, Path(annotation).read_bytes()
        raise FileNotFoundError(f"no annotation file {annotation} in {self.data.source} nor on disk")

    def _find_annotation(self, split: str) -> tuple[str, str]:
        candidates = (f"annotations/instances_{split}.json", f"{split}/_annotations.coco.json", f"{split}.json",
                      f"annotations/{split}.json", f"{split}/via_region_data.json")  # fmt: skip
        for prefix in self.data.prefixes():
            for candidate in candidates:
                if prefix + candidate in self.data:
                    return prefix, prefix + candidate
        raise ValueError(f"{self.data.source}: no annotations for '{split}' (looked for {', '.join(candidates)}); "
                         f"{self.data.describe(self.data.prefixes()[-1])}")  # fmt: skip

    def _image_paths(self, dataset: dict, prefix: str, split: str, member: str) -> dict[int, str]:
        """Each image id's member name; a missing file is an error, or left out with a warning (skip_broken)."""
        paths, missing = {}, []
        for image in dataset["images"]:
            options = (f"{prefix}{split}/{image['file_name']}", f"{prefix}images/{split}/{image['file_name']}",
                       f"{prefix}{image['file_name']}")  # fmt: skip
            if found := next((p for p in options if p in self.data), None):
                paths[image["id"]] = found
            else:
                missing.append(image)
        if missing and not self.skip_broken:
            raise ValueError(f"{member} names {missing[0]['file_name']}, not in {self.data.source} "
                             f"(looked for {prefix}{split}/{missing[0]['file_name']}; {len(missing)} missing)")  # fmt: skip
        if missing:
            warnings.warn(f"{member}: leaving out {len(missing)} image(s) not in {self.data.source}, e.g. "
                          f"{missing[0]['file_name']}", SkippedImageWarning, 3)  # fmt: skip
            dataset["images"] = [image for image in dataset["images"] if image["id"] in paths]
        return paths


def _checked(dataset: dict, member: str, skip_broken: bool) -> list[dict]:
    """The annotations of kept images, those leaving the image raising or clipped, degenerate ones dropped."""
    images = {image["id"]: image for image in dataset["images"]}
    kept, clipped, dropped = [], [], []
    for ann in dataset["annotations"]:
        if ann["image_id"] not in images:
            continue
        image = images[ann["image_id"]]
        outside = _outside(ann, image["width"], image["height"])
        if outside > TOLERANCE and not skip_broken:
            raise ValueError(f"{member}: annotation {ann.get('id')} of {image['file_name']} "
                             f"({image['width']}x{image['height']}) leaves the image by {outside:g} px")  # fmt: skip
        if outside > TOLERANCE:
            clipped.append(ann)
        ann = _clip(ann, image["width"], image["height"]) if outside > 0 else ann
        if min(ann["bbox"][2:]) <= MIN_SIZE:
            dropped.append(ann)
        else:
            kept.append(ann)
    for anns, what in ((clipped, "clipped to the image"), (dropped, f"dropped, {MIN_SIZE:g} px or thinner")):
        if anns:
            warnings.warn(f"{member}: {len(anns)} annotation(s) {what}, e.g. {anns[0].get('id')} of "
                          f"{images[anns[0]['image_id']]['file_name']}", SkippedImageWarning, 4)  # fmt: skip
    return kept


def _outside(ann: dict, width: int, height: int) -> float:
    """How far (px) the box or polygon reaches beyond the image; 0 when inside."""
    x, y, w, h = ann["bbox"]
    xs, ys = [x, x + w], [y, y + h]
    for polygon in _polygons(ann):
        xs += polygon[0::2]
        ys += polygon[1::2]
    return max(0.0, -min(xs), -min(ys), max(xs) - width, max(ys) - height)


def _polygons(ann: dict) -> Iterable[list[float]]:
    segmentation = ann.get("segmentation")
    return segmentation if isinstance(segmentation, list) else []


def _clip(ann: dict, width: int, height: int) -> dict:
    """A copy with polygons and box clipped to the image."""
    polygons = [[min(max(c, 0.0), width if k % 2 == 0 else height) for k, c in enumerate(p)] for p in _polygons(ann)]
    x, y, w, h = ann["bbox"]
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    clipped = {**ann, "bbox": [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)]}
    return clipped | ({"segmentation": polygons} if polygons else {})


def _coco(dataset: dict) -> COCO:
    """pycocotools' COCO over ``dataset``, without its progress prints."""
    coco = _pycocotools().coco.COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _pycocotools():
    """pycocotools (the ``tasks`` extra), imported where COCO data is read, so the rest of resnetkit runs without it."""
    try:
        import pycocotools.coco
        import pycocotools.mask
    except ImportError:
        raise ImportError("COCO-format and VIA detection data need pycocotools: pip install 'resnetkit[tasks]'") from None
    return pycocotools


def _sanitized(inputs: Any) -> tuple[torch.Tensor, ...]:
    """The per-box tensors :class:`v2.SanitizeBoundingBoxes` must filter along with the boxes."""
    target = inputs[1]
    return target["labels"], target["area"], target["iscrowd"]


def detection_transform(train: bool, *, flip: bool = True, photometric: bool = False, jitter_size: int = 0,
                        scale_range: tuple[float, float] = (0.1, 2.0)) -> v2.Compose:
    """The v2 pipeline on ``(Image, target)``: a float image in [0, 1] and the target moved with it.

    Train: with ``jitter_size``, large-scale jitter as torchvision's detection references and Ghiasi et al. 2021
    ("Simple Copy-Paste", detectors from random initialisation among them) do it: rescale so the image fits a
    ``jitter_size`` square times a factor drawn from ``scale_range``, then a random ``jitter_size`` square crop,
    padded with the ImageNet mean where the image is smaller. Then a random horizontal flip (boxes and masks follow),
    optionally ``RandomPhotometricDistort``, to float, ``SanitizeBoundingBoxes`` (drops boxes emptied by the
    geometry, with their labels, masks, areas, crowd flags). Eval: to float only. Resizing and normalising are left
    to the detector (torchvision's GeneralizedRCNNTransform; multi-scale training is its ``min_size`` tuple).
    """
    steps: list[Any] = []
    if train:
        if jitter_size:
            fill = {tv_tensors.Image: (124, 116, 104), "others": 0}  # the ImageNet mean in uint8; masks 0
            steps += [v2.ScaleJitter((jitter_size, jitter_size), scale_range=scale_range),
                      v2.RandomCrop(jitter_size, pad_if_needed=True, fill=fill)]  # fmt: skip
        steps += [v2.RandomHorizontalFlip()] if flip else []
        steps += [v2.RandomPhotometricDistort()] if photometric else []
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    steps += [v2.SanitizeBoundingBoxes(labels_getter=_sanitized)] if train else []
    return v2.Compose(steps)


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """torchvision's detection convention: a list of images (sizes may differ) and a list of targets."""
    images, targets = zip(*batch)
    return list(images), list(targets)
