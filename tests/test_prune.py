"""Pruning: structured channel pruning to a MAC budget on every family (exactness, residual wiring, replay) and
unstructured magnitude pruning (global sparsity, masks during training, exact reports)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from resnetkit import count_macs, create_model
from resnetkit.compress import (
    Criterion,
    apply_surgery,
    branch_links,
    magnitude_prune,
    make_permanent,
    prune_channels,
    sparsity_report,
)

from .conftest import randomize_norms, test_size

# One of each family: CIFAR basic (short, deep), plain, ImageNet basic and bottleneck, pre-activation basic and
# bottleneck, squeeze-excitation, wide.
VARIANTS = ["cifar_resnet20", "cifar_resnet56", "cifar_plain20", "resnet18", "resnet50", "preact_resnet18",
            "cifar_preact_resnet164", "seresnet50", "cifar_wrn16_8"]  # fmt: skip


def build(name: str, **overrides) -> nn.Module:
    """The variant with 5 classes and random norm statistics, in eval mode."""
    return randomize_norms(create_model(name, num_classes=5, **overrides)).eval()


def images(name: str, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, test_size(name), test_size(name))


def assert_close(got: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal up to ``tol`` relative to the output scale (deep random nets have large logits)."""
    assert got.shape == expected.shape
    scale = expected.abs().max().clamp_min(1.0)
    assert (got - expected).abs().max().item() <= tol * scale.item()


def replayed(name: str, model: nn.Module, **overrides) -> nn.Module:
    """A fresh variant with ``model``'s surgery replayed (after a JSON round trip, as in a checkpoint's metadata)
    and its state dict loaded strictly."""
    fresh = create_model(name, num_classes=5, **overrides)
    fresh = apply_surgery(fresh, json.loads(json.dumps(model.surgery)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh.eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_prune_to_half_macs_keeps_shapes_and_replays(name):
    model, x = build(name), images(name)
    widths = [info["num_chs"] for info in model.feature_info]
    report = prune_channels(model, 0.5, Criterion.L1, input_size=test_size(name))
    assert 0.48 <= report.macs_fraction <= 0.5, report.macs_fraction
    assert report.macs_after == count_macs(model, test_size(name))
    assert report.params_after < report.params_before
    assert all(p.channels_after < p.channels_before for p in report.layers)
    with torch.no_grad():
        out = model(x)
        stages = model.forward_intermediates(x, intermediates_only=True)
    assert out.shape == (2, 5)
    assert [s.shape[1] for s in stages] == widths  # the residual stream keeps its width
    assert model.surgery[-1]["op"] == "prune"
    with torch.no_grad():
        assert torch.equal(replayed(name, model)(x), out)


@pytest.mark.parametrize("name", VARIANTS)
def test_keeping_every_channel_is_exact(name):
    model, x = build(name), images(name)
    with torch.no_grad():
        expected = model(x)
    report = prune_channels(model, 1.0, input_size=test_size(name))
    assert report.keep_ratio == 1.0 and report.macs_after == report.macs_before
    assert not getattr(model, "surgery", [])
    with torch.no_grad():
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("name", VARIANTS)
def test_pruning_dead_channels_changes_nothing(name):
    """Zero gamma and beta on half of every branch channel: those channels are exactly zero after the norm (and
    the ReLU), so removing them leaves the outputs unchanged only if producer, norm and consumer are rewired
    consistently and the residual additions still line up."""
    model, x = build(name), images(name)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for link in branch_links(model):
            norm = model.get_submodule(link.norm)
            dead = torch.randperm(norm.num_features, generator=g)[: norm.num_features // 2]
            norm.weight[dead] = 0.0
            norm.bias[dead] = 0.0
        expected = model(x)
    report = prune_channels(model, 0.75, "bn_scale", input_size=test_size(name))
    assert all(p.channels_after >= p.channels_before - p.channels_before // 2 for p in report.layers)
    assert any(p.channels_after < p.channels_before for p in report.layers)
    with torch.no_grad():
        assert_close(model(x), expected)


def test_thinner_modules_hold_the_kept_weights():
    model = build("cifar_resnet20")
    unit = model.layer1[0]
    with torch.no_grad():  # filter i has L1 norm growing with i: L1 keeps the last ones
        unit.conv1.weight.copy_(torch.arange(1.0, 17.0).view(16, 1, 1, 1).expand_as(unit.conv1.weight))
    conv1, bn1, conv2 = unit.conv1.weight.clone(), unit.bn1.running_var.clone(), unit.conv2.weight.clone()
    prune_channels(model, 0.5, "l1")
    keep = torch.arange(16 - unit.conv1.out_channels, 16)
    assert torch.equal(model.layer1[0].conv1.weight, conv1[keep])
    assert torch.equal(model.layer1[0].bn1.running_var, bn1[keep])
    assert model.layer1[0].bn1.num_features == len(keep)
    assert torch.equal(model.layer1[0].conv2.weight, conv2[:, keep])


def test_bn_scale_criterion_keeps_the_largest_gammas():
    model = build("resnet18")
    gamma = torch.linspace(2.0, 0.1, 128) * torch.tensor([1.0, -1.0]).repeat(64)  # |gamma| falls, signs alternate
    with torch.no_grad():
        model.layer2[0].bn1.weight.copy_(gamma)
    prune_channels(model, 0.5, "bn_scale", input_size=64)
    kept = model.layer2[0].bn1.weight
    assert 0 < len(kept) < 128 and torch.equal(kept, gamma[: len(kept)])


def test_channel_multiple_rounds_widths():
    model = build("cifar_resnet56")
    report = prune_channels(model, 0.5, channel_multiple=8)
    assert all(p.channels_after % 8 == 0 for p in report.layers)
    assert report.macs_fraction <= 0.5


def test_grouped_and_group_norm_networks_are_refused_clearly():
    resnext = create_model("resnext50_32x4d", layers=(1, 1, 1, 1))
    assert branch_links(resnext) == []  # every link touches the grouped 3x3
    with pytest.raises(ValueError, match="nothing to prune"):
        prune_channels(resnext, 0.5, input_size=64)
    with pytest.raises(ValueError, match="needs BatchNorm, not GroupNorm2d"):
        prune_channels(create_model("cifar_resnet20", norm="group"), 0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"macs_fraction": 0.0}, "macs_fraction must be a number in \\(0, 1\\]"),
     ({"macs_fraction": 1.5}, "macs_fraction must be"),
     ({"macs_fraction": "half"}, "macs_fraction must be"),
     ({"macs_fraction": 0.5, "criterion": "l2"}, "criterion='l2' is not one of \\['l1', 'bn_scale'\\]"),
     ({"macs_fraction": 0.5, "channel_multiple": 0}, "channel_multiple must be a positive integer"),
     ({"macs_fraction": 0.01}, "cannot reach .* by pruning branch channels")],
)  # fmt: skip
def test_bad_arguments_give_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        prune_channels(create_model("cifar_resnet20"), **kwargs)
    assert "\n" not in str(err.value)


# -- unstructured --------------------------------------------------------------------------------------------


def test_sparsity_report_counts_exactly():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(3, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.0, 1.0, 0.0, 2.0, 3.0, 0.0]).view(3, 2, 1, 1))
        model[0].bias.zero_()  # biases are not counted
        model[2].weight.copy_(torch.eye(3, 4).T)  # 3 non-zeros of 12
    report = sparsity_report(model)
    assert [(r.name, r.zeros, r.total) for r in report.layers] == [("0", 3, 6), ("2", 9, 12)]
    assert (report.zeros, report.total, report.sparsity) == (12, 18, 12 / 18)
    assert report.as_dict() == {"global": {"zeros": 12, "total": 18, "sparsity": 12 / 18},
                                "layers": {"0": {"zeros": 3, "total": 6, "sparsity": 0.5},
                                           "2": {"zeros": 9, "total": 12, "sparsity": 0.75}}}  # fmt: skip
    lines = report.table().splitlines()
    assert lines[0].split() == ["layer", "zeros", "total", "sparsity"]
    assert lines[-1].split() == ["global", "12", "18", "66.67%"]


