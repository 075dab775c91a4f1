"""Video ResNets from the one parametrised ResNet: torchvision's r3d_18, mc3_18 and r2plus1d_18 load into ours and
give the same outputs; every video variant reports its features; inflation keeps a 2D network's output on clips
of identical frames (I3D's "boring video" fixed point), exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import video as tv_video

from resnetkit import ResNet, ResNetConfig, create_model, get_variant, list_models
from resnetkit.models import Metric, ModelRecord, ResidualUnit
from resnetkit.models.config import Conv, Stem, TimePad
from resnetkit.models.inflate import inflate
from resnetkit.models.video import TimePaddedConv3d, from_torchvision_video, r2plus1d_midplanes

VIDEO = ["mc3_18", "r2plus1d_18", "r2plus1d_34", "r3d_18", "r3d_34", "r3d_50"]


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine terms and running statistics in every BatchNorm (2D and 3D), so eval mode sees them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def clip(batch: int = 1, frames: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size)


def assert_same_network(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """torchvision's state dict loads strictly (through the key renaming) and the eval outputs agree."""
    randomize_norms(theirs).eval()
    ours.load_state_dict(from_torchvision_video(theirs.state_dict()), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=0, atol=1e-5)


# -- peers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_video_models_load_and_agree(name):
    torch.manual_seed(0)
    theirs = getattr(tv_video, name)(weights=None)
    assert_same_network(create_model(name), theirs, clip())


TV = tv_video.resnet


@pytest.mark.parametrize("conv, maker, stem", [("3d", TV.Conv3DSimple, TV.BasicStem),
                                               ("r2plus1d", TV.Conv2Plus1D, TV.R2Plus1dStem)])  # fmt: skip
def test_bottleneck_video_models_agree_with_torchvisions_class(conv, maker, stem):
    """r3d_50's rows (one unit per stage here) against torchvision's VideoResNet with its video Bottleneck, whose
    (2+1)D inner width comes from the unit's input and planes."""
    torch.manual_seed(0)
    theirs = tv_video.VideoResNet(TV.Bottleneck, [maker] * 4, [1, 1, 1, 1], stem, num_classes=5)
    ours = create_model("r3d_50", conv=conv, layers=(1, 1, 1, 1), num_classes=5)
    assert_same_network(ours, theirs, clip(frames=2))


def test_r2plus1d_inner_width_is_torchvisions():
    model = create_model("r2plus1d_18")
    unit = model.layer2[0]
    assert r2plus1d_midplanes(64, 128) == (64 * 128 * 27) // (64 * 9 + 3 * 128) == 230
    assert unit.conv1[0].out_channels == unit.conv2[0].out_channels == 230  # both use the first one's width
    assert [tuple(unit.conv1[i].kernel_size) for i in (0, 3)] == [(1, 3, 3), (3, 1, 1)]
    assert (unit.conv1[0].stride, unit.conv1[3].stride) == ((1, 2, 2), (2, 1, 1))


def test_mixed_convolutions_see_time_in_the_first_stage_only():
    model = create_model("mc3_18")
    assert model.conv1.kernel_size == (3, 7, 7) and model.conv1.stride == (1, 2, 2)
    assert model.layer1[0].conv1.kernel_size == (3, 3, 3)
    assert model.layer2[0].conv1.kernel_size == (1, 3, 3) and model.layer2[0].conv1.stride == (1, 2, 2)
    assert model.layer2[0].downsample[0].stride == (1, 2, 2)
    assert create_model("r3d_18").layer2[0].downsample[0].stride == (2, 2, 2)


# -- the variants --------------------------------------------------------------------------------------------------


def test_video_variants_are_listed_apart_from_image_ones():
    assert list_models(video=True) == VIDEO
    assert not set(VIDEO) & set(list_models())
    assert list_models("r3d_*", video=True) == ["r3d_18", "r3d_34", "r3d_50"]
    assert get_variant("r2plus1d_18").config.conv is Conv.R2PLUS1D
    with pytest.raises(Exception, match="did you mean r3d_18"):
        create_model("r3d_19")


