"""Gradient flow: norms as autograd gives them, the model left as it was, plain against residual at initialisation."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetkit.analysis.gradients import gradient_norms, plot_gradients
from resnetkit.models import create_model

from ..conftest import randomize_norms


def net(name: str = "cifar_resnet20", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, **overrides)


def batch(n: int = 16, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_norms_equal_a_manual_autograd_computation():
    model, (x, y) = randomize_norms(net(shortcut="B")), batch(n=20)  # B: projection convolutions in the shortcuts
    result = gradient_norms(model, x, y, batch_size=12, progress=False)
    expected = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert result.layers == tuple(expected)  # registration order is forward order in these units
    assert result.layers[0] == "conv1" and result.layers[-1] == "fc" and "layer2.0.downsample.0" in result.layers

    manual = net(shortcut="B")
    manual.load_state_dict(model.state_dict())
    manual.train()  # batch statistics; this network has no dropout
    loss = F.cross_entropy(manual(x[:12]), y[:12])
    loss.backward()
    modules = dict(manual.named_modules())
    for name, grad_norm, weight_norm in zip(result.layers, result.grad_norm, result.weight_norm):
        assert grad_norm == pytest.approx(modules[name].weight.grad.norm().item(), rel=1e-4, abs=1e-9)
        assert weight_norm == pytest.approx(modules[name].weight.norm().item(), rel=1e-6)
    assert result.loss == pytest.approx(loss.item(), rel=1e-6)
    assert result.batch_size == 12
    assert result.ratio[3] == pytest.approx(result.grad_norm[3] / result.weight_norm[3])


@pytest.mark.parametrize("train", [False, True])
def test_the_model_is_left_exactly_as_it_was(train):
    model, (x, y) = randomize_norms(net()), batch()
    model.train(train)
    model.layer1[0].bn1.eval()  # a mixed mode must survive too
    model.layer3[2].conv2.weight.requires_grad_(False)
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    gradient_norms(model, x, y, progress=False)
    assert modes == {name: m.training for name, m in model.named_modules()}
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # running stats, counters too
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()].count(False) == 1


def test_deterministic():
    model, (x, y) = net(), batch()
    first = gradient_norms(model, x, y, progress=False).as_dict()
    assert gradient_norms(model, x, y, progress=False).as_dict() == first
    assert first["line_correlation"] is not None


def test_line_points_zero_skips_only_the_line_correlation():
    model, (x, y) = net(), batch()
    with_line = gradient_norms(model, x, y, progress=False)
    without = gradient_norms(model, x, y, line_points=0, progress=False)
    assert without.line_correlation is None and without.grad_norm == with_line.grad_norm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_initialisation_plain_gradients_explode_toward_the_input_and_shatter(seed):
    """With batch norm, a deep plain net's gradient grows toward the input (Yang et al. 2019, "A Mean Field Theory
    of Batch Normalization") rather than vanishing, and its input gradient is close to white noise (Balduzzi et
    al. 2017); its residual twin's stays within a small factor and correlated. Seen for seeds 0-4 at 8x8 and 32x32:
    first/last 1,200-5,200 (plain-56) against 0.3-1.2 (ResNet-56); neighbour correlation |.| < 0.06 against
    0.12-0.30."""
    x, y = batch(n=16, size=8, seed=100 + seed)
    plain = gradient_norms(net("cifar_plain56", seed), x, y, line_points=16, progress=False)
    resnet = gradient_norms(net("cifar_resnet56", seed), x, y, line_points=16, progress=False)
    assert plain.layers == resnet.layers  # the same layers: the twins differ only in their shortcuts
    assert plain.first_last_ratio > 100 * resnet.first_last_ratio
    assert resnet.line_correlation > abs(plain.line_correlation) + 0.1


def test_plot_and_json(tmp_path):
    x, y = batch()
    results = [
        gradient_norms(net(name), x, y, when=when, progress=False, label=name)
        for when in ("init", "trained")
        for name in ("cifar_resnet20", "cifar_plain20")
    ]
    data = json.loads(json.dumps([r.as_dict() for r in results]))
    assert [layer["depth"] for layer in data[0]["layers"]] == list(range(20))  # 19 convolutions and fc
    path = tmp_path / "gradients.png"
    plot_gradients(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert list(tmp_path.iterdir()) == [path]


def test_line_correlation_equals_a_manual_computation():
    model, (x, y) = net(), batch(n=12)
    result = gradient_norms(model, x, y, line_points=5, progress=False)

    manual = net()
    for m in manual.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics := those of the one batch below
    with torch.no_grad():
        manual.train()(x)
    manual.eval()
    grads = []
    for t in torch.linspace(0, 1, 5):
        point = ((1 - t) * x[0] + t * x[1]).unsqueeze(0).requires_grad_(True)
        manual(point)[0, y[0]].backward()
        grads.append(point.grad.flatten().double())
    expected = [torch.corrcoef(torch.stack([a, b]))[0, 1].item() for a, b in itertools.pairwise(grads)]
    assert result.line_correlation == pytest.approx(sum(expected) / 4, abs=1e-5)
    assert -1 < result.line_correlation < 1
