"""Depth pruning: whole residual units dropped to a MAC budget, least harmful first, on every family; the edit
replays from a checkpoint's surgery and composes with channel pruning."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetkit import count_macs, create_model
from resnetkit.compress import apply_surgery, drop_units, droppable_units, prune_channels
from resnetkit.models.surgery import set_submodule, surgery_of
from resnetkit.compress.depth import _lesion_scores
from resnetkit.models.blocks import ResidualUnit

from .conftest import randomize_norms, test_size

# CIFAR basic, ImageNet basic and bottleneck, pre-activation, squeeze-excitation, wide.
VARIANTS = ["cifar_resnet20", "resnet18", "resnet50", "preact_resnet18", "seresnet50", "cifar_wrn16_8"]


def build(name: str) -> nn.Module:
    return randomize_norms(create_model(name, num_classes=5)).eval()


def images(name: str, batch: int = 8) -> torch.Tensor:
    return torch.randn(batch, 3, test_size(name), test_size(name))


@pytest.mark.parametrize("name", VARIANTS)
def test_drop_units_to_a_budget_and_replay(name):
    model, x = build(name), images(name)
    candidates = droppable_units(model)
    units = sum(isinstance(m, ResidualUnit) for m in model.modules())
    report = drop_units(model, 0.75, x, input_size=test_size(name), progress=False)
    assert report.macs_fraction <= 0.75 and report.macs_after == count_macs(model, test_size(name))
    assert report.params_after < report.params_before
    dropped = [d.name for d in report.dropped]
    assert dropped and set(dropped) <= set(candidates)
    assert all(isinstance(model.get_submodule(n), nn.Identity) for n in dropped)
    assert sum(isinstance(m, ResidualUnit) for m in model.modules()) == units - len(dropped)
    assert surgery_of(model) == [{"op": "drop_units", "units": dropped}]
    fresh = apply_surgery(create_model(name, num_classes=5), json.loads(json.dumps(model.surgery)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))


def test_only_units_with_identity_shortcuts_are_candidates():
    model = create_model("cifar_resnet20")
    # 3 units per stage; the first units of stages 2 and 3 change width and stride (option A padding shortcut)
    assert droppable_units(model) == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1",
                                      "layer3.2"]  # fmt: skip
    with pytest.raises(ValueError, match="nothing to drop"):
        drop_units(create_model("cifar_plain20"), 0.5, images("cifar_plain20"), progress=False)


def test_a_unit_whose_branch_is_zero_goes_first_and_changes_nothing():
    model, x = build("cifar_resnet20"), images("cifar_resnet20")
    with torch.no_grad():  # bn2 outputs zero: y = relu(0 + x) = x, as x is the previous unit's ReLU output
        model.layer2[2].bn2.weight.zero_()
        model.layer2[2].bn2.bias.zero_()
        expected = model(x)
    report = drop_units(model, 0.95, x, progress=False)
    assert [d.name for d in report.dropped] == ["layer2.2"]
    assert report.dropped[0].kl == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_lesion_scores_match_running_the_whole_lesioned_network():
    model, x = build("resnet18"), images("resnet18", 6)
    with torch.no_grad():
        reference = F.log_softmax(model(x), dim=1)
        scores = _lesion_scores(model, droppable_units(model), x, reference, batch_size=4)  # two batches
        for name, score in scores.items():
            unit = model.get_submodule(name)
            set_submodule(model, name, nn.Identity())
            whole = F.kl_div(F.log_softmax(model(x), dim=1), reference, reduction="batchmean", log_target=True)
            set_submodule(model, name, unit)
            assert score == pytest.approx(whole.item(), rel=1e-4, abs=1e-6)


def test_an_unreachable_budget_is_refused_and_nothing_changes():
    model = build("cifar_resnet20")
    with pytest.raises(ValueError, match="cannot reach"):
        drop_units(model, 0.05, images("cifar_resnet20"), progress=False)
    assert not surgery_of(model) and not any(isinstance(m, nn.Identity) for m in model.layer1)


def test_depth_then_channel_pruning_replays():
    model, x = build("cifar_resnet56"), images("cifar_resnet56", 4)
    drop_units(model, 0.6, x, progress=False)
    prune_channels(model, 0.5)
    assert [edit["op"] for edit in model.surgery] == ["drop_units", "prune"]
    fresh = apply_surgery(create_model("cifar_resnet56", num_classes=5), json.loads(json.dumps(model.surgery)))
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))
