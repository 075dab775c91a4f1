"""Class activation maps: where in an image a classifier finds the evidence for a class.

The maps come from Jacob Gildenblat's ``grad-cam`` package (``pytorch_grad_cam``); this module picks the layer
(the feature map the pooled classifier reads), runs the package without touching the model's parameters,
gradients or mode, and draws the maps over the images.

References:
    Zhou et al. 2016, "Learning Deep Features for Discriminative Localization" (CAM).
    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization".
    Chattopadhyay et al. 2018, "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks".
    Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks".
    Desai & Ramaswamy 2020, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free
    Localization".
    Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components".
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import UserError
from ..io import atomic_write

#: Method name -> its class in ``pytorch_grad_cam``. ``scorecam`` and ``ablationcam`` run one forward pass per
#: channel of the layer, per image; ``eigencam`` (the first principal component of the features) is the same for
#: every class.
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "eigencam": "EigenCAM",
}


@dataclass(frozen=True, eq=False)
class CamResult:
    """Class activation maps of a batch of images.

    Attributes:
        label: the model's name, for titles.
        method: the method (a key of :data:`METHODS`).
        layer: the name of the module whose output the maps are computed on.
        maps: ``(N, H, W)`` float32 in [0, 1] at the input resolution, each scaled to a maximum of 1 (all zero
            where the method finds no positive evidence).
        classes: the class each map explains (the predicted one unless targets were given).
        probabilities: the model's softmax probability of that class.
    """

    label: str
    method: str
    layer: str
    maps: np.ndarray
    classes: list[int]
    probabilities: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "layer": self.layer,
            "maps": self.maps.astype(float).round(4).tolist(),
            "classes": list(self.classes),
            "probabilities": list(self.probabilities),
        }


def class_activation_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    method: str = "gradcam",
    targets: Sequence[int] | torch.Tensor | None = None,
    layer: nn.Module | None = None,
    batch_size: int = 32,
    progress: bool = True,
    label: str = "model",
) -> CamResult:
    """Class activation maps of ``images`` for ``model``, computed by the ``grad-cam`` package.

    The model's parameters, their ``requires_grad`` flags and gradients, and its train/eval mode are as before
    afterwards; the maps are deterministic (none of the methods draws random numbers).

    Args:
        model: a classifier (a resnetkit ``ResNet``, or any model with a ``layer4``, or give ``layer``).
        images: ``(N, C, H, W)`` normalised images on the model's device.
        method: a key of :data:`METHODS`: ``gradcam`` (default), ``gradcam++``, ``xgradcam``, ``layercam``,
            ``hirescam``; gradient-free ``scorecam``, ``ablationcam`` (one forward pass per channel of the layer per
            image) and ``eigencam`` (first principal component of the features, not class-specific).
        targets: the class to explain for each image; the predicted class by default.
        layer: the module whose output feature map is explained; by default the one the pooled classifier reads
            (see :func:`default_layer`).
        batch_size: images per pass; also the masked copies per pass of ``scorecam`` and ``ablationcam``.
        progress: show a progress bar over the batches.
        label: the model's name, kept in the result.

    Raises:
        ValueError: an unknown method, or ``targets`` not one per image.
        TypeError: no ``layer`` given and the model has no known last feature layer.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images: give one class per image")
    layer = default_layer(model) if layer is None else layer
    maps, classes, probabilities = [], [], []
    with _model_untouched(model), torch.enable_grad(), _cam(model, layer, method, batch_size) as cam:
        for start in tqdm(range(0, len(images), batch_size), desc=f"{method} maps", disable=not progress):
            # Gradients reach the layer through the input, so frozen parameters need none.
            batch = images[start : start + batch_size].detach().requires_grad_(cam.uses_gradients)
            wanted = None if targets is None else [int(t) for t in targets[start : start + batch_size]]
            batch_maps = cam(batch, None if wanted is None else [_class_target(t) for t in wanted])
            probs = cam.outputs.detach().float().softmax(1)  # the logits of the CAM's own forward pass
            chosen = probs.argmax(1).tolist() if wanted is None else wanted
            maps.append(batch_maps.astype(np.float32))
            classes += chosen
            probabilities += [float(probs[i, c]) for i, c in enumerate(chosen)]
    return CamResult(label, method, _module_name(model, layer), np.concatenate(maps), classes, probabilities)


def default_layer(model: nn.Module) -> nn.Module:
    """The module whose output is the feature map the pooled classifier reads.

    For a resnetkit ``ResNet`` that is its last stage, or, in a pre-activation network, the ReLU of the final norm
    that follows it (the last stage's own output is not normalised yet). For a torchvision-like model it is
    ``layer4``.

    Raises:
        TypeError: the model is neither.
    """
    stages = getattr(model, "stage_names", None)
    if stages:
        preact = getattr(getattr(model, "config", None), "preact", False)
        return model.norm_act if preact else getattr(model, stages[-1])
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return model.layer4
    raise TypeError(f"no default CAM layer for a {type(model).__name__}: pass layer= (its last convolutional stage)")


