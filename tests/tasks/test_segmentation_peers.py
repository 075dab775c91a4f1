"""Peer proof for resnetkit.tasks.segmentation: torchvision's ``deeplabv3_resnet50`` and ``fcn_resnet50``, built
with random weights, load into ours with ``strict=True`` and give the same ``"out"`` and ``"aux"`` maps; any
variant, BasicBlock ones included, runs at output stride 8 and 16 and trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import segmentation as tvs

from resnetkit.tasks import deeplabv3, fcn

from ..conftest import randomize_norms
from .images import smooth_images

PEERS = {"deeplabv3": (deeplabv3, tvs.deeplabv3_resnet50), "fcn": (fcn, tvs.fcn_resnet50)}


@pytest.mark.parametrize("kind", sorted(PEERS))
def test_torchvision_segmenter_loads_strictly_and_predicts_the_same(kind):
    ours_builder, theirs_builder = PEERS[kind]
    torch.manual_seed(0)
    theirs = randomize_norms(theirs_builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)).eval()
    ours = ours_builder("resnet50", num_classes=21, aux=True).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = smooth_images(2, 72, 88, seed=3)
    with torch.no_grad():
        expected, got = theirs(images), ours(images)
    assert list(got) == ["out", "aux"]
    for key in ("out", "aux"):
        assert got[key].shape == (2, 21, 72, 88)
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=f"{kind} {key}")


def test_without_aux_matches_torchvisions_default():
    theirs = tvs.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=5)
    ours = deeplabv3("resnet50", num_classes=5)
    assert theirs.aux_classifier is None and ours.aux_classifier is None
    ours.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize(("builder", "name", "output_stride"), [
    (deeplabv3, "resnet18", 8), (deeplabv3, "plain18", 16), (fcn, "resnet34", 16), (fcn, "preact_resnet18", 8),
])  # fmt: skip
def test_any_variant_at_output_stride_8_and_16(builder, name, output_stride):
    model = builder(name, num_classes=4, output_stride=output_stride, aux=True)
    assert model.backbone.feature_info.reduction() == [output_stride, output_stride]
    images = smooth_images(2, 64, 64, seed=4)
    model.train()
    out = model(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"out": (2, 4, 64, 64), "aux": (2, 4, 64, 64)}
    target = torch.randint(0, 4, (2, 64, 64))
    loss = F.cross_entropy(out["out"], target) + 0.5 * F.cross_entropy(out["aux"], target)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None


def test_cifar_layout_with_shipped_weights():
    """A CIFAR variant (three stages, stride 4 at most) with its shipped weights (no download): the last two stages
    at output stride 2, the backbone's tensors those of the classifier."""
    from resnetkit import load_model

    model = deeplabv3("cifar_resnet20", num_classes=3, output_stride=2, aux=True, pretrained_backbone=True).eval()
    assert model.backbone.names == ("aux", "out") and model.backbone.feature_info.reduction() == [2, 2]
    classifier = load_model("cifar_resnet20").state_dict()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier[key]), key
    with torch.no_grad():
        assert model(smooth_images(1, 32, 32))["out"].shape == (1, 3, 32, 32)


def test_impossible_output_stride_is_one_line():
    with pytest.raises(ValueError, match="output_stride=8 is not possible here"):
        deeplabv3("cifar_resnet20", output_stride=8)
