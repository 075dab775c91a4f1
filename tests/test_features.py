"""The backbone interface: ``create_model(name, features_only=True, out_indices=..., frozen_stages=...)``.

Checked against timm's own ``features_only`` (same indices, channels, reductions, module names, state-dict keys and
outputs for the same weights), on every variant (on the meta device), with pretrained weights, output strides,
frozen BatchNorm, and mmdet's ``frozen_stages`` under a real training step.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resnetkit import FeatureExtractor, ResNet, Stem, create_model, get_variant, list_models

from .conftest import randomize_norms, test_size

timm = pytest.importorskip("timm")

TIMM_PEERS = ["resnet50", "resnet18", "resnext50_32x4d", "resnet50d"]  # plain, basic, ResNeXt, ResNet-D


def timm_pair(name: str, **kwargs):
    """timm's model with random weights and norm statistics, and ours with its state dict loaded strictly."""
    torch.manual_seed(0)
    peer = randomize_norms(timm.create_model(name, **kwargs)).eval()
    ours = create_model(name, **kwargs)
    ours.load_state_dict(peer.state_dict(), strict=True)
    return peer, ours.eval()


@pytest.mark.parametrize("name", TIMM_PEERS)
def test_features_equal_timms(name):
    peer, ours = timm_pair(name)
    timm_features = timm.models.FeatureListNet(peer, out_indices=(0, 1, 2, 3, 4)).eval()
    features = create_model(name, features_only=True)
    features.load_state_dict(timm_features.state_dict(), strict=True)  # the same keys: conv1, bn1, layer1, ...
    wrapped = FeatureExtractor(ours)
    assert features.feature_info.channels() == timm_features.feature_info.channels()
    assert features.feature_info.reduction() == timm_features.feature_info.reduction()
    assert features.feature_info.module_name() == timm_features.feature_info.module_name()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = timm_features(x)
        for got in (features.eval()(x), wrapped.eval()(x)):
            assert len(got) == len(expected) == 5
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "output_stride"), [("resnet18", 8), ("resnet50", 16)])
def test_dilated_features_equal_timms(name, output_stride):
    out_indices = (1, 2, 3, 4)
    peer, ours = timm_pair(name, output_stride=output_stride)
    timm_features = timm.models.FeatureListNet(peer, out_indices=out_indices).eval()
    features = FeatureExtractor(ours, out_indices).eval()
    assert features.feature_info.reduction() == timm_features.feature_info.reduction()
    assert max(features.feature_info.reduction()) == output_stride
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(features(x), timm_features(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("out_indices", [(1, 2, 3, 4), (2, 3), (0,), (-1,), 2])
def test_out_indices_select_and_prune(out_indices):
    peer_info = timm.create_model("resnet18", features_only=True, out_indices=out_indices).feature_info
    features = create_model("resnet18", features_only=True, out_indices=out_indices)
    assert features.feature_info.channels() == peer_info.channels()
    assert features.feature_info.reduction() == peer_info.reduction()
    last = features.feature_info.out_indices[-1]
    kept = {name.partition(".")[0] for name, _ in features.named_parameters()}
    assert kept == {"conv1", "bn1", *(f"layer{i}" for i in range(1, last + 1))}  # no head, no unused stage
    out = features(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in out] == features.feature_info.channels()
    assert [64 // f.shape[-1] for f in out] == features.feature_info.reduction()
    sum(f.mean() for f in out).backward()
    assert all(p.grad is not None for p in features.parameters()), "a parameter took no part in forward"


@pytest.mark.parametrize("name", list_models())
def test_every_variant_reports_its_features(name):
    """On the meta device (shapes only): channels and reductions are those of the maps, with and without dilation;
    frozen_stages=1 leaves exactly the later stages trainable."""
    config = get_variant(name).config
    size, cifar = test_size(name), config.stem is Stem.CIFAR
    output_stride = config.valid_output_strides[1]  # the last stage dilated: 16 (ImageNet) or 2 (CIFAR)
    with torch.device("meta"):
        features = create_model(name, features_only=True, output_stride=output_stride, frozen_stages=1)
        out = features(torch.empty(1, 3, size, size))
    n = len(config.layers)
    assert features.feature_info.module_name() == ["act1", *(f"layer{i}" for i in range(1, n + 1))]
    assert features.feature_info.reduction()[:2] == ([1, 1] if cifar else [2, 4])
    assert max(features.feature_info.reduction()) == output_stride
    assert [f.shape[1] for f in out] == features.feature_info.channels()
    assert [size // f.shape[-1] for f in out] == features.feature_info.reduction()
    trainable = {name.partition(".")[0] for name, p in features.named_parameters() if p.requires_grad}
    assert trainable == {f"layer{i}" for i in range(2, n + 1)}


def test_cifar_layout():
    features = create_model("cifar_resnet20", features_only=True)
    assert features.feature_info.channels() == [16, 16, 32, 64]
    assert features.feature_info.reduction() == [1, 1, 2, 4]
    dilated = create_model("cifar_resnet20", features_only=True, out_indices=(1, 2, 3), output_stride=2)
    assert dilated.feature_info.reduction() == [1, 2, 2]
    assert [f.shape[-1] for f in dilated(torch.randn(1, 3, 32, 32))] == [32, 16, 16]


def test_pretrained_features_are_the_classifiers():
    """The shipped CIFAR weights (no download): features equal the classifier's stem output and intermediates,
    also with frozen BatchNorm, which holds the same statistics."""
    classifier = create_model("cifar_resnet20", pretrained=True).eval()
    features = create_model("cifar_resnet20", pretrained=True, features_only=True).eval()
    frozen = create_model("cifar_resnet20", pretrained=True, features_only=True, norm="frozen_batch").eval()
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert features.record.preprocess == classifier.record.preprocess
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stem = classifier.act1(classifier.bn1(classifier.conv1(x)))
        expected = [stem, *classifier.forward_intermediates(x, intermediates_only=True)]
        got, got_frozen = features(x), frozen(x)
    for a, b, c in zip(got, got_frozen, expected, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c)


@pytest.mark.parametrize(
    ("frozen_stages", "frozen"), [(-1, []), (0, ["conv1", "bn1"]), (1, ["conv1", "bn1", "layer1"])]
)
def test_frozen_stages_as_mmdet(frozen_stages, frozen):
    """mmdet's convention: -1 freezes nothing, 0 the stem, k the stem and stages 1..k. A training step leaves
    the frozen parameters and BatchNorm statistics as they were and changes all the others."""
    features = create_model("cifar_resnet20", features_only=True, out_indices=(1, 2, 3), frozen_stages=frozen_stages)
    randomize_norms(features).train()
    in_eval = {
        name.partition(".")[0]
        for name, m in features.named_modules()
        if isinstance(m, nn.BatchNorm2d) and not m.training
    }
    assert in_eval == ({"bn1", "layer1"} & set(frozen))  # conv1 has no norm
    assert {n.partition(".")[0] for n, p in features.named_parameters() if not p.requires_grad} == set(frozen)
    before = {k: v.clone() for k, v in features.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in features.parameters() if p.requires_grad], lr=0.1)
    loss = sum(f.square().mean() for f in features(torch.randn(4, 3, 32, 32)))
    loss.backward()
    optimizer.step()
    for key, value in features.state_dict().items():
        if key.partition(".")[0] in frozen:
            assert torch.equal(value, before[key]), f"frozen {key} changed"
        else:
            assert not torch.equal(value, before[key]), f"trainable {key} did not change"


def test_frozen_stages_keep_eval_after_train_and_need_features_only():
    features = create_model("resnet18", features_only=True, frozen_stages=2, drop_path_rate=0.1)
    features.train()
    assert not features.bn1.training and not features.layer2.training and features.layer3.training
    features.eval().train()
    assert not features.layer1[0].drop_path.training and features.layer4[0].drop_path.training
    with pytest.raises(ValueError, match="features_only=True"):
        create_model("resnet18", frozen_stages=1)
    with pytest.raises(ValueError, match="frozen_stages must lie in -1"):
        create_model("resnet18", features_only=True, frozen_stages=5)


@pytest.mark.parametrize(
    ("out_indices", "message"),
    [((5,), "out of range"), ((-6,), "out of range"), ((), "non-empty"), ((2, 1), "increasing"), ((1, 1), "increasing"),
     ("1", "sequence of ints"), ((1.0,), "sequence of ints"), (0, "last 0"), (6, "last 6")],
)  # fmt: skip
def test_bad_out_indices_are_one_line_errors(out_indices, message):
    with pytest.raises(ValueError, match=message) as err:
        create_model("resnet18", features_only=True, out_indices=out_indices)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="features_only=True"):
        create_model("resnet18", out_indices=(1, 2))


def test_config_out_indices_and_frozen_stages_rebuild_the_backbone():
    features = create_model("cifar_resnet20", pretrained=True, features_only=True, out_indices=(2, 3), frozen_stages=1)
    rebuilt = FeatureExtractor(ResNet.from_config(features.config), features.out_indices, features.frozen_stages)
    rebuilt.load_state_dict(features.state_dict(), strict=True)
    assert [n for n, p in rebuilt.named_parameters() if p.requires_grad] == [
        n for n, p in features.named_parameters() if p.requires_grad
    ]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(rebuilt.eval()(x), features.eval()(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
