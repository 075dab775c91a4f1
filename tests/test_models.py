"""Every registered variant: builds, runs forward and backward, reports its features, round-trips its weights."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from resnetkit import create_model, get_variant, list_models
from resnetkit.models import ResidualUnit

from .conftest import randomize_norms, test_size

ALL = list_models()


@pytest.fixture(scope="module", params=ALL)
def built(request):
    name = request.param
    return name, create_model(name, num_classes=7)


def test_forward_backward_reaches_every_parameter(built):
    name, model = built
    model.train()
    x = torch.randn(2, 3, test_size(name), test_size(name))
    out = model(x)
    assert out.shape == (2, 7)
    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradient for {bad[:5]}"


def test_feature_info_matches_stage_outputs(built):
    name, model = built
    size = test_size(name)
    model.eval()
    with torch.no_grad():
        final, stages = model.forward_intermediates(torch.randn(1, 3, size, size))
        features = model.forward_features(torch.randn(1, 3, size, size))
    assert len(stages) == len(model.feature_info) == len(get_variant(name).config.layers)
    for feat, info in zip(stages, model.feature_info):
        assert feat.shape[1] == info["num_chs"]
        assert size // feat.shape[-1] == info["reduction"]
    assert final.shape == features.shape == (1, model.num_features, *stages[-1].shape[-2:])
    assert model.feature_info[-1]["reduction"] == (32 if size == 64 else 4)


def test_state_dict_round_trip(built):
    name, model = built
    randomize_norms(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_()
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    loaded = other.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # Train mode: batch statistics keep activations finite even in 1000-layer nets with random weights.
    x = torch.randn(2, 3, test_size(name), test_size(name))
    with torch.no_grad():
        torch.testing.assert_close(other.train()(x), model.train()(x), rtol=0, atol=0)


def test_every_variant_is_built_from_the_same_units():
    kinds = set()
    for name in ALL:
        with torch.device("meta"):
            model = create_model(name)
        kinds |= {type(m).__name__ for m in model.modules() if isinstance(m, ResidualUnit)}
        assert type(model).__name__ == "ResNet"
    assert kinds == {"BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck"}


@pytest.mark.parametrize(
    "name, depth, block_count",
    [("cifar_resnet20", 20, 9), ("cifar_resnet110", 110, 54), ("cifar_resnet1202", 1202, 600),
     ("cifar_preact_resnet164", 164, 54), ("cifar_preact_resnet1001", 1001, 333), ("cifar_wrn28_10", 28, 12),
     ("resnet50", 50, 16), ("resnet200", 200, 66)],
)  # fmt: skip
def test_depth_counts_weighted_layers(name, depth, block_count):
    """Depth in the name = stem conv + convolutions in the units + classifier (the papers' convention)."""
    with torch.device("meta"):
        model = create_model(name)
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    convs_per_unit = 3 if "Bottleneck" in type(units[0]).__name__ else 2
    assert len(units) == block_count
    wrn_extra = 2 if "wrn" in name else 0  # WRN counts the projection shortcuts of its stages in the depth
    assert 1 + convs_per_unit * len(units) + 1 + wrn_extra == depth
