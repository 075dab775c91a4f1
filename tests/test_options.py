"""Options on every family of variants: classes, input channels, zero-init, stochastic depth, dilation, norms,
shortcut options, dropout, v1 stride placement. Each family is tested once, shallow (one unit per stage)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from resnetkit import Norm, ResNetConfig, Shortcut, create_model, get_variant, list_models
from resnetkit.models import ResidualUnit
from resnetkit.models.layers import DropPath, GroupNorm2d, ZeroPadShortcut

from .conftest import test_size


def _families() -> dict[str, str]:
    """One variant per distinct architecture once depth is set aside."""
    seen = {}
    for name in list_models():
        config = get_variant(name).config
        key = config.replace(layers=(1,) * len(config.layers))
        seen.setdefault(key, name)
    return {name: name for name in seen.values()}


FAMILIES = list(_families())
IMAGENET_FAMILIES = [n for n in FAMILIES if not n.startswith("cifar")]
RESIDUAL_FAMILIES = [n for n in FAMILIES if get_variant(n).config.shortcut is not Shortcut.NONE]


def shallow(name: str, units_per_stage: int = 1, **overrides) -> nn.Module:
    n_stages = len(get_variant(name).config.layers)
    return create_model(name, layers=(units_per_stage,) * n_stages, **overrides)


def image(name: str, batch: int = 2, channels: int = 3) -> torch.Tensor:
    return torch.randn(batch, channels, test_size(name), test_size(name))


def test_families_cover_the_zoo():
    assert {"resnet18", "resnet50", "resnet50d", "preact_resnet18", "plain18", "cifar_resnet20", "cifar_wrn16_8"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_num_classes_and_headless(name):
    assert shallow(name, num_classes=5)(image(name)).shape == (2, 5)
    headless = shallow(name, num_classes=0)
    assert headless(image(name)).shape == (2, headless.num_features)
    headless.reset_classifier(3)
    assert headless(image(name)).shape == (2, 3) and headless.config.num_classes == 3
    features = headless.forward_features(image(name))
    assert headless.forward_head(features, pre_logits=True).shape == (2, headless.num_features)


@pytest.mark.parametrize("name", FAMILIES)
def test_in_chans(name):
    model = shallow(name, in_chans=1)
    assert model(image(name, channels=1)).shape[0] == 2
    assert shallow(name, in_channels=4)(image(name, channels=4)).shape[0] == 2


@pytest.mark.parametrize("name", RESIDUAL_FAMILIES)
def test_zero_init_last_makes_identity_units_pass_input_through(name):
    model = shallow(name, units_per_stage=2, zero_init_last=True).eval()
    checked = []

    def check(unit, inputs, output):
        if unit.downsample is None:
            torch.testing.assert_close(output, inputs[0])
            checked.append(unit)

    for unit in model.modules():
        if isinstance(unit, ResidualUnit):
            unit.register_forward_hook(check)
    with torch.no_grad():
        model(image(name).relu())  # post-activation units pass non-negative inputs through relu unchanged
    assert checked


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_zero_init_last_with_option_a_leaves_no_dead_channel(block):
    """Zeroing the branch of a unit whose option-A shortcut appends zero channels would start those channels at
    exactly 0 on both paths; the ReLU after the addition passes them no gradient, so they would stay 0 for good."""
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", block=block, zero_init_last=True)
    assert any(isinstance(m, ResidualUnit) and m.pads_channels for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8)
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(images), pre_logits=True)
    assert (features.abs().sum(0) > 0).all(), f"{int((features.abs().sum(0) == 0).sum())} dead feature channels"


@pytest.mark.parametrize("option", ["zero_init_last", "drop_path_rate"])
def test_residual_only_options_rejected_without_shortcuts(option):
    with pytest.raises(ValueError, match=f"{option} needs shortcuts"):
        create_model("plain18", **{option: True if option == "zero_init_last" else 0.1})


@pytest.mark.parametrize("name", RESIDUAL_FAMILIES)
def test_drop_path_is_stochastic_in_training_only(name):
    model = shallow(name, units_per_stage=2, drop_path_rate=0.5)
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.5)
    x = image(name)
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("divisor", [2, 4])
def test_output_stride_by_dilation(name, divisor):
    natural = get_variant(name).config.valid_output_strides[0]
    output_stride = natural // divisor
    model = shallow(name, units_per_stage=2, output_stride=output_stride).eval()
    size = test_size(name)
    with torch.no_grad():
        features = model.forward_features(image(name))
    assert features.shape[-1] == size // output_stride
    assert model.feature_info[-1]["reduction"] == output_stride
    dilations = {m.dilation[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    assert max(dilations) == divisor


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("norm, cls", [(Norm.GROUP, GroupNorm2d), ("frozen_batch", FrozenBatchNorm2d)])
def test_norm_override(name, norm, cls):
    model = shallow(name, norm=norm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, cls) for m in model.modules())
    model.train()
    out = model(image(name))
    assert torch.isfinite(out).all()
    if cls is FrozenBatchNorm2d:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model(image(name))
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "frozen statistics moved"


def test_norm_layer_callable_overrides_config():
    model = create_model("resnet18", norm_layer=FrozenBatchNorm2d)
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 20


def test_group_norm_picks_a_dividing_group_count():
    assert GroupNorm2d(16).num_groups == 16 and GroupNorm2d(256).num_groups == 32 and GroupNorm2d(24).num_groups == 8


@pytest.mark.parametrize("name", ["cifar_resnet32", "resnet18", "resnet50"])
def test_shortcut_options(name):
    units = {}
    params = {}
    for option in Shortcut:
        model = create_model(name, shortcut=option)
        units[option] = [m for m in model.modules() if isinstance(m, ResidualUnit)]
        params[option] = sum(p.numel() for p in model.parameters())
        assert model(image(name)).shape[0] == 2
    n_changes = sum(u.downsample is not None for u in units[Shortcut.B])
    assert 0 < n_changes < len(units[Shortcut.B])
    assert all(u.downsample is not None for u in units[Shortcut.C])
    assert all(u.downsample is None and not u.residual for u in units[Shortcut.NONE])
    assert all(isinstance(u.downsample, (ZeroPadShortcut, type(None))) for u in units[Shortcut.A])
    assert params[Shortcut.A] == params[Shortcut.NONE] < params[Shortcut.B] < params[Shortcut.C]


def test_option_a_pads_zeros_and_subsamples():
    shortcut = ZeroPadShortcut(stride=2, extra_channels=3)
    x = torch.randn(1, 2, 4, 4)
    y = shortcut(x)
    assert y.shape == (1, 5, 2, 2)
    torch.testing.assert_close(y[:, :2], x[:, :, ::2, ::2])
    assert y[:, 2:].abs().sum() == 0


def test_block_dropout_in_every_unit():
    model = create_model("cifar_wrn16_8", block_drop_rate=0.3)
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    assert all(isinstance(u.dropout, nn.Dropout) and u.dropout.p == 0.3 for u in units)


@pytest.mark.parametrize("name", ["resnet50", "preact_resnet50", "seresnext50_32x4d"])
def test_stride_in_1x1_moves_the_stride(name):
    v15, v1 = create_model(name), create_model(name, stride_in_1x1=True)
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    assert (v1.layer2[0].conv1.stride, v1.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert v1(image(name)).shape == v15(image(name)).shape


def test_config_round_trips_through_plain_dicts():
    for name in list_models():
        config = get_variant(name).config
        assert ResNetConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "overrides, error, match",
    [(dict(depth=50), TypeError, "unknown model option 'depth'"),
     (dict(shortcut="D"), ValueError, "shortcut='D' is not one of"),
     (dict(output_stride=12), ValueError, "output_stride=12 is not possible"),
     (dict(replace_stride_with_dilation=[True, False, False]), ValueError, "only the last stages"),
     (dict(drop_path_rate=1.5), ValueError, "drop_path_rate must lie in"),
     (dict(groups=32), ValueError, "needs the bottleneck")],
)  # fmt: skip
def test_bad_options_give_one_line_errors(overrides, error, match):
    with pytest.raises(error, match=match) as info:
        create_model("resnet18", **overrides)
    assert "\n" not in str(info.value)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="did you mean resnet50"):
        create_model("resnet05")


# -- options for Keras Applications weights (resnetkit.weights.keras) ----------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "preact_resnet50", "cifar_resnet20"])
def test_conv_bias_and_norm_eps_reach_every_layer(name):
    default, model = shallow(name), shallow(name, conv_bias=True, norm_eps=1e-3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is not None for m in convs)
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert {m.eps for m in default.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    assert set(default.state_dict()) < set(model.state_dict())  # biases are new keys; every other key is kept
    grouped = shallow(name, norm="group", norm_eps="1e-3")  # as YAML reads it
    assert {m.eps for m in grouped.modules() if isinstance(m, nn.GroupNorm)} == {1e-3}


def _unit_stride(unit: nn.Module) -> int:
    return max(m.stride[0] for m in unit.children() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["resnet50", "preact_resnet18"])
def test_stride_last_unit_moves_each_stride_to_the_stage_end(name):
    model = shallow(name, units_per_stage=2, stride_last_unit=True).eval()
    for stage, stride in zip((model.layer1, model.layer2, model.layer3, model.layer4), (2, 2, 2, 1)):
        assert [_unit_stride(u) for u in stage] == [1, stride]
        last = stage[-1].downsample  # Keras ResNetV2: a parameter-free subsampling of the unit's input
        assert (isinstance(last, ZeroPadShortcut) and last.extra_channels == 0) if stride == 2 else last is None
    assert [i["reduction"] for i in model.feature_info] == [8, 16, 32, 32]
    assert model.config.valid_output_strides == (32, 16, 8, 4)
    with torch.no_grad():
        assert model.forward_features(image(name)).shape[-1] == test_size(name) // 32
        dilated = shallow(name, units_per_stage=2, stride_last_unit=True, output_stride=8).eval()
        assert dilated.forward_features(image(name)).shape[-1] == test_size(name) // 8
    assert [i["reduction"] for i in dilated.feature_info] == [8, 8, 8, 8]
    assert max(m.dilation[0] for m in dilated.modules() if isinstance(m, nn.Conv2d)) == 4


def test_stem_pool_zero_pad_differs_only_for_negative_inputs():
    zero, inf = create_model("preact_resnet18", stem_pool_zero_pad=True), create_model("preact_resnet18")
    x = -torch.rand(1, 64, 8, 8)  # the pre-activation stem pools the raw convolution, which can be negative
    assert zero.maxpool(x).shape == inf.maxpool(x).shape
    assert zero.maxpool(x)[0, :, 0, 0].eq(0).all() and not torch.equal(zero.maxpool(x), inf.maxpool(x))
    torch.testing.assert_close(zero.maxpool(x.abs()), inf.maxpool(x.abs()))


@pytest.mark.parametrize(
    "overrides, match",
    [(dict(norm_eps=0.0), "norm_eps must be positive"),
     (dict(stem_pool_zero_pad=True, stem="cifar"), "stem_pool_zero_pad needs a stem with a max-pool")],
)  # fmt: skip
def test_keras_options_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnet18", **overrides)
