"""Feature reuse: linear CKA's invariances (Kornblith et al. 2019), branch-to-shortcut ratios by hand, the plot."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from resnetkit.analysis.reuse import centred_gram, cka_from_grams, linear_cka, plot_reuse, reuse
from resnetkit.models import create_model

from ..conftest import randomize_norms


def features(n: int = 60, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(d: int, seed: int = 1) -> torch.Tensor:
    q, _ = torch.linalg.qr(features(d, d, seed))
    return q


def small_net(name: str = "cifar_resnet20", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_norms(create_model(name, num_classes=10), seed).eval()


def images(n: int = 24, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- linear CKA --------------------------------------------------------------------------------------------------


def test_cka_of_a_representation_with_itself_is_one():
    x = features()
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x, y = features(seed=0), features(d=7, seed=5) + 0.5 * features(d=7, seed=0)[:, :7]
    reference = linear_cka(x, y)
    assert 0.05 < reference < 0.95  # a value with room to move either way
    assert linear_cka(x @ orthogonal(12), y) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x, y @ orthogonal(7, seed=3)) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x @ orthogonal(12), x) == pytest.approx(1.0, abs=1e-10)


def test_cka_is_not_invariant_to_an_arbitrary_invertible_map():
    x = features()
    stretch = orthogonal(12) @ torch.diag(torch.logspace(-2, 2, 12, dtype=torch.float64)) @ orthogonal(12, seed=2)
    assert torch.linalg.matrix_rank(stretch) == 12
    assert linear_cka(x, x @ stretch) < 0.9


def test_cka_of_independent_random_features_is_well_below_one():
    assert linear_cka(features(n=200, d=8, seed=0), features(n=200, d=8, seed=1)) < 0.2


def test_cka_from_grams_equals_cka_from_features():
    x, y = features(d=12, seed=0), features(d=30, seed=1) + features(d=30, seed=0).roll(1, 1)
    expected = linear_cka(x, y)
    assert cka_from_grams(x @ x.T, y @ y.T) == pytest.approx(expected, abs=1e-12)  # centred inside
    assert cka_from_grams(centred_gram(x), centred_gram(y)) == pytest.approx(expected, abs=1e-12)
    # centred_gram centres a slice of columns at a time; the whole must be one Gram
    wide = features(n=8, d=25_000, seed=2).float()
    centred = wide.double() - wide.double().mean(0)
    torch.testing.assert_close(centred_gram(wide), centred @ centred.T)


# -- reuse on networks -------------------------------------------------------------------------------------------


def test_identity_initialised_resnet_has_zero_ratios_and_passes_features_on_unchanged():
    model = small_net()
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith(".bn2"):  # the last norm of every basic unit's branch: F(x) = 0
                m.weight.zero_()
                m.bias.zero_()
    result = reuse(model, images(), batch_size=10, progress=False)
    assert result.ratio_mean == (0.0,) * 9 and result.ratio_std == (0.0,) * 9
    assert result.mean_ratio == 0.0
    for i, down in enumerate(result.downsamples):
        if not down:  # relu(x + 0) = x after a ReLU: the unit's output is its input
            assert result.cka[i][i + 1] == pytest.approx(1.0, abs=1e-9)
    assert sum(result.downsamples) == 2


def hand_ratio(model: nn.Module, x: torch.Tensor, plain: bool) -> torch.Tensor:
    """The first unit's ||F(x)|| / ||x|| per image, written out (its shortcut is the identity, or absent)."""
    with torch.no_grad():
        stem = torch.relu(model.bn1(model.conv1(x)))
        unit = model.layer1[0]
        branch = unit.bn2(unit.conv2(torch.relu(unit.bn1(unit.conv1(stem)))))
        assert unit.residual is not plain
    return branch.flatten(1).norm(dim=1) / stem.flatten(1).norm(dim=1)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_plain20"])
def test_ratio_of_one_unit_equals_a_hand_computation(name):
    model, x = small_net(name), images()
    result = reuse(model, x, batch_size=7, progress=False)
    expected = hand_ratio(model, x, plain=name.startswith("cifar_plain")).double()
    assert result.ratio_mean[0] == pytest.approx(expected.mean().item(), rel=1e-5)
    assert result.ratio_std[0] == pytest.approx(expected.std(unbiased=False).item(), rel=1e-4)
    assert 0.1 < result.ratio_mean[0] < 10


def test_cka_matrix_equals_cka_of_the_units_outputs():
    model, x = small_net(), images(n=20)
    outputs = [model.forward_stem(x).detach()]
    hooks = [model.get_submodule(f"layer{s}.{i}").register_forward_hook(lambda m, a, out: outputs.append(out.detach()))
             for s in (1, 2, 3) for i in range(3)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    result = reuse(model, x, batch_size=6, progress=False)
    assert result.cka_names[0] == "stem" and result.cka_names[1:] == result.units
    for i, j in [(0, 1), (0, 9), (2, 3), (4, 8), (9, 9)]:
        assert result.cka[i][j] == pytest.approx(linear_cka(outputs[i], outputs[j]), abs=1e-6)
        assert result.cka[j][i] == result.cka[i][j]
    assert result.adjacent_cka == pytest.approx(sum(result.cka[i][i + 1] for i in range(1, 9)) / 8)


def test_reuse_restores_the_mode_and_leaves_the_statistics():
    model = small_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reuse(model, images(n=8), progress=False)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plot_and_json(tmp_path):
    x = images(n=12)
    results = [reuse(small_net(name), x, progress=False, label=name) for name in ("cifar_resnet20", "cifar_plain20")]
    data = json.loads(json.dumps([r.as_dict() for r in results]))
    assert len(data[0]["cka"]) == 10 and len(data[1]["ratio_mean"]) == 9
    assert data[1]["residual"] == [False] * 9
    path = tmp_path / "reuse.png"
    plot_reuse(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
