"""Gradient along paths of each length (Veit et al. 2016, Sec. 5)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from resnetkit.analysis.paths import effective_range, path_gradient, paths, plot_paths
from resnetkit.analysis.units import head, residual_units
from resnetkit.models import create_model
from tests.conftest import randomize_norms


def batch(n: int = 12, size: int = 8, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def tiny(**options) -> torch.nn.Module:
    """A CIFAR ResNet with one unit per stage (3 units); random norms so that eval mode is not trivial."""
    return randomize_norms(create_model("cifar_resnet20", layers=(1, 1, 1), **options)).eval()


def autograd_gradient(model, images, labels) -> torch.Tensor:
    """The ordinary gradient of the summed cross-entropy at the first unit's input."""
    first = model.forward_stem(images).detach().requires_grad_()
    x = first
    for unit in residual_units(model):
        x = unit.module(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(head(model, x), labels, reduction="sum"), first)
    return grad


@pytest.mark.parametrize(
    "options",
    [{}, {"shortcut": "B"}, {"preact": True, "shortcut": "B"}],
    ids=["post-activation option A", "projection shortcuts", "pre-activation"],
)
def test_paths_of_all_lengths_add_up_to_the_gradient(options):
    model = tiny(**options).double()
    images, labels = batch(dtype=torch.float64)
    subsets = [set(c) for r in range(4) for c in itertools.combinations(range(3), r)]
    total = sum(path_gradient(model, images, labels, s) for s in subsets)
    expected = autograd_gradient(model, images, labels)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(total, expected, atol=1e-10, rtol=1e-8)
    # no single path is the whole gradient: the decomposition is not trivial
    assert all((path_gradient(model, images, labels, s) - expected).abs().max() > 1e-6 for s in subsets)


def test_path_counts_are_binomial():
    model = create_model("cifar_resnet20")
    r = paths(model, *batch(), samples=2, batch_size=6, progress=False)
    assert r.n == 9 and r.ks == tuple(range(10))
    assert sum(r.counts) == 2**9
    assert r.counts[3] == math.comb(9, 3)
    assert sum(r.distribution) == pytest.approx(1.0)
    assert r.total == pytest.approx([c * g for c, g in zip(r.counts, r.grad_mean)])
    lo, hi = r.effective_range
    assert 0 <= lo <= r.mode <= hi <= 9
    window = sum(d for k, d in zip(r.ks, r.distribution) if lo <= k <= hi)
    assert window >= 0.9


def test_zero_branches_carry_no_gradient():
    # every branch's last norm zeroed, scale and shift: each unit is its shortcut, and only the path of length 0
    # (all shortcuts) carries gradient
    model = tiny()
    with torch.no_grad():
        for unit in residual_units(model):
            unit.module.bn2.weight.zero_()
            unit.module.bn2.bias.zero_()
    r = paths(model, *batch(), samples=2, batch_size=6, progress=False)
    assert r.grad_mean[0] > 0
    assert r.grad_mean[1:] == (0.0, 0.0, 0.0)
    assert r.mode == 0 and r.effective_range == (0, 0)


def test_plain_network_is_refused():
    plain = create_model("cifar_plain20", layers=(1, 1, 1))
    with pytest.raises(ValueError, match="plain network"):
        paths(plain, *batch(), progress=False)
    with pytest.raises(ValueError, match="plain network"):
        path_gradient(plain, *batch(), {0})


def test_bad_lengths_and_subsets_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"0\.\.3"):
        paths(model, *batch(), ks=[4], progress=False)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        path_gradient(model, *batch(), {3})


def test_deterministic_given_seed_and_mode_restored():
    model = tiny().train()
    images, labels = batch(24)
    a = paths(model, images, labels, samples=3, batch_size=8, seed=1, progress=False)
    assert model.training
    assert a.as_dict() == paths(model, images, labels, samples=3, batch_size=8, seed=1, progress=False).as_dict()
    assert a.grad_mean != paths(model, images, labels, samples=3, batch_size=8, seed=2, progress=False).grad_mean


def test_effective_range_is_the_narrowest_window():
    assert effective_range(range(6), [0, 1, 8, 1, 0, 0]) == (1, 2)
    assert effective_range(range(6), [0, 1, 8, 0, 1, 0]) == (1, 2)
    assert effective_range(range(5), [5, 0, 0, 0, 5]) == (0, 4)
    assert effective_range(range(4), [0, 0, 0, 0]) == (0, 3)


def test_plot_writes_png(tmp_path):
    images, labels = batch()
    results = [
        paths(tiny(), images, labels, samples=2, batch_size=6, progress=False, label="ResNet-8"),
        paths(create_model("cifar_resnet20"), images, labels, samples=2, batch_size=6, progress=False,
              label="ResNet-20"),
    ]  # fmt: skip
    path = tmp_path / "paths.png"
    plot_paths(results, path)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