def grad_cam_package() -> ModuleType:
    """``pytorch_grad_cam``, or a one-line error saying how to install it (it is the ``analysis`` extra)."""
    try:
        import pytorch_grad_cam
    except ImportError as err:
        raise UserError(f"class activation maps need the grad-cam package ({err}): "
                        "pip install 'resnetkit[analysis]'") from None  # fmt: skip
    return pytorch_grad_cam


@contextlib.contextmanager
def _cam(model: nn.Module, layer: nn.Module, method: str, batch_size: int) -> Iterator[Any]:
    """The package's CAM object for ``method`` on ``layer``; afterwards its hooks are removed, and the layer that
    AblationCAM swaps out while it runs is back in place even if it failed."""
    gc = grad_cam_package()
    cam_class = getattr(gc, METHODS[method])
    if cam_class is gc.AblationCAM:
        cam = cam_class(model, [layer], ablation_layer=gc.AblationLayer(), batch_size=batch_size)
    else:
        cam = cam_class(model, [layer])
        cam.batch_size = batch_size  # masked copies per forward pass, read by ScoreCAM
    # Not ``with cam:``, whose __exit__ prints and swallows IndexErrors.
    try:
        with _quiet(gc):
            yield cam
    finally:
        cam.activations_and_grads.release()
        if cam_class is gc.AblationCAM:
            from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

            replace_layer_recursive(model, cam.ablation_layer, layer)


def _class_target(index: int) -> Any:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    return ClassifierOutputTarget(index)


@contextlib.contextmanager
def _quiet(gc: ModuleType) -> Iterator[None]:
    """ScoreCAM and AblationCAM draw a tqdm bar per image with no switch to turn it off; ours covers the run."""
    quiet = mock.Mock(tqdm=functools.partial(tqdm, disable=True))
    with mock.patch.object(gc.score_cam, "tqdm", quiet), mock.patch.object(gc.ablation_cam, "tqdm", quiet):
        yield


@contextlib.contextmanager
def _model_untouched(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters for the duration (no gradients are computed for them) and restore afterwards their
    ``requires_grad`` flags, their ``.grad`` (which the package sets to None) and the model's mode (which it sets
    to eval)."""
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    training = model.training
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, (requires_grad, grad) in zip(params, saved):
            p.requires_grad_(requires_grad)
            p.grad = grad
        model.train(training)


def _module_name(model: nn.Module, layer: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is layer), type(layer).__name__)


# -- drawing -------------------------------------------------------------------------------------------------------


def to_uint8_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(N, C, H, W)`` images back to ``(N, H, W, 3)`` uint8 RGB (grey images repeated to RGB)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x = images.detach().float().cpu() * std_t + mean_t
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    *,
    region: tuple[int, int, int, int] | None = None,
    image_weight: float = 0.5,
) -> np.ndarray:
    """The map, resized and coloured (jet), blended over the image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (``(H, W)`` or ``(H, W, 1)`` grey is repeated to RGB).
        cam: ``(h, w)`` map in [0, 1], any size.
        region: ``(top, left, height, width)`` of the image the map covers (the centre crop a model saw); the image
            outside it is left as it is. The whole image by default.
        image_weight: the image's share of the blend.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    grad_cam_package()
    import cv2  # opencv, a dependency of grad-cam
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = _rgb(image)
    top, left, height, width = region if region is not None else (0, 0, *rgb.shape[:2])
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > rgb.shape[0] or left + width > rgb.shape[1]:
        raise ValueError(f"region {region} is not inside the {rgb.shape[0]}x{rgb.shape[1]} image")
    mask = cv2.resize(np.asarray(cam, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    out = rgb.copy()
    crop = rgb[top : top + height, left : left + width].astype(np.float32) / 255
    out[top : top + height, left : left + width] = show_cam_on_image(
        crop, np.clip(mask, 0, 1), use_rgb=True, image_weight=image_weight
    )
    return out


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"overlay needs a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"overlay needs an (H, W, 3) or (H, W) image, got shape {image.shape}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def plot_cam(
    images: np.ndarray | Sequence[np.ndarray],
    results: Sequence[CamResult],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
) -> None:
    """One row per image: the image, then its overlay for each result (methods, or models), titled with the
    result's label and method, the class explained and its probability.

    Args:
        images: ``N`` uint8 RGB images ``(H, W, 3)`` (see :func:`to_uint8_images`), the ones the results were
            computed on.
        results: results on those ``N`` images.
        path: the PNG to write.
        class_names: names of the classes, for titles (indices otherwise).
    """
    from matplotlib.figure import Figure  # imported where it draws: the CLI starts without it

    if not results or any(len(r.maps) != len(images) for r in results):
        raise ValueError("plot_cam needs at least one result, each with one map per image")
    n, cols = len(images), 1 + len(results)
    fig = Figure(figsize=(2.2 * cols, 2.3 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i, image in enumerate(images):
        _show(axes[i, 0], _rgb(image), "input" if i == 0 else "")
        for ax, r in zip(axes[i, 1:], results):
            c = r.classes[i]
            name = class_names[c] if class_names is not None else str(c)
            _show(ax, overlay(image, r.maps[i]), f"{r.label} {r.method}\n{name} {100 * r.probabilities[i]:.0f}%")
    fig.suptitle("Class activation maps (red: evidence for the class)")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
