"""Export to Core ML (an ML Program ``.mlpackage``) through coremltools, for iOS and macOS apps.

The package is what an app wants to call with a camera frame, not a tensor:

* **image input** ``image``: an RGB (or, for one-channel weights, grayscale) image of the crop size, raw 0-255
  pixels. The weights' own normalisation is folded into the program: Core ML's image input applies one ``scale``
  to every channel and a ``bias`` per channel, so ``scale = 1 / (255 s)`` and ``bias_c = -mean_c / s`` with ``s``
  the mean of the per-channel ``std``; where the stds differ (ImageNet's), the rest, ``s / std_c`` per channel,
  is a multiply at the start of the network. Resizing and cropping stay with the app (Vision's
  ``VNCoreMLRequest`` scales and crops frames to the input size; the record's resize/crop are in the metadata).
* **a classifier**: softmax probabilities, with the class names attached, so Core ML returns ``classLabel``
  (the top class name) and ``classLabel_probs`` (name -> probability). Weights without class names get "0", "1", ...
* **fp32 or fp16** weights and arithmetic (``compute_precision``); ``minimum_deployment_target`` iOS 15 / macOS 12,
  the first with ML Programs.
* **metadata**: the variant, the record's preprocessing and provenance (``user_defined_metadata``).

The model goes in through ``torch.export`` (coremltools' ExportedProgram frontend; TorchScript is deprecated).

Predictions cannot run off macOS (coremltools' runtime is macOS-only), so this module checks what can be checked
here, from the saved package itself (:func:`describe_coreml`): input and output names, types and sizes, the op
set of the program, the labels, the folded scale and bias. Verified on a Mac only: that Core ML's outputs match
eager PyTorch. On a Mac, ``python -m resnetkit.deploy.coreml MODEL PACKAGE`` runs both on the same images and
prints the largest probability difference and top-1 agreement (:func:`verify_on_mac`).
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..models.record import Preprocess
from .export import sample_images
from .quantize import DEFAULT_MIN_AGREEMENT

INSTALL = "Core ML export needs coremltools: pip install 'resnetkit[coreml]'"
INPUT = "image"
LABEL, PROBS = "classLabel", "classLabel_probs"


class CoreMLFormat(enum.Enum):
    """The Core ML route, reported like :class:`~resnetkit.deploy.export.Format`."""

    COREML = "coreml"

    @property
    def suffix(self) -> str:
        return ".mlpackage"


@dataclass(frozen=True)
class ImageScaling:
    """Raw pixels ``p`` (0-255) to the normalised input: ``(p * scale + bias[c]) * channel_scale[c]``, which equals
    ``(p / 255 - mean[c]) / std[c]``; ``scale`` and ``bias`` are Core ML's image input, ``channel_scale`` a
    multiply in the program (all ones, and left out, when the stds are equal)."""

    scale: float
    bias: tuple[float, ...]
    channel_scale: tuple[float, ...]

    @classmethod
    def of(cls, preprocess: Preprocess) -> ImageScaling:
        s = sum(preprocess.std) / len(preprocess.std)
        return cls(1 / (255 * s), tuple(-m / s for m in preprocess.mean), tuple(s / d for d in preprocess.std))

    def image_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` pixels in 0-255 -> what Core ML's image input hands the program: ``p * scale + bias``."""
        return pixels * self.scale + torch.tensor(self.bias).view(1, -1, 1, 1)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` pixels in 0-255 -> the normalised image the network takes, as the package computes it."""
        return self.image_input(pixels) * torch.tensor(self.channel_scale).view(1, -1, 1, 1)


@dataclass(frozen=True)
class CoreMLDescription:
    """What a saved ``.mlpackage`` says about itself (read by :func:`describe_coreml`, no Mac needed)."""

    path: str
    input_name: str
    color_space: str  # "RGB" or "GRAYSCALE"
    size: tuple[int, int]  # height, width
    outputs: tuple[str, ...]
    predicted_feature: str
    labels: tuple[str, ...]
    ops: tuple[str, ...]  # the program's operation types, sorted
    opset: str  # "CoreML5" is iOS 15 / macOS 12
    scale: float
    bias: tuple[float, ...]
    fp16: bool  # weights stored as float16
    metadata: dict[str, str]

    def line(self) -> str:
        h, w = self.size
        return (f"coreml {self.path}: ML Program ({self.opset}, {'fp16' if self.fp16 else 'fp32'}), input "
                f"{self.input_name!r} {self.color_space} {h}x{w} image (scale {self.scale:.4g}, bias "
                f"{', '.join(f'{b:.4g}' for b in self.bias)}), classifier over {len(self.labels)} labels -> "
                f"{', '.join(self.outputs)}; {len(self.ops)} op types. Not run: Core ML predicts on macOS only")  # fmt: skip


class RawPixelClassifier(nn.Module):
    """The network as the package runs it on the image input's output (:meth:`ImageScaling.image_input`): the
    per-channel rest of the normalisation, the network, softmax over the logits."""

    def __init__(self, model: nn.Module, channel_scale: Sequence[float]):
        super().__init__()
        self.model = model
        factors = torch.tensor(channel_scale, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("channel_scale", factors if not torch.allclose(factors, torch.ones(1)) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_scale is not None:
            x = x * self.channel_scale  # (B, C, H, W): the part of 1/std the image input's one scale cannot hold
        return torch.softmax(self.model(x), dim=1)  # (B, num_classes)


def export_coreml(
    model: nn.Module,
    path: str | Path,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] = (),
    *,
    fp16: bool = False,
    metadata: dict[str, Any] | None = None,
) -> CoreMLDescription:
    """Write ``model`` as a Core ML ML Program classifier taking raw-pixel images; return what the saved package
    says about itself.

    Args:
        model: the classifier; put in eval mode. A resnetkit model file's ``model.record`` gives the defaults.
        path: the ``.mlpackage`` folder to write.
        preprocess: the weights' preprocessing (default: the record's); its crop size is the image size.
        classes: class names in output order (default: the record's, else "0", "1", ...).
        fp16: float16 weights and arithmetic (half the size; the Neural Engine runs fp16 anyway).
        metadata: more ``user_defined_metadata`` (strings, or values written as JSON).
    """
    ct = _coremltools()
    record = getattr(model, "record", None)
    preprocess = preprocess or (record.preprocess if record else Preprocess())
    classes = tuple(classes) or (record.classes if record else ()) or tuple(map(str, range(_num_classes(model))))
    scaling = ImageScaling.of(preprocess)
    size, channels = preprocess.crop_size, len(preprocess.mean)
    if channels not in (1, 3):
        raise ValueError(f"Core ML image inputs are RGB or grayscale; these weights take {channels} channels")
    wrapped = RawPixelClassifier(model.eval(), scaling.channel_scale).eval()
    example = torch.rand(1, channels, size, size) * 255
    with torch.no_grad():
        program = torch.export.export(wrapped, (scaling.image_input(example),)).run_decompositions({})
    image = ct.ImageType(name=INPUT, shape=(1, channels, size, size), scale=scaling.scale,
                         bias=list(scaling.bias) if channels == 3 else scaling.bias[0],
                         color_layout=ct.colorlayout.RGB if channels == 3 else ct.colorlayout.GRAYSCALE)  # fmt: skip
    precision = ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32
    with _quiet_progress():
        mlmodel = ct.convert(program, inputs=[image], classifier_config=ct.ClassifierConfig(list(classes)),
                             convert_to="mlprogram", compute_precision=precision,
                             minimum_deployment_target=ct.target.iOS15)  # fmt: skip
    _describe_io(mlmodel, preprocess, record)
    meta = {"resnetkit.preprocess": preprocess.to_dict(), "resnetkit.channel_scale": list(scaling.channel_scale),
            **({"resnetkit.arch": record.arch, "resnetkit.source": record.source} if record else {}),
            **(metadata or {})}  # fmt: skip
    for key, value in meta.items():
        mlmodel.user_defined_metadata[key] = value if isinstance(value, str) else json.dumps(value)
    mlmodel.save(str(path))
    return describe_coreml(path)


def describe_coreml(path: str | Path) -> CoreMLDescription:
    """Read a saved ``.mlpackage``'s interface, program ops, labels and image scaling from its spec (any OS)."""
    ct = _coremltools()
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} is not an ML Program (a neural network .mlmodel?); resnetkit writes ML Programs")
    desc = spec.description
    (image,) = desc.input
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    consts = _consts(block.operations)
    scale, bias = _image_scaling(block.operations, consts, image.name)
    (classify,) = [op for op in block.operations if op.type == "classify"]
    labels = _labels(classify.inputs["classes"].arguments[0], consts)
    space = image.type.imageType.ColorSpace.Name(image.type.imageType.colorSpace)
    return CoreMLDescription(
        str(path), image.name, space, (image.type.imageType.height, image.type.imageType.width),
        tuple(o.name for o in desc.output), desc.predictedFeatureName, tuple(labels),
        tuple(sorted({op.type for op in block.operations})), function.opset, scale, bias, _stores_fp16(block.operations),
        dict(desc.metadata.userDefined),
    )  # fmt: skip


def verify_on_mac(model: nn.Module, path: str | Path, images: torch.Tensor) -> tuple[float, float]:
    """On macOS: run the package on ``images`` (``(B, C, H, W)`` raw pixels, 0-255, the crop size) and eager
    ``model`` on the same images normalised; the largest probability difference and the top-1 agreement."""
    if sys.platform != "darwin":
        raise UserError(f"Core ML predicts on macOS only; run this check of {path} on a Mac")
    ct = _coremltools()
    from PIL import Image

    package = ct.models.MLModel(str(path))
    scaling = ImageScaling.of(model.record.preprocess)
    reference = RawPixelClassifier(model.eval(), scaling.channel_scale)
    labels = describe_coreml(path).labels
    worst, agree = 0.0, 0
    for pixels in images:
        array = pixels.round().clamp(0, 255).byte().permute(1, 2, 0).squeeze(-1).numpy()
        out = package.predict({INPUT: Image.fromarray(array)})
        got = torch.tensor([out[PROBS][label] for label in labels])
        with torch.no_grad():
            expected = reference(scaling.image_input(pixels[None].round()))[0]
        worst, agree = max(worst, (got - expected).abs().max().item()), agree + int(got.argmax() == expected.argmax())
    return worst, agree / len(images)


def _describe_io(mlmodel, preprocess: Preprocess, record) -> None:
    size = preprocess.crop_size
    mlmodel.input_description[INPUT] = (f"{size}x{size} image, 0-255 pixels (resize the shorter side to "
                                        f"{preprocess.resize_size}, center-crop {size})")  # fmt: skip
    mlmodel.output_description[LABEL] = "the most likely class"
    mlmodel.output_description[PROBS] = "the probability of each class"
    mlmodel.short_description = f"resnetkit {record.arch}" if record else "resnetkit classifier"


def _consts(operations) -> dict[str, list]:
    """The values of the program's small (inline) constants, by output name."""
    values = {}
    for op in operations:
        if op.type != "const" or "val" not in op.attributes:
            continue
        value = op.attributes["val"]
        if not value.HasField("immediateValue"):
            continue  # a weight in weights/weight.bin
        values[op.outputs[0].name] = _tensor_values(value.immediateValue.tensor)
    return values


def _labels(argument, consts: dict[str, list]) -> list[str]:
    """The ``classify`` op's class names: a list written inline in the op (or a named constant)."""
    if argument.name:
        return [str(v) for v in consts[argument.name]]
    items = argument.value.immediateValue.list.values
    return [str(_tensor_values(item.immediateValue.tensor)[0]) for item in items]


def _tensor_values(tensor) -> list:
    kind = tensor.WhichOneof("value")
    return list(getattr(tensor, kind).values) if kind else []


def _image_scaling(operations, consts: dict[str, list], name: str) -> tuple[float, tuple[float, ...]]:
    """The image input's scale (the ``mul`` reading it) and bias (the ``add`` after it)."""
    mul = next(op for op in operations if op.type == "mul" and op.inputs["x"].arguments[0].name == name)
    scaled = mul.outputs[0].name
    add = next(op for op in operations if op.type == "add" and op.inputs["x"].arguments[0].name == scaled)
    (scale,) = consts[mul.inputs["y"].arguments[0].name]
    return float(scale), tuple(float(b) for b in consts[add.inputs["y"].arguments[0].name])


def _stores_fp16(operations) -> bool:
    """True when the program's weights (constants in the weight file) are float16."""
    types = {op.attributes["val"].type.tensorType.dataType for op in operations
             if op.type == "const" and op.attributes["val"].HasField("blobFileValue")}  # fmt: skip
    return bool(types) and types <= {_FLOAT16}


_FLOAT16 = 10  # MIL's DataType.FLOAT16 in Model.proto's MILSpec


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or getattr(getattr(model, "config", None), "num_classes", 0))


@contextlib.contextmanager
def _quiet_progress():
    """No per-pass progress bars from coremltools' conversion (tqdm writes them to stderr; errors still raise), nor
    the deprecation warnings its torch frontend raises against its own op registry, hundreds per model."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools\.")
        yield


def _coremltools():
    try:
        import coremltools
    except ImportError as err:
        raise UserError(INSTALL) from err
    return coremltools


def _main(argv: list[str]) -> int:
    """``python -m resnetkit.deploy.coreml MODEL PACKAGE``: the Mac check of :func:`verify_on_mac` on 32 images."""
    from ..weights import load_model

    if len(argv) != 2:
        print("usage: python -m resnetkit.deploy.coreml MODEL PACKAGE.mlpackage", file=sys.stderr)
        return 2
    if sys.platform != "darwin":
        print(f"{argv[1]}: Core ML predicts on macOS only; run this command on a Mac", file=sys.stderr)
        return 2
    model = load_model(argv[0])
    pre = model.record.preprocess
    normalised = sample_images(32, pre.crop_size, len(pre.mean), pre.mean, pre.std)  # smooth image-like inputs
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (pre.mean, pre.std))
    worst, agree = verify_on_mac(model, argv[1], (normalised * std + mean) * 255)
    print(f"coreml {argv[1]}: max |probability diff| {worst:.2e} vs eager, top-1 agreement {agree:.1%}")
    return 0 if agree >= DEFAULT_MIN_AGREEMENT else 1


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
