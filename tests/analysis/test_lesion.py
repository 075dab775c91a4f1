"""Lesion studies (Veit et al. 2016, Sec. 4): units deleted or swapped at test time."""

from __future__ import annotations

import pytest
import torch

from resnetkit.analysis.lesion import grid, lesion, plot_lesion
from resnetkit.analysis.units import forward_units, residual_units, without_branch
from resnetkit.models import create_model
from tests.conftest import randomize_norms

SIZE = 16  # CIFAR layout at 16x16: 4x4 after the last stage


def batch(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def net(name: str = "cifar_resnet20") -> torch.nn.Module:
    return randomize_norms(create_model(name, num_classes=10)).eval()


def zero_branches(model: torch.nn.Module) -> torch.nn.Module:
    """Make every residual branch output exactly 0: the scale and the shift of its last norm zeroed
    (``zero_init_last`` leaves the shift, and the branch of an option-A unit that widens)."""
    with torch.no_grad():
        for unit in residual_units(model):
            unit.module.bn2.weight.zero_()
            unit.module.bn2.bias.zero_()
    return model


@torch.no_grad()
def own_predictions(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images).argmax(dim=1)


@torch.no_grad()
def naive_error(model, images, labels, plan: dict) -> float:
    """Error (%) of one full pass with the units at ``plan``'s positions replaced (``plan[i](unit, x)``)."""
    logits = forward_units(model, images, lambda u, x: plan[u.index](u, x) if u.index in plan else u.module(x))
    return 100.0 * float((logits.argmax(dim=1) != labels).float().mean())


def test_identity_initialised_resnet_is_unchanged_by_every_lesion():
    # with every branch exactly 0 each unit is its shortcut: deleting or swapping units changes no prediction
    model = zero_branches(net())
    images = batch()
    labels = own_predictions(model, images)
    r = lesion(model, images, labels, progress=False)
    assert r.baseline_error == 0.0
    assert set(r.single_errors) == {0.0}
    assert r.deleted and all(set(t.errors) == {0.0} for t in r.deleted)
    assert r.swapped and all(set(t.errors) == {0.0} for t in r.swapped)
    assert r.mean_single_cost == 0.0 and r.max_single_cost == 0.0


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_plain20"])
def test_deleting_units_of_a_trained_like_network_changes_predictions(name):
    # the same random networks with live branches: their own predictions change when units go
    model = net(name)
    images = batch()
    r = lesion(model, images, own_predictions(model, images), progress=False)
    assert r.baseline_error == 0.0
    assert max(r.single_errors) > 0.0
    assert r.deleted[-1].mean > 0.0  # n // 2 units deleted at once


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_plain20"])
def test_prefix_reuse_matches_full_passes(name):
    model = net(name)
    images, labels = batch(), torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    r = lesion(model, images, labels, batch_size=32, progress=False)
    assert r.baseline_error == naive_error(model, images, labels, {})
    for i in range(len(r.single_errors)):
        assert r.single_errors[i] == naive_error(model, images, labels, {i: without_branch}), i
    units = residual_units(model)
    for t in r.deleted:
        for deleted, error in zip(t.changed, t.errors):
            assert error == naive_error(model, images, labels, dict.fromkeys(deleted, without_branch))
    for t in r.swapped:
        for pairs, error in zip(t.changed, t.errors):
            plan = {}
            for a, b in pairs:
                plan[a] = lambda u, x, other=units[b]: other.module(x)
                plan[b] = lambda u, x, other=units[a]: other.module(x)
            assert error == naive_error(model, images, labels, plan)


def test_batches_add_up():
    model, images = net(), batch(40)
    labels = torch.randint(0, 10, (40,), generator=torch.Generator().manual_seed(2))
    whole = lesion(model, images, labels, batch_size=40, progress=False)
    split = lesion(model, images, labels, batch_size=16, progress=False)
    assert split.single_errors == pytest.approx(whole.single_errors)
    assert split.baseline_error == pytest.approx(whole.baseline_error)


def test_draws_follow_the_paper():
    model = net()
    r = lesion(model, batch(8), torch.zeros(8, dtype=torch.long), draws=4, progress=False)
    units = residual_units(model)
    n = len(units)
    assert r.downsamples == (False, False, False, True, False, False, True, False, False)
    assert set(r.downsampling_costs) == {"layer2.0", "layer3.0"}
    assert [t.k for t in r.deleted] == grid(n // 2) == [1, 2, 3, 4]
    for t in r.deleted:
        assert len(t.errors) == 4 and all(len(set(d)) == t.k for d in t.changed)
    # 3 swappable units per stage but 2 in the downsampling stages: one disjoint pair in each stage
    assert [t.k for t in r.swapped] == [1, 2, 3]
    for t in r.swapped:
        for pairs in t.changed:
            flat = [i for p in pairs for i in p]
            assert len(pairs) == t.k and len(set(flat)) == 2 * t.k
            assert all(units[a].stage == units[b].stage and not units[a].downsamples | units[b].downsamples
                       for a, b in pairs)  # fmt: skip


def test_grid():
    assert grid(27) == [1, 5, 8, 12, 16, 20, 23, 27]
    assert grid(3) == [1, 2, 3]
    assert grid(1) == [1] and grid(0) == []


def test_deterministic_given_seed_and_mode_restored():
    model, images = net(), batch(8)
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(3))
    model.train()
    a = lesion(model, images, labels, seed=5, progress=False)
    assert model.training
    assert a.as_dict() == lesion(model, images, labels, seed=5, progress=False).as_dict()
    other = lesion(model, images, labels, seed=6, progress=False)
    assert [t.changed for t in other.deleted] != [t.changed for t in a.deleted]


def test_ks_outside_the_network_are_refused():
    with pytest.raises(ValueError, match="1..9"):
        lesion(net(), batch(4), torch.zeros(4, dtype=torch.long), ks=[10], progress=False)


def test_plot_writes_png(tmp_path):
    images = batch(8)
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(4))
    resnet = lesion(net(), images, labels, draws=2, progress=False, label="ResNet-20")
    plain = lesion(create_model("cifar_plain20", layers=(1, 1, 1)), images, labels, draws=2, progress=False,
                   label="plain-8")  # fmt: skip
    path = tmp_path / "lesion.png"
    plot_lesion([resnet, plain], path)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