@pytest.mark.parametrize("name", VIDEO)
def test_every_video_variant_reports_its_features(name):
    """Shapes only (meta device): logits, the stages' channels and spatial reductions, time halved per 3D stride."""
    config = get_variant(name).config
    with torch.device("meta"):
        model = create_model(name, num_classes=7)
        x = torch.empty(2, 3, 8, 64, 64)
        final, stages = model.forward_intermediates(x)
        logits = model(x)
    assert logits.shape == (2, 7) and config.is_video and config.stem is Stem.VIDEO
    assert [f.shape[1] for f in stages] == [i["num_chs"] for i in model.feature_info]
    assert [64 // f.shape[-1] for f in stages] == [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16]
    frames = [f.shape[2] for f in stages]
    assert frames == ([8, 8, 8, 8] if config.conv is Conv.MC else [8, 4, 2, 1])
    assert final.shape == stages[-1].shape
    assert all(isinstance(m, ResidualUnit) for m in model.layer1)


def test_a_video_network_trains_every_parameter():
    model = create_model("r2plus1d_18", layers=(1, 1, 1, 1), num_classes=3).train()
    model(clip(batch=2, frames=2)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_image_records_are_unchanged_and_video_configs_round_trip():
    image = get_variant("resnet50").config
    assert not {"conv", "time_kernel", "time_pad"} & set(image.to_dict())  # records written before stay identical
    for name in VIDEO:
        config = get_variant(name).config
        assert ResNetConfig.from_dict(config.to_dict()) == config
    custom = get_variant("r3d_18").config.replace(time_kernel=5, time_pad="replicate")
    assert custom.to_dict()["time_kernel"] == 5 and ResNetConfig.from_dict(custom.to_dict()) == custom


@pytest.mark.parametrize(
    "overrides, match",
    [(dict(stem="video"), "stem='video' needs video convolutions"),
     (dict(conv="3d", se_reduction=16), "conv='3d' does not support se_reduction"),
     (dict(conv="mc", output_stride=16), "does not support output_stride"),
     (dict(conv="3d", stem="cifar"), "does not support stem='cifar'"),
     (dict(conv="3d", time_kernel=2), "time_kernel must be odd"),
     (dict(conv="4d"), "conv='4d' is not one of")],
)  # fmt: skip
def test_unsupported_video_options_are_one_line_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        get_variant("resnet18").config.replace(**overrides)


# -- inflation -----------------------------------------------------------------------------------------------------


def network_2d(name: str, **overrides) -> ResNet:
    return randomize_norms(create_model(name, num_classes=10, **overrides)).eval()


@pytest.mark.parametrize("name, overrides", [("resnet18", {}), ("resnet50", {"layers": (1, 1, 1, 1)})])
@pytest.mark.parametrize("center", [False, True])
def test_inflated_network_on_identical_frames_is_the_2d_network(name, overrides, center):
    model = network_2d(name, **overrides)
    video = inflate(model, time_kernel=3, center=center).eval()
    frame = torch.randn(2, 3, 64, 64)
    frames = frame.unsqueeze(2).repeat(1, 1, 5, 1, 1)  # (B, 3, T=5, H, W), every frame the same
    with torch.no_grad():
        torch.testing.assert_close(video(frames), model(frame), rtol=0, atol=1e-5)
    kernel = video.layer1[0].conv1.weight if name == "resnet18" else video.layer1[0].conv2.weight
    assert kernel.shape[2] == 3
    if center:
        assert kernel[:, :, 0].abs().sum() == 0 and kernel[:, :, 2].abs().sum() == 0


def test_inflation_mixed_and_wider_in_time():
    model = network_2d("resnet18", layers=(1, 1, 1, 1))
    frame = torch.randn(1, 3, 64, 64)
    frames = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    for video in (inflate(model, conv="mc"), inflate(model, time_kernel=5)):
        with torch.no_grad():
            torch.testing.assert_close(video.eval()(frames), model(frame), rtol=0, atol=1e-5)
    assert inflate(model, time_kernel=5).conv1.weight.shape == (64, 3, 5, 7, 7)


def test_zero_time_padding_breaks_the_fixed_point_at_the_clips_ends():
    """Why inflation pads time by replication: with zeros, the end frames see only part of the kernel."""
    model = network_2d("resnet18", layers=(1, 1, 1, 1))
    frame = torch.randn(1, 3, 64, 64)
    frames = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    zeros = inflate(model, time_pad="zeros").eval()
    assert not any(isinstance(m, TimePaddedConv3d) for m in zeros.modules())
    with torch.no_grad():
        assert (zeros(frames) - model(frame)).abs().max() > 1e-3


def test_inflated_network_is_rebuilt_from_its_config():
    """The config says everything (conv, time kernel, replicate padding): a fresh build takes the weights strictly
    and computes the same function."""
    video = inflate(network_2d("resnet18", layers=(1, 1, 1, 1))).eval()
    assert video.config.conv is Conv.D3 and video.config.time_pad is TimePad.REPLICATE
    rebuilt = ResNet.from_config(ResNetConfig.from_dict(video.config.to_dict()))
    rebuilt.load_state_dict(video.state_dict(), strict=True)
    x = clip(frames=3)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), video(x), rtol=0, atol=0)


def test_inflated_network_keeps_the_provenance_not_the_measurements():
    model = network_2d("resnet18", layers=(1, 1, 1, 1))
    metrics = (Metric("x", "val", 9.0),)
    model.record = ModelRecord("resnet18", model.config, classes=tuple("abcdefghij"), metrics=metrics)
    video = inflate(model)
    assert video.record.config == video.config and video.record.classes == model.record.classes
    assert video.record.metrics == () and video.record.source == "inflated from resnet18"


def test_inflate_takes_names_and_records_and_refuses_the_rest():
    assert inflate("resnet18").layer4[1].conv2.weight.shape == (512, 512, 3, 3, 3)
    record = ModelRecord("resnet18", get_variant("resnet18").config.replace(layers=(1, 1, 1, 1)))
    assert inflate(record).config.layers == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="needs a 2D resnetkit network, got a r3d network|got a 3d network"):
        inflate(create_model("r3d_18"))
    with pytest.raises(ValueError, match="not 'r2plus1d'"):
        inflate("resnet18", conv="r2plus1d")
    with pytest.raises(ValueError, match="does not support se_reduction"):
        inflate("seresnet50")
    with pytest.raises(ValueError, match="architecture edits"):
        inflate(record.replace(edits=({"kind": "prune"},)))
