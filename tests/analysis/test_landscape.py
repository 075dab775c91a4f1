"""Loss landscapes (Li et al. 2018): filter-normalised directions, the grid, the init -> solution path, smoothness."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetkit.analysis.landscape import filter_normalized_direction, landscape, plot_landscape, smoothness
from resnetkit.models import create_model

from ..conftest import randomize_norms

SMALL = {"steps": 5, "steps_1d": 5, "span": 1.0, "progress": False}


def tiny(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("cifar_resnet20", layers=(1, 1, 1), widths=(8, 8, 16), stem_width=8, **overrides)
    return randomize_norms(model, seed).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 3, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def loss_with_stats_of_images(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Eval-mode loss after recomputing every BatchNorm's statistics on ``x`` (one batch), done by hand."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        model(x)
        return F.cross_entropy(model.eval()(x), y).item()


def test_direction_filters_have_the_norms_of_the_weights_filters():
    model = tiny()
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    checked = 0
    for name, p in model.named_parameters():
        if p.dim() > 1:
            d = direction[name]
            assert d.shape == p.shape and not torch.equal(d, torch.zeros_like(d))
            torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5, atol=0)
            assert not torch.allclose(d, p)  # rescaled noise, not the weight itself
            checked += 1
    assert checked == 8  # 7 convolutions and the classifier


def test_direction_is_zero_on_1d_parameters_and_leaves_the_model_alone():
    model = tiny()
    before = snapshot(model)
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    assert direction.keys() == dict(model.named_parameters()).keys()  # no buffers
    ones = [name for name, p in model.named_parameters() if p.dim() == 1]
    assert len(ones) == 15 and all(torch.count_nonzero(direction[name]) == 0 for name in ones)
    assert_same_state(model, before)


def test_directions_are_deterministic_for_a_seed():
    model = tiny()
    a = filter_normalized_direction(model, torch.Generator().manual_seed(5))
    b = filter_normalized_direction(model, torch.Generator().manual_seed(5))
    c = filter_normalized_direction(model, torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_landscape_restores_parameters_buffers_and_mode_exactly(data):
    model, init = tiny(1), tiny(2)
    model.train()
    before = snapshot(model)
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    landscape(model, *data, init_state=init.state_dict(), batch_size=5, **SMALL)
    assert_same_state(model, before)  # the path recomputes BN statistics: they are put back too
    assert model.training and all(m.training for m in model.modules())
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta


def test_center_of_the_grid_is_the_models_own_loss(data):
    model = tiny()
    x, y = data
    with torch.no_grad():
        logits = model(x)
    expected, accuracy = F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
    result = landscape(model, x, y, batch_size=5, **SMALL)  # 3 batches: the mean is over images, not batches
    assert result.coords[2] == 0.0 and result.alphas[2] == 0.0
    assert result.losses_2d[2][2] == pytest.approx(expected, rel=1e-5)
    assert result.losses_1d[2] == pytest.approx(expected, rel=1e-5)
    assert result.center_loss == pytest.approx(expected, rel=1e-5)
    assert result.center_accuracy == pytest.approx(accuracy)
    assert result.num_images == 12
    # the 1-D curve runs along d1, the grid's first index: both see the same points at beta = 0
    np.testing.assert_allclose(result.losses_1d, [row[2] for row in result.losses_2d], rtol=1e-5)
    assert max(max(row) for row in result.losses_2d) > 1.2 * expected  # the directions do move the weights


def test_landscape_is_deterministic_for_a_seed(data):
    model = tiny()
    a = landscape(model, *data, seed=4, **SMALL).as_dict()
    b = landscape(model, *data, seed=4, **SMALL).as_dict()
    c = landscape(model, *data, seed=5, **SMALL).as_dict()
    assert a == b
    assert a["losses_2d"] != c["losses_2d"]


def test_path_runs_from_the_initial_weights_to_the_solution(data):
    model, init = tiny(1), tiny(2)
    x, y = data
    result = landscape(model, x, y, init_state=init.state_dict(), batch_size=64, **SMALL)
    t = result.path_t
    assert t[0] == -0.5 and t[-1] == 1.5 and 0.0 in t and 1.0 in t
    assert len(result.path_losses) == len(t) == len(result.path_accuracies)
    at_init, at_solution = result.path_losses[t.index(0.0)], result.path_losses[t.index(1.0)]
    assert at_init == pytest.approx(loss_with_stats_of_images(init, x, y), rel=1e-5)
    assert at_solution == pytest.approx(loss_with_stats_of_images(model, x, y), rel=1e-5)
    assert at_init != pytest.approx(at_solution, rel=1e-3)


def test_path_refuses_an_init_state_of_another_network(data):
    model = tiny()
    state = tiny().state_dict()
    state["fc.weight"] = torch.zeros(3, 16)
    with pytest.raises(ValueError, match="fc.weight"):
        landscape(model, *data, init_state=state, **SMALL)
    del state["fc.weight"]
    with pytest.raises(ValueError, match="lacks 1"):
        landscape(model, *data, init_state=state, **SMALL)


def grid(fn, n: int = 9) -> tuple[np.ndarray, float]:
    coords = np.linspace(-1, 1, n)
    a, b = np.meshgrid(coords, coords, indexing="ij")
    return fn(a, b), float(coords[1] - coords[0])


def test_smoothness_of_a_bowl():
    s = smoothness(*grid(lambda a, b: a**2 + b**2))
    assert s["convex_fraction"] == 1.0
    assert s["mean_eig_ratio"] == pytest.approx(1.0)
    assert s["negative_curvature_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert s["local_minima"] == 1
    assert s["quadratic_misfit"] == pytest.approx(0.0, abs=1e-9)
    assert s["interior_points"] == 49


def test_smoothness_of_a_saddle_and_of_a_tilted_valley():
    saddle = smoothness(*grid(lambda a, b: a**2 - b**2))
    assert saddle["convex_fraction"] == 0.0
    assert saddle["negative_curvature_ratio"] == pytest.approx(1.0)
    assert saddle["local_minima"] == 0
    valley = smoothness(*grid(lambda a, b: (a + b) ** 2 + 0.1 * (a - b) ** 2))  # rotated, one flat-ish axis
    assert valley["convex_fraction"] == 1.0
    assert valley["mean_eig_ratio"] == pytest.approx(0.1)


def test_smoothness_sees_a_rough_surface_and_ignores_the_loss_scale():
    bowl, h = grid(lambda a, b: a**2 + b**2, n=11)
    wave = np.cos(np.pi * np.arange(11) / 2)
    bumps = 0.3 * np.outer(wave, wave)  # an egg crate on the bowl
    rough = smoothness(bowl + bumps, h)
    assert rough["local_minima"] > 3
    assert rough["convex_fraction"] < 0.8
    assert rough["quadratic_misfit"] > 0.2
    scaled = smoothness(5 * (bowl + bumps) + 3, h)
    assert scaled == pytest.approx(rough)
    with pytest.raises(ValueError):
        smoothness(bowl[:2], h)


def test_as_dict_is_json_and_the_plot_is_written(data, tmp_path):
    resnet, plain = tiny(1), tiny(1, shortcut="none")
    with_path = landscape(resnet, *data, init_state=tiny(2).state_dict(), label="resnet", **SMALL)
    without = landscape(plain, *data, label="plain", **SMALL)
    payload = json.loads(json.dumps(with_path.as_dict(), allow_nan=False))
    assert payload["label"] == "resnet" and len(payload["losses_2d"]) == 5 and len(payload["losses_2d"][0]) == 5
    assert set(payload["smoothness"]) >= {"convex_fraction", "mean_eig_ratio", "local_minima"}
    assert without.as_dict()["path_losses"] is None
    out = tmp_path / "landscape.png"
    plot_landscape([with_path, without], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
