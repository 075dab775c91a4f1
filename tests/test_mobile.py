"""Mobile residual networks (resnetkit.models.mobile): torchvision's MobileNetV2 and ShuffleNetV2 load strictly and
agree; the variant table, torchvision's checkpoints through a local HTTP server, BatchNorm fusion and ONNX export."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from resnetkit import create_model
from resnetkit.deploy.export import export_onnx
from resnetkit.deploy.fuse import fuse_model, norm_names
from resnetkit.errors import UnknownOptionError
from resnetkit.models import mobile
from resnetkit.models.mobile import MOBILE_VARIANTS, MOBILE_WEIGHTS, MobileWeights, channel_shuffle
from resnetkit.models.registry import list_models

from .conftest import randomize_norms

PEERS = {"mobilenet_v2": {}, "shufflenet_v2_x1_0": {}, "mobilenet_v2_050": {"width_mult": 0.5},
         "shufflenet_v2_x0_5": {}}  # fmt: skip


def _torchvision(name: str, **kwargs) -> torch.nn.Module:
    builder = "mobilenet_v2" if name.startswith("mobilenet_v2") else name
    torch.manual_seed(0)
    return randomize_norms(getattr(torchvision.models, builder)(weights=None, **kwargs)).eval()


@pytest.mark.parametrize("name", list(PEERS))
def test_torchvision_state_dict_loads_strictly_and_outputs_agree(name):
    theirs = _torchvision(name, **PEERS[name])
    ours = create_model(name).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)  # the same names: no converter
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_widths_match_torchvision_parameter_counts():
    for name, width in (("mobilenet_v2_075", 0.75), ("mobilenet_v2_140", 1.4)):
        theirs = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
        assert sum(p.numel() for p in create_model(name).parameters()) == sum(p.numel() for p in theirs.parameters())
    for w in ("x1_5", "x2_0"):
        meta = torchvision.models.get_model_weights(f"shufflenet_v2_{w}").DEFAULT.meta
        assert sum(p.numel() for p in create_model(f"shufflenet_v2_{w}").parameters()) == meta["num_params"]


def test_mobile_variants_are_listed_apart_from_the_resnets():
    assert list_models("*mobilenet*") == [] and list_models("*shufflenet*") == []  # image-ResNet loops stay as they were
    assert "mobilenet_v2" in list_models(mobile=True) and "cifar_shufflenet_v2_x1_0" in list_models("cifar_*", mobile=True)
    with pytest.raises(UnknownOptionError, match="unknown mobile model option 'groups'"):
        create_model("mobilenet_v2", groups=2)
    with pytest.raises(ValueError, match="norm_layer"):
        create_model("mobilenet_v2", norm_layer=torchvision.ops.FrozenBatchNorm2d)


FEATURES = {"mobilenet_v2": ([16, 24, 32, 96, 1280], [2, 4, 8, 16, 32]),
            "cifar_mobilenet_v2": ([24, 32, 96, 1280], [1, 2, 4, 8]),  # stage 2 keeps the size: no level at 16
            "shufflenet_v2_x1_0": ([116, 232, 464], [8, 16, 32]),
            "cifar_shufflenet_v2_x0_5": ([48, 96, 192], [2, 4, 8])}  # fmt: skip


@pytest.mark.parametrize("name", list(FEATURES))
def test_features_only_gives_the_maps_of_feature_info(name):
    channels, reductions = FEATURES[name]
    backbone = create_model(name, features_only=True).eval()
    assert backbone.feature_info.channels() == channels and backbone.feature_info.reduction() == reductions
    size = 32 if name.startswith("cifar") else 64
    features = backbone(torch.randn(2, 3, size, size))
    assert [f.shape[1] for f in features] == channels
    assert [size // f.shape[-1] for f in features] == reductions


def test_mobile_backbone_takes_torchvision_weights_and_agrees_with_its_layers():
    theirs = _torchvision("mobilenet_v2")
    backbone = create_model("mobilenet_v2", features_only=True, out_indices=(1, 2, 3)).eval()
    kept = backbone.state_dict().keys()
    assert kept < theirs.state_dict().keys() and not any(k.startswith("features.14.") for k in kept)  # cut after 13
    backbone.load_state_dict({k: v for k, v in theirs.state_dict().items() if k in kept}, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone(x)
        for feature, index in zip(ours, (3, 6, 13)):  # torchvision's layers: the last unit before each reduction
            torch.testing.assert_close(feature, theirs.features[: index + 1](x), rtol=0, atol=1e-5)


def test_mobile_backbone_freezes_and_refuses_bad_indices():
    backbone = create_model("shufflenet_v2_x0_5", features_only=True, frozen_stages=0).train()
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    assert frozen and {n.split(".")[0] for n in frozen} == {"conv1", "stage2"}  # up to feature 0's module
    assert not backbone.stage2.training and backbone.stage3.training
    assert backbone.feature_info.channels() == [48, 96, 192]
    with pytest.raises(ValueError, match="out of range"):
        create_model("mobilenet_v2", features_only=True, out_indices=(5,))


@pytest.mark.parametrize("name", ["cifar_mobilenet_v2", "cifar_shufflenet_v2_x0_5"])
def test_cifar_versions_keep_resolution_for_32px(name):
    model = create_model(name).eval()
    assert model.config.stem.value == "cifar" and model.num_classes == 10
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        assert model(x).shape == (2, 10)
    assert features.shape[-1] == 4 and model.feature_info[-1]["reduction"] == 8
    assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.config.num_classes == 3


def test_config_round_trips_through_a_dict():
    for config in MOBILE_VARIANTS.values():
        assert type(config).from_dict(config.to_dict()) == config


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_registry_entries_are_torchvisions_checkpoints():
    assert {e.name for e in MOBILE_WEIGHTS.values()} >= {"mobilenet_v2.tv_in1k", "mobilenet_v2.tv2_in1k",
                                                          "shufflenet_v2_x1_0.tv_in1k", "shufflenet_v2_x2_0.tv_in1k"}  # fmt: skip
    for e in MOBILE_WEIGHTS.values():
        assert e.url.startswith("https://download.pytorch.org/models/") and e.sha256_prefix in e.url
        assert len(e.sha256_prefix) >= 8 and 60 < e.top1 < 80
    assert mobile.mobile_weights("mobilenet_v2", True).tag == "tv2_in1k"  # the more accurate


def test_pretrained_downloads_checks_the_hash_prefix_and_loads(server, tmp_path, monkeypatch):
    url, www, log = server
    theirs = _torchvision("shufflenet_v2_x0_5")
    raw = tmp_path / "raw.pth"
    torch.save(theirs.state_dict(), raw)
    prefix = hashlib.sha256(raw.read_bytes()).hexdigest()[:10]
    (www / f"shufflenetv2_x0.5-{prefix}.pth").write_bytes(raw.read_bytes())
    (www / "shufflenetv2_x0.5-0000000000.pth").write_bytes(raw.read_bytes())  # a file its name does not match
    good = MobileWeights("shufflenet_v2_x0_5", "test_in1k", f"{url}shufflenetv2_x0.5-{prefix}.pth", prefix, 60.5)
    bad = MobileWeights("shufflenet_v2_x0_5", "bad_in1k", f"{url}shufflenetv2_x0.5-0000000000.pth", "0" * 10, 60.0)
    monkeypatch.setattr(mobile, "MOBILE_WEIGHTS", {good.name: good, bad.name: bad})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    ours = create_model("shufflenet_v2_x0_5.test_in1k").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)
    assert create_model("shufflenet_v2_x0_5", pretrained="test_in1k", num_classes=7).fc.out_features == 7
    with pytest.raises(RuntimeError, match="invalid hash value"):
        create_model("shufflenet_v2_x0_5", pretrained="bad_in1k")


@pytest.mark.parametrize("name", ["cifar_mobilenet_v2", "cifar_shufflenet_v2_x0_5"])
def test_fusion_folds_every_norm_and_keeps_outputs(name):
    model = randomize_norms(create_model(name)).eval()
    fused = fuse_model(model)
    assert norm_names(fused) == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x1_0"])
def test_onnx_export_parity(name, tmp_path):
    pytest.importorskip("onnxruntime")
    model = randomize_norms(create_model(name)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    report = export_onnx(model, tmp_path / f"{name}.onnx", inputs=x)
    assert report.ok and report.max_abs_diff < 1e-4


def test_bench_times_a_mobile_network():
    from resnetkit.deploy.bench import BenchSettings, Route, bench

    model = create_model("cifar_shufflenet_v2_x0_5")
    results = bench(model, [Route.EAGER, Route.FUSED], BenchSettings(input_size=32, batch=2, repeats=1, warmup=0))
    assert len(results) == 4 and all(r.params == sum(p.numel() for p in model.parameters()) for r in results[:2])
