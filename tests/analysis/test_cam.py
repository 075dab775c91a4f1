"""Class activation maps (Grad-CAM, Score-CAM, ... from the grad-cam package) on resnetkit models."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnetkit.analysis.cam import (
    METHODS,
    class_activation_maps,
    default_layer,
    overlay,
    plot_cam,
    to_uint8_images,
)
from resnetkit.errors import UserError
from resnetkit.models import BasicBlock, ResNet, Stem, create_model

SIZE = 16
QUADRANT = (slice(0, SIZE // 2), slice(0, SIZE // 2))  # the region that decides the class: top-left


def squares(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images, each with a bright 5x5 square in a random quadrant other than the top-left (a distractor);
    those of class 1 also have one in the top-left quadrant, so only that region decides the class."""
    x = torch.randn(n, 3, SIZE, SIZE, generator=generator) * 0.5
    y = torch.arange(n) % 2
    quadrants = torch.randint(1, 4, (n,), generator=generator)
    for i, q in enumerate(quadrants.tolist()):
        r, c = divmod(q, 2)
        x[i, :, 8 * r + 1 : 8 * r + 6, 8 * c + 1 : 8 * c + 6] += 2.0
        if y[i]:
            x[i, :, 2:7, 2:7] += 2.0
    return x, y


@pytest.fixture(scope="module")
def region_model() -> tuple[nn.Module, torch.Tensor]:
    """A tiny ResNet trained (under a second) to tell the classes apart, and test images of class 1."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ResNet(BasicBlock, [1, 1], num_classes=2, stem=Stem.CIFAR, widths=(8, 16), stem_width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        x, y = squares(64, g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = squares(64, g)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() == 1.0  # it has learned the rule
    return model, x[y == 1]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "ablationcam"])
def test_maps_light_the_region_that_decides_the_class(region_model, method):
    model, positives = region_model
    result = class_activation_maps(model, positives, method=method, targets=[1] * len(positives), progress=False)
    maps = torch.from_numpy(result.maps)
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[QUADRANT] = True
    ratio = maps[:, inside].mean(1) / maps[:, ~inside].mean(1)
    # every image: the decisive quadrant holds over twice the mean map of the rest (distractor square included)
    assert (ratio > 2).all(), ratio


def test_maps_are_unit_range_at_input_size_and_name_the_predicted_class():
    model = create_model("cifar_resnet20", num_classes=10).eval()
    x = torch.randn(5, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    for method in METHODS:
        result = class_activation_maps(model, x, method=method, batch_size=2, progress=False)
        assert result.maps.shape == (5, 24, 20) and result.maps.dtype == np.float32, method
        assert result.maps.min() >= 0 and result.maps.max() <= 1 and result.maps.max() > 0.99, method
        with torch.no_grad():
            probs = model(x).softmax(1)
        assert result.classes == probs.argmax(1).tolist(), method
        assert np.allclose(result.probabilities, probs.max(1).values.tolist(), atol=1e-5), method
    assert result.layer == "layer3"


def test_targets_choose_the_class_explained(region_model):
    model, positives = region_model
    result = class_activation_maps(model, positives[:4], targets=torch.tensor([0, 1, 0, 1]), progress=False)
    with torch.no_grad():
        probs = model(positives[:4]).softmax(1)
    assert result.classes == [0, 1, 0, 1]
    assert np.allclose(result.probabilities, [float(probs[i, c]) for i, c in enumerate([0, 1, 0, 1])], atol=1e-5)
    with pytest.raises(ValueError, match="one class per image"):
        class_activation_maps(model, positives[:4], targets=[0], progress=False)


def test_model_is_left_as_it_was_and_maps_are_deterministic():
    model = create_model("cifar_preact_resnet110", num_classes=10).train()
    frozen = model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    modules = list(model.modules())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # a caller's no_grad does not stop the gradient methods
        first = class_activation_maps(model, x, progress=False)
    again = class_activation_maps(model, x, progress=False)
    class_activation_maps(model, x, method="ablationcam", progress=False)  # swaps the layer out while it runs
    assert model.training and list(model.modules()) == modules
    assert not frozen.requires_grad and all(p.requires_grad for n, p in model.named_parameters() if n != "conv1.weight")
    assert (model.fc.weight.grad == 1).all() and model.layer1[0].conv1.weight.grad is None
    assert np.array_equal(first.maps, again.maps)
    assert first.layer == "norm_act"  # a pre-activation net's last stage is not normalised yet: the map is after it


def test_default_layer_of_other_models():
    import torchvision

    tv = torchvision.models.resnet18(num_classes=3)
    assert default_layer(tv) is tv.layer4
    assert class_activation_maps(tv, torch.randn(1, 3, 64, 64), progress=False).layer == "layer4"
    with pytest.raises(TypeError, match="pass layer="):
        default_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="unknown CAM method"):
        class_activation_maps(tv, torch.randn(1, 3, 64, 64), method="magic", progress=False)


def test_overlay_blends_inside_its_region_only():
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    cam = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))  # rises from left to right
    whole = overlay(image, cam)
    assert whole.shape == (30, 50, 3) and whole.dtype == np.uint8 and not np.array_equal(whole, image)
    part = overlay(image, cam, region=(5, 10, 20, 30))
    outside = np.ones((30, 50), dtype=bool)
    outside[5:25, 10:40] = False
    assert np.array_equal(part[outside], image[outside]) and not np.array_equal(part[~outside], image[~outside])
    grey = overlay(np.full((30, 50, 3), 128, dtype=np.uint8), cam).astype(int)
    assert (grey[:, -4:, 0] - grey[:, -4:, 2]).min() > 60 and (grey[:, :4, 2] - grey[:, :4, 0]).min() > 60  # jet
    assert overlay(image[..., 0], cam).shape == (30, 50, 3)  # grey is drawn in RGB
    with pytest.raises(ValueError, match="not inside"):
        overlay(image, cam, region=(20, 0, 20, 10))


def test_plot_and_json(tmp_path, region_model):
    model, positives = region_model
    images = positives[:3]
    results = [class_activation_maps(model, images, method=m, label="tiny", progress=False) for m in METHODS]
    rgb = to_uint8_images(images, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert rgb.shape == (3, SIZE, SIZE, 3) and rgb.dtype == np.uint8
    plot_cam(rgb, results, tmp_path / "cam.png", class_names=["absent", "present"])
    with Image.open(tmp_path / "cam.png") as png:
        assert png.format == "PNG" and png.width > 400 and png.height > 200
    record = json.loads(json.dumps(results[0].as_dict()))
    assert record["method"] == "gradcam" and record["label"] == "tiny" and len(record["maps"]) == 3
    assert np.allclose(record["maps"], results[0].maps, atol=1e-4)


def test_missing_package_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # as if grad-cam were not installed
    model = create_model("cifar_resnet20", num_classes=10)
    with pytest.raises(UserError, match=r"pip install 'resnetkit\[analysis\]'"):
        class_activation_maps(model, torch.randn(1, 3, 16, 16), progress=False)