def test_magnitude_pruning_is_global_exact_and_survives_training():
    model = create_model("cifar_resnet20", num_classes=5)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = {n: m.weight.detach().abs().clone() for n, m in layers}
    report = magnitude_prune(model, 0.7)
    assert report.zeros == round(0.7 * report.total) == round(0.7 * sum(w.numel() for w in weights.values()))
    for row in report.layers:
        assert row.zeros == int((model.get_submodule(row.name).weight == 0).sum())
    pruned = torch.cat([w[model.get_submodule(n).weight_mask == 0] for n, w in weights.items()])
    kept = torch.cat([w[model.get_submodule(n).weight_mask == 1] for n, w in weights.items()])
    assert pruned.max() <= kept.min()  # one global threshold, not per layer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert sparsity_report(model).zeros == report.zeros  # the masks hold while fine-tuning
    assert magnitude_prune(model, 0.8).zeros == round(0.8 * report.total)  # gradual: only the difference added


def test_masked_and_permanent_models_replay():
    model = create_model("cifar_resnet20", num_classes=5).eval()
    magnitude_prune(model, 0.5)
    x = images("cifar_resnet20")
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(replayed("cifar_resnet20", model)(x), expected)  # weight_orig/weight_mask keys
    report = make_permanent(model)
    assert report.zeros == round(0.5 * report.total)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), expected)
        assert torch.equal(replayed("cifar_resnet20", model)(x), expected)


def test_structured_pruning_refuses_masks_and_bad_sparsity():
    model = create_model("cifar_resnet20")
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
        magnitude_prune(model, 1.0)
    magnitude_prune(model, 0.3)
    with pytest.raises(ValueError, match="make_permanent"):
        prune_channels(model, 0.5)
