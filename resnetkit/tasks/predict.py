"""Predictions of task models on files: a picture and a JSON per image (detection, segmentation, depth), the top-5
actions of a clip (video).

:class:`TaskPredictor` runs a model rebuilt by :func:`~resnetkit.tasks.training.load_task_model` on images of any
size: a segmentation model sees the image resized as in training (shorter side ``base_size``) and normalised, its
logits are resized back, and every pixel of the original gets a class; a detector takes the image as it is
(torchvision's detectors resize and normalise inside) and answers in the original's coordinates. ``annotate``
draws the answer (:mod:`.draw`); ``to_json`` gives what a program reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .depth import colorize_depth, predict_depth
from .draw import draw_detections, draw_segmentation, save_image
from .training import HEADS, load_task_model, segment

SCORE_THRESHOLD = 0.5  # detections drawn and listed


@dataclass
class TaskPredictor:
    model: nn.Module

    @classmethod
    def load(cls, source: str | Path, device: str | torch.device = "cpu") -> TaskPredictor:
        return cls(load_task_model(source).to(device).eval())

    @property
    def kind(self) -> str:
        return HEADS[self.model.record.task["head"]][0]

    @property
    def classes(self) -> list[str]:
        return list(self.model.record.classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(3, H, W)`` uint8 -> segmentation ``{"labels": (H, W)}``, or the detector's ``boxes``, ``scores``,
        ``labels`` (and ``masks``) in the image's coordinates."""
        if self.kind == "depth":
            return {"depth": predict_depth(self.model, image)}
        x = TF.to_dtype(image.to(self.device), torch.float32, scale=True)
        if self.kind == "detection":
            return {k: v.cpu() for k, v in self.model([x])[0].items()}
        record = self.model.record
        x = TF.normalize(x, list(record.preprocess.mean), list(record.preprocess.std))
        logits = segment(self.model, x[None], record.task.get("base_size") or 0)
        return {"labels": logits.argmax(1)[0].cpu()}

    def annotate(self, image: torch.Tensor, prediction: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image with the prediction drawn: boxes, class and score, masks; or a coloured overlay and legend."""
        if self.kind == "detection":
            return draw_detections(image, prediction, self.classes, score_threshold=SCORE_THRESHOLD)
        if self.kind == "depth":
            return torch.from_numpy(colorize_depth(prediction["depth"])).permute(2, 0, 1).contiguous()
        return draw_segmentation(image, prediction["labels"], self.classes)

    def to_json(self, prediction: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Detections above :data:`SCORE_THRESHOLD` (class, score, box ``[x0, y0, x1, y1]``); or each class's share
        of the pixels."""
        if self.kind == "detection":
            keep = prediction["scores"] >= SCORE_THRESHOLD
            return {"detections": [{"class": self.classes[int(label)], "score": round(float(score), 4),
                                    "box": [round(float(v), 1) for v in box]}
                                   for box, score, label in zip(prediction["boxes"][keep], prediction["scores"][keep],
                                                                prediction["labels"][keep])]}  # fmt: skip
        if self.kind == "depth":
            depth = prediction["depth"]
            return {"depth_m": {"min": round(float(depth.min()), 3), "median": round(float(depth.median()), 3),
                                "max": round(float(depth.max()), 3)}}  # fmt: skip
        labels = prediction["labels"]
        counts = torch.bincount(labels.flatten(), minlength=len(self.classes)).tolist()
        return {"pixels": {name: round(n / labels.numel(), 4) for name, n in zip(self.classes, counts) if n}}

    def predict_file(self, path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Predict one image file (a video file or frame folder for a video model); with ``out_dir``, write
        ``<stem>.png`` (annotated: boxes and masks, a class overlay, or the coloured depth map) and ``<stem>.json``
        there. A depth model without ``out_dir`` writes ``<stem>_depth.png`` beside the input."""
        from ..data.folder import ImageDecodeError, decode_image

        path = Path(path)
        if self.kind == "video":
            return self._predict_clip(path, out_dir)
        try:
            image = decode_image(path.read_bytes())
        except (OSError, ImageDecodeError) as err:
            raise ImageDecodeError(f"{path}: {getattr(err, 'strerror', None) or err}") from None
        prediction = self.predict(image)
        result = {"image": str(path), **self.to_json(prediction)}
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            save_image(self.annotate(image, prediction), out / f"{path.stem}.png")
            _write_json(out / f"{path.stem}.json", result)
        elif self.kind == "depth":
            save_image(self.annotate(image, prediction), path.with_name(f"{path.stem}_depth.png"))
        return result

    def _predict_clip(self, path: Path, out_dir: str | Path | None) -> dict[str, Any]:
        from .video_training import predict_actions

        result = {"clip": str(path), "top5": [{"class": name, "probability": round(p, 4)}
                                              for name, p in predict_actions(self.model, path, k=5)]}  # fmt: skip
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            _write_json(Path(out_dir) / f"{path.stem}.json", result)
        return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    from ..io import atomic_write

    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def is_task_file(source: str | Path) -> bool:
    """Whether ``source`` is a model file holding a task model (detection, segmentation, video, depth; reads its
    header only), or the name of a published detector or segmenter checkpoint."""
    from ..weights.format import is_resnetkit_file, read_record
    from .checkpoints import TASK_WEIGHTS

    if str(source) in TASK_WEIGHTS:
        return True
    path = Path(source)
    return path.is_file() and path.suffix == ".safetensors" and is_resnetkit_file(path) and bool(read_record(path).task)
