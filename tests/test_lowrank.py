"""Low-rank factorisation: Tucker-2 and SVD are exact at full rank and optimal when truncated, budgets are met on
every family, skipped layers stay whole, and factorised (and pruned) models replay from their surgery."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetkit import count_macs
from resnetkit.compress import factorizable_convs, factorize, factorize_conv, factorize_layers, prune_channels
from resnetkit.compress.lowrank import ranks_at
from resnetkit.deploy import fuse_model

from .conftest import test_size
from .test_prune import VARIANTS, assert_close, build, images, replayed

# The ImageNet bottleneck nets with one unit per stage: every family kept, each test a few seconds on one core.
SMALL = {"resnet50": {"layers": (1, 1, 1, 1)}, "seresnet50": {"layers": (1, 1, 1, 1)}}


@pytest.mark.parametrize("name", VARIANTS)
def test_factorize_to_half_macs_keeps_shapes_and_replays(name):
    model, x = build(name, **SMALL.get(name, {})), images(name)
    report = factorize(model, 0.5, input_size=test_size(name))
    assert 0.48 <= report.macs_fraction <= 0.5, report.macs_fraction
    assert report.macs_after == count_macs(model, test_size(name))
    assert report.layers and all(f.macs_after < f.macs_before and 0.0 < f.error < 1.0 for f in report.layers)
    assert all(isinstance(model.get_submodule(f.name), nn.Sequential) for f in report.layers)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 5)
    with torch.no_grad():
        assert torch.equal(replayed(name, model, **SMALL.get(name, {}))(x), out)


@pytest.mark.parametrize("name", VARIANTS)
def test_full_rank_reproduces_outputs(name):
    model, x = build(name, **SMALL.get(name, {})), images(name)
    with torch.no_grad():
        expected = model(x)
    names = factorizable_convs(model, skip_stem=False)
    full = {n: ranks_at(model.get_submodule(n), 1.0) for n in names}
    report = factorize_layers(model, full, input_size=test_size(name))
    assert len(report.layers) == len(names) and max(f.error for f in report.layers) < 1e-6
    with torch.no_grad():
        assert_close(model(x), expected, tol=1e-4)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(3, 2, 1, 1), (3, 1, 2, 2), (1, 2, 0, 1), (7, 2, 3, 1)])
def test_single_conv_full_rank_is_exact_and_truncation_is_optimal(kernel, stride, padding, dilation):
    conv = nn.Conv2d(12, 20, kernel, stride, padding, dilation, bias=True)
    x = torch.randn(2, 12, 15, 15)
    chain, error = factorize_conv(conv, (20,) if kernel == 1 else (12, 20))
    assert error < 1e-6
    with torch.no_grad():
        assert_close(chain(x), conv(x), tol=1e-5)
    assert chain[-1].bias is not None and chain[0].bias is None
    if kernel == 1:  # Eckart-Young: the error is the discarded singular values' share
        s = torch.linalg.svdvals(conv.weight.detach().double().flatten(1))
        _, error = factorize_conv(conv, (5,))
        assert error == pytest.approx((s[5:].square().sum() / s.square().sum()).sqrt().item(), rel=1e-6)


def test_truncated_tucker2_error_matches_its_weights():
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=False)
    chain, error = factorize_conv(conv, (6, 8))
    assert [c.out_channels for c in chain] == [6, 8, 24] and chain[1].kernel_size == (3, 3)
    first, core, last = (c.weight.detach().double() for c in chain)
    approx = torch.einsum("or,rshw,si->oihw", last[:, :, 0, 0], core, first[:, :, 0, 0])
    weight = conv.weight.detach().double()
    assert error == pytest.approx((torch.linalg.norm(weight - approx) / torch.linalg.norm(weight)).item(), rel=1e-4)
    assert 0.0 < error < 1.0


def test_skipped_layers_stay_whole():
    resnext = build("seresnext50_32x4d", layers=(1, 1, 1, 1))
    names = factorizable_convs(resnext)
    assert "conv1" not in names and not any(".se." in n for n in names)
    assert all(resnext.get_submodule(n).groups == 1 for n in names)
    assert "layer1.0.conv2" not in names  # grouped 3x3
    assert "conv1" in factorizable_convs(build("resnet18"), skip_stem=False)


def test_prune_then_factorize_replays_and_fuses():
    name = "cifar_resnet20"
    model, x = build(name), images(name)
    prune_channels(model, 0.7)
    report = factorize(model, 0.6)
    assert [r["op"] for r in model.surgery] == ["prune", "factorize"]
    assert report.macs_after <= 0.6 * report.macs_before
    with torch.no_grad():
        out = model(x)
        assert torch.equal(replayed(name, model)(x), out)
        assert_close(fuse_model(model)(x), out, tol=1e-4)  # BN folds into each chain's last convolution


@pytest.mark.parametrize(
    "fraction, message",
    [(0.0, "macs_fraction must be a number in \\(0, 1\\]"), (2.0, "macs_fraction must be"),
     (0.01, "cannot reach .* by factorising convolutions")],
)  # fmt: skip
def test_bad_arguments_give_one_line_errors(fraction, message):
    with pytest.raises(ValueError, match=message) as err:
        factorize(build("cifar_resnet20"), fraction)
    assert "\n" not in str(err.value)


def test_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="tucker2 takes 2 positive integer rank"):
        factorize_conv(nn.Conv2d(4, 4, 3), (2,))
    with pytest.raises(ValueError, match="grouped"):
        factorize_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
