"""The model a service runs: a :class:`~resnetkit.workflows.Predictor` (network, classes, the weights' own
preprocessing) and a backend that runs whole batches, eager PyTorch or ONNX Runtime on a file exported at start.

Everything here is synchronous and knows nothing of HTTP: the FastAPI app (:mod:`resnetkit.serve.app`) and the Ray
Serve deployment (:mod:`resnetkit.serve.ray_app`) both call :meth:`Classifier.decode` and
:meth:`Classifier.classify`, so the two services answer the same way.
"""

from __future__ import annotations

import enum
import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..data.decode import ImageDecodeError, decode_image
from ..deploy import Format, export_onnx, load_runner
from ..models import count_macs, count_params
from ..workflows import Predictor

DEFAULT_MAX_PIXELS = 25_000_000  # per uploaded image: a 25-megapixel photo decodes to 75 MB of RGB
CAM_MAX_SIDE = 1024  # a class activation map comes back at most this wide and tall


class Backend(enum.Enum):
    """What runs the network on a batch."""

    TORCH = "torch"  # eager PyTorch, inference mode
    ONNXRUNTIME = "onnxruntime"  # the model exported to ONNX at start (parity-checked), run by ONNX Runtime
    OPENVINO = "openvino"  # the same ONNX file compiled by OpenVINO for the CPU (pip install openvino)


Top = list[tuple[str, float]]  # (class, probability), best first


@dataclass
class Classifier:
    """A classification model ready to serve: decode and preprocess one upload, classify a batch.

    Args:
        predictor: the network, its classes and preprocessing (:meth:`Predictor.load`).
        backend: what runs the batches.
        run: a batch ``(N, C, H, W)`` float32 -> logits ``(N, classes)``.
        max_pixels: uploads with more pixels are refused before decoding.
    """

    predictor: Predictor
    backend: Backend
    run: Callable[[torch.Tensor], torch.Tensor]
    max_pixels: int = DEFAULT_MAX_PIXELS
    _card: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, source: str | Path, backend: Backend | str = Backend.TORCH, max_pixels: int = DEFAULT_MAX_PIXELS,
             workdir: str | Path | None = None) -> Classifier:  # fmt: skip
        """Load a model file or registry name; with ONNX Runtime, export it first (into ``workdir``, default a
        temporary folder) and check the export against eager PyTorch."""
        backend = Backend(backend)
        predictor = Predictor.load(source)
        run: Callable[[torch.Tensor], torch.Tensor] = predictor.model
        if backend is not Backend.TORCH:
            folder = Path(workdir or tempfile.mkdtemp(prefix="resnetkit-serve-"))
            path = folder / f"{predictor.model.record.arch}.onnx"
            size, chans = predictor.preprocess.crop_size, predictor.in_chans
            export_onnx(predictor.model, path, size, inputs=torch.randn(2, chans, size, size))
            run = load_runner(Format.ONNX, path) if backend is Backend.ONNXRUNTIME else _openvino_runner(path)
        return cls(predictor, backend, run, max_pixels)

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    def decode(self, data: bytes) -> torch.Tensor:
        """One encoded image -> the preprocessed ``(C, crop, crop)`` float32 the network takes.

        Raises:
            ImageDecodeError: one line; not an image in an allowed format, truncated, or over ``max_pixels``.
        """
        image = decode_image(data, grayscale=self.predictor.in_chans == 1, max_pixels=self.max_pixels)
        return self.predictor.preprocess(image)

    def classify(self, inputs: Sequence[torch.Tensor], top_k: Sequence[int]) -> list[Top]:
        """Run preprocessed images as one batch; the ``top_k[i]`` best classes of image ``i``."""
        batch = torch.stack(list(inputs))
        with torch.inference_mode():
            probs = self.run(batch).float().softmax(1)
        if not torch.isfinite(probs).all():
            raise FloatingPointError("the model's outputs are not finite (NaN or inf): its weights are broken")
        values, indices = probs.topk(min(max(top_k), len(self.classes)), dim=1)
        names = self.classes
        return [[(names[i], float(p)) for p, i in zip(v[:k].tolist(), ix[:k].tolist())]
                for v, ix, k in zip(values, indices, top_k)]  # fmt: skip

    def classify_encoded(self, images: Sequence[bytes], top_k: Sequence[int]) -> list[Top | ImageDecodeError]:
        """Decode, preprocess and classify encoded images as one batch: per image its top classes, or the
        :class:`ImageDecodeError` that refused it (the others are still classified)."""
        decoded: list[torch.Tensor | ImageDecodeError] = []
        for data in images:
            try:
                decoded.append(self.decode(data))
            except ImageDecodeError as err:
                decoded.append(err)
        good = [i for i, x in enumerate(decoded) if isinstance(x, torch.Tensor)]
        tops = iter(self.classify([decoded[i] for i in good], [top_k[i] for i in good]) if good else [])
        return [x if isinstance(x, ImageDecodeError) else next(tops) for x in decoded]

    def cam_png(self, data: bytes, method: str = "gradcam") -> tuple[bytes, tuple[str, float]]:
        """The class activation map of the top class over one encoded image, as PNG bytes, and that class.

        Always runs the eager network (gradients), whatever the backend; the picture is at the image's own size, or
        shrunk to :data:`CAM_MAX_SIDE` pixels on its longer side.
        """
        image = decode_image(data, grayscale=self.predictor.in_chans == 1, max_pixels=self.max_pixels)
        picture, top = self.predictor.cam(image, method)
        drawn = Image.fromarray(picture)
        drawn.thumbnail((CAM_MAX_SIDE, CAM_MAX_SIDE))  # keeps the aspect; never enlarges
        buffer = io.BytesIO()
        drawn.save(buffer, format="PNG")
        return buffer.getvalue(), top

    def card(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: architecture, classes, preprocessing, metrics, size and weights hash."""
        if not self._card:
            model, record = self.predictor.model, self.predictor.model.record
            size = self.predictor.preprocess.crop_size
            self._card = {
                "arch": record.arch,
                "backend": self.backend.value,
                "classes": list(self.classes),
                "preprocess": record.preprocess.to_dict(),
                "input_size": [self.predictor.in_chans, size, size],
                "params": count_params(model),
                "macs": count_macs(model, size, self.predictor.in_chans),
                "metrics": [vars(m) for m in record.metrics],
                "weights_sha256": record.tensors_sha256,
                "source": record.source,
                "recipe": record.recipe,
                "max_pixels": self.max_pixels,
            }
        return self._card


def _openvino_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """An ONNX file compiled by OpenVINO for the CPU (dynamic batch, fp32), as a function of a batch."""
    import openvino  # optional: pip install openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()  # one request: batches run one at a time, on the batch worker
    return lambda x: torch.from_numpy(request.infer({0: x.numpy()})[compiled.output(0)].copy())


__all__ = ["DEFAULT_MAX_PIXELS", "Backend", "Classifier", "ImageDecodeError", "Top"]
