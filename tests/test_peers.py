"""Numerical parity with torchvision and timm: their state dicts load with strict=True and outputs match."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

import resnetkit
from resnetkit import BasicBlock, Bottleneck, ResNet, create_model

from .conftest import randomize_norms

TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
               "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]  # fmt: skip
TIMM = ["resnet50d", "seresnet50", "seresnext50_32x4d", "resnet200", "resnet18", "resnet50"]
ATOL = 1e-5


def assert_same_network(ref: torch.nn.Module, ours: torch.nn.Module, size: int = 64, in_chans: int = 3) -> None:
    """Copy ``ref``'s weights into ``ours`` with strict=True and compare eval outputs and parameter counts."""
    randomize_norms(ref).eval()
    ref_sd = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_sd), "state dict keys differ"
    ours.load_state_dict(ref_sd, strict=True)
    ours.eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        expected, actual = ref(x), ours(x)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", TORCHVISION)
def test_matches_torchvision(name):
    assert_same_network(torchvision.models.get_model(name), create_model(name))


@pytest.mark.parametrize("name", TIMM)
def test_matches_timm(name):
    assert_same_network(timm.create_model(name, pretrained=False), create_model(name))


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_classes=10), dict(replace_stride_with_dilation=[False, True, True]),
     dict(replace_stride_with_dilation=[False, False, True]), dict(groups=32, width_per_group=4),
     dict(norm_layer=FrozenBatchNorm2d), dict(zero_init_residual=True)],
)  # fmt: skip
def test_builders_take_torchvision_keywords(kwargs):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(**kwargs)
    torch.manual_seed(0)
    ours = resnetkit.resnet50(**kwargs)
    assert type(ours) is ResNet
    if kwargs.get("zero_init_residual"):
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values()))
    assert_same_network(ref, ours)


def test_textbook_constructor():
    ref = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10)
    assert_same_network(ref, ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10))
    gray = ResNet(Bottleneck, [3, 4, 6, 3], num_classes=1000, in_channels=1)
    assert gray.conv1.in_channels == 1 and gray(torch.randn(1, 1, 64, 64)).shape == (1, 1000)
    assert type(gray) is type(create_model("resnet50"))


def test_dilated_units_match_timm():
    """Dilation for basic units too (torchvision refuses it); timm's output_stride is the reference."""
    for name, output_stride in [("resnet18", 8), ("resnet34", 16), ("resnet50", 8)]:
        ours = create_model(name, output_stride=output_stride)
        assert_same_network(timm.create_model(name, output_stride=output_stride), ours)
        with torch.no_grad():
            assert ours.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 64 // output_stride


def test_stochastic_depth_rates_match_timm():
    ours = create_model("resnet50", drop_path_rate=0.2)
    ref = timm.create_model("resnet50", drop_path_rate=0.2)
    ours_rates = [getattr(u.drop_path, "p", 0.0) for u in ours.modules() if hasattr(u, "drop_path")]
    ref_rates = [getattr(u.drop_path, "drop_prob", 0.0) if u.drop_path is not None else 0.0
                 for u in ref.modules() if hasattr(u, "drop_path")]  # fmt: skip
    assert ours_rates == pytest.approx(ref_rates)
    assert ours_rates[0] == 0.0 and ours_rates[-1] == pytest.approx(0.2)


def test_torchvision_feature_extractor_and_our_intermediates_agree():
    model = create_model("resnet50").eval()
    nodes = {f"layer{i}": f"c{i + 1}" for i in range(1, 5)}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        theirs = list(extractor(x).values())
        ours = model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_macs_and_params_match_torchvision_metadata():
    """torchvision publishes GMACs ("_ops") and parameter counts for its weights; our counter must agree."""
    from resnetkit.models.complexity import model_row

    for name in TORCHVISION:
        meta = torchvision.models.get_model_weights(name).DEFAULT.meta
        row = model_row(name)
        assert row.params == meta["num_params"]
        assert round(row.macs / 1e9, 3) == pytest.approx(meta["_ops"], abs=1e-3)


def _pytorchcv_names(key: str) -> str:
    """pytorchcv's CIFAR ResNet parameter names as ours: features.stageS.unitU.body.convK.{conv,bn} ->
    layerS.(U-1).{convK,bnK}, se.convK -> se.fcK, identity_conv -> downsample, init_block -> conv1/bn1, output -> fc."""
    import re

    key = re.sub(r"^features\.init_block\.(conv|bn)\.", lambda m: {"conv": "conv1.", "bn": "bn1."}[m[1]], key)
    key = re.sub(r"^features\.stage(\d)\.unit(\d+)\.", lambda m: f"layer{m[1]}.{int(m[2]) - 1}.", key)
    key = re.sub(r"body\.conv(\d)\.conv\.", r"conv\1.", key)
    key = re.sub(r"body\.conv(\d)\.bn\.", r"bn\1.", key)
    key = re.sub(r"se\.conv(\d)\.", r"se.fc\1.", key)
    key = key.replace("identity_conv.conv.", "downsample.0.").replace("identity_conv.bn.", "downsample.1.")
    return key.replace("output.", "fc.")


def test_cifar_resnext_matches_pytorchcv():
    """Xie et al.'s CIFAR ResNeXt-29 as pytorchcv builds it (``resnext29_32x4d_cifar10``), loaded by name mapping."""
    from pytorchcv.model_provider import get_model

    theirs = randomize_norms(get_model("resnext29_32x4d_cifar10", pretrained=False)).eval()
    ours = create_model("cifar_resnext29_32x4d").eval()
    ours.load_state_dict({_pytorchcv_names(k): v for k, v in theirs.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=ATOL)


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_se_resnet_matches_pytorchcv(depth):
    """Hu et al.'s CIFAR SE-ResNet (reduction 16, squeeze width channels // 16) as pytorchcv builds it; pytorchcv's
    CIFAR ResNets use projection shortcuts (option B), so ours is built with shortcut='B' for the comparison."""
    from pytorchcv.model_provider import get_model

    theirs = randomize_norms(get_model(f"seresnet{depth}_cifar10", pretrained=False)).eval()
    ours = create_model(f"cifar_se_resnet{depth}", shortcut="B").eval()
    state = {_pytorchcv_names(k): v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    assert [m.fc1.out_channels for m in (ours.layer1[0].se, ours.layer2[0].se, ours.layer3[0].se)] == [1, 2, 4]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=ATOL)  # logits reach ~10 after 56 layers
