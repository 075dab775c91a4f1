"""Shared helpers: tiny inputs for each layout and norms with non-trivial statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetkit import get_variant


def test_size(name: str) -> int:
    """Smallest input the tests use for a variant: 64 for ImageNet layouts (2x2 at stride 32), 32 for CIFAR."""
    return 64 if get_variant(name).input_size > 32 else 32


test_size.__test__ = False  # a helper, not a test


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine terms and running statistics, so eval-mode comparisons see them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
