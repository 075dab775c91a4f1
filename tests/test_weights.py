"""Pretrained weights: the file format, converters (checked against torchvision's and timm's own models), safe
loading, the registry's download path against a local HTTP server, ``pretrained=``, predict parity, torch.hub."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_image

import resnetkit
from resnetkit.cli import main
from resnetkit.data.download import ChecksumError, DatasetNotFoundError
from resnetkit.weights import (
    Metric,
    Preprocess,
    WeightsError,
    convert,
    infer_arch,
    load_model,
    read_state_dict,
    read_weights,
    save_weights,
)
from resnetkit import ModelRecord
from resnetkit.weights import registry
from resnetkit.weights.registry import SourceFormat, WeightsEntry

from .conftest import randomize_norms

REPO = Path(__file__).resolve().parents[1]
TV_ARCHS = registry.TORCHVISION_ARCHS
TIMM_ONLY = ("resnet200", "resnet50d", "seresnet50", "seresnext50_32x4d")  # archs timm has and torchvision lacks


def max_diff(ours: torch.nn.Module, theirs: torch.nn.Module, size: int = 64) -> float:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return (ours.eval()(x) - theirs.eval()(x)).abs().max().item()


def sha_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


# -- the format ----------------------------------------------------------------------------------------------------


def test_weights_file_rebuilds_the_model_and_keeps_every_field(tmp_path):
    model = randomize_norms(resnetkit.create_model("cifar_resnet20", num_classes=3, zero_init_last=True))
    meta = ModelRecord("cifar_resnet20", model.config, Preprocess(32, 32, "bicubic", (0.5,) * 3, (0.25,) * 3),
                       ("cat", "dog", "frog"), (Metric("cifar10-jpeg", "val", 91.5, 99.7),), recipe="cifar10_cpu",
                       source="a test", extra={"epochs": 3})  # fmt: skip
    written = save_weights(tmp_path / "w.safetensors", model, meta)
    loaded = load_model(tmp_path / "w.safetensors")
    assert loaded.record == written and written.tensors_sha256
    assert loaded.config == model.config and max_diff(loaded, model, 32) == 0.0


def test_damaged_or_foreign_files_give_one_line_errors(tmp_path):
    model = resnetkit.create_model("cifar_resnet20")
    path = tmp_path / "w.safetensors"
    save_weights(path, model, ModelRecord("cifar_resnet20", model.config))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in the last tensor
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[:1000]))
    import safetensors.torch

    safetensors.torch.save_file(model.state_dict(), tmp_path / "plain.safetensors")
    for name, words in (("bad", "damaged"), ("cut", "not a readable"), ("plain", "resnetkit convert")):
        with pytest.raises(WeightsError, match=words) as err:
            read_weights(tmp_path / f"{name}.safetensors")
        assert "\n" not in str(err.value)


# -- converters ----------------------------------------------------------------------------------------------------


def convert_and_compare(tmp_path: Path, theirs: torch.nn.Module, src_name: str, arch: str | None = None) -> float:
    src = tmp_path / src_name
    state = theirs.state_dict()
    if src.suffix == ".safetensors":
        import safetensors.torch

        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, src)
    else:
        torch.save(state, src)
    meta = convert(src, tmp_path / "ours.safetensors", arch)
    ours = load_model(tmp_path / "ours.safetensors")
    assert ours.record == meta and len(meta.source_sha256) == 64
    return max_diff(ours, theirs)


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_torchvision_checkpoints_convert_exactly(tmp_path, arch):
    theirs = randomize_norms(torchvision.models.get_model(arch))
    suffix = ".safetensors" if arch.endswith("50") else ".pth"
    assert convert_and_compare(tmp_path, theirs, f"{arch}{suffix}") <= 1e-4
    assert read_weights(tmp_path / "ours.safetensors")[1].arch == arch  # inferred from the tensors


@pytest.mark.parametrize("arch", ("resnet18", *TIMM_ONLY))
def test_timm_checkpoints_convert_exactly(tmp_path, arch):
    theirs = randomize_norms(timm.create_model(arch))
    suffix = ".safetensors" if "50" in arch else ".pth"
    assert convert_and_compare(tmp_path, theirs, f"{arch}{suffix}") <= 1e-4


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_timm_shares_torchvision_tensors_for_the_other_archs(arch):
    """timm's remaining archs hold exactly torchvision's tensors (names and shapes), so the torchvision
    conversions above cover their files too; checked on the meta device, without building weights."""
    with torch.device("meta"):
        tv, tm = torchvision.models.get_model(arch).state_dict(), timm.create_model(arch).state_dict()
    assert {k: v.shape for k, v in tv.items()} == {k: v.shape for k, v in tm.items()}


def test_training_wrappers_and_prefixes_are_unwrapped(tmp_path):
    net = randomize_norms(torchvision.models.resnet18())
    ema = randomize_norms(torchvision.models.resnet18(), seed=1)
    ddp = {f"module.{k}": v for k, v in net.state_dict().items()}
    compiled = {f"_orig_mod.{k}": v for k, v in net.state_dict().items()}
    cases = {"ddp.pth": ddp, "compiled.pth": compiled, "timm_train.pth": {"state_dict": ddp, "epoch": 3},
             "tv_reference.pth": {"model": net.state_dict(), "model_ema": {f"module.{k}": v for k, v in ema.state_dict().items()},
                                  "optimizer": {}, "epoch": 9, "args": {"lr": 0.5}}}  # fmt: skip
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        convert(tmp_path / name, tmp_path / "out.safetensors")
        assert max_diff(load_model(tmp_path / "out.safetensors"), net) == 0.0, name
    convert(tmp_path / "tv_reference.pth", tmp_path / "ema.safetensors", ema=True)
    assert max_diff(load_model(tmp_path / "ema.safetensors"), ema) == 0.0


def test_a_mismatch_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    del state["layer1.0.bn1.running_mean"]
    state["layer9.weight"] = torch.zeros(1)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(WeightsError) as err:
        convert(tmp_path / "odd.pth", tmp_path / "out.safetensors", arch="resnet18")
    message = str(err.value)
    assert "\n" not in message and not (tmp_path / "out.safetensors").exists()
    for words in ("missing (1): layer1.0.bn1.running_mean", "unexpected (1): layer9.weight",
                  "wrong shape (1): layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)"):  # fmt: skip
        assert words in message


def test_ambiguous_architectures_ask_for_arch(tmp_path):
    state = resnetkit.create_model("cifar_resnet20").state_dict()  # the plain net has the very same tensors
    with pytest.raises(WeightsError, match=r"several variants fit \(cifar_plain20, cifar_resnet20\).*--arch"):
        infer_arch(state)
    torch.save(state, tmp_path / "r20.pth")
    assert main(["convert", str(tmp_path / "r20.pth"), str(tmp_path / "r20.safetensors"), "--arch", "cifar_resnet20"]) == 0
    assert load_model(tmp_path / "r20.safetensors").config.shortcut.value == "A"


def test_v1_weights_convert_with_a_config_override(tmp_path):
    theirs = randomize_norms(resnetkit.create_model("resnet50", stride_in_1x1=True))
    torch.save(theirs.state_dict(), tmp_path / "v1.pth")
    assert main(["convert", str(tmp_path / "v1.pth"), str(tmp_path / "v1.safetensors"), "stride_in_1x1=true"]) == 0
    ours = load_model(tmp_path / "v1.safetensors")
    assert max_diff(ours, theirs) == 0.0 and ours.config.stride_in_1x1
    assert ours.record.source_sha256 == hashlib.sha256((tmp_path / "v1.pth").read_bytes()).hexdigest()


# -- safety --------------------------------------------------------------------------------------------------------


class Exploit:
    """Unpickling this calls os.system: a checkpoint that runs code when loaded with plain torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": {"fc.weight": Exploit(marker)}}, f, protocol=2)
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        read_state_dict(tmp_path / "evil.pth")
    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "out.safetensors")]) == 2
    assert "cannot be loaded safely" in capsys.readouterr().err
    assert not marker.exists()


# -- registry, download cache, pretrained= -------------------------------------------------------------------------


@pytest.fixture
def served_resnet18(server, tmp_path, monkeypatch):
    """torchvision-format resnet18 weights on a local HTTP server, registered as ``resnet18.test_in1k``."""
    url, www, log = server
    theirs = randomize_norms(torchvision.models.resnet18())
    src = www / "resnet18-test.pth"
    torch.save(theirs.state_dict(), src)
    entry = WeightsEntry("resnet18", "test_in1k", url + src.name, src.name, sha_prefix(src), Preprocess(),
                         (Metric("ImageNet-1K", "val", 1.0, 5.0),), 11_689_512, 44.7, "a test", SourceFormat.TORCHVISION)  # fmt: skip
    monkeypatch.setitem(registry.PRETRAINED, entry.name, entry)
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return entry, theirs, src, log


def test_registry_downloads_verifies_converts_and_caches(served_resnet18, tmp_path):
    entry, theirs, src, log = served_resnet18
    model = load_model("resnet18.test_in1k", progress=False)
    assert max_diff(model, theirs) == 0.0 and model.record.metrics == entry.metrics
    assert (tmp_path / "cache" / src.name).read_bytes() == src.read_bytes()
    requests = len(log)
    load_model("resnet18.test_in1k", progress=False)
    assert len(log) == requests  # the converted file in the cache is used, no second download


def test_download_resumes_and_rejects_a_wrong_checksum(served_resnet18, tmp_path, monkeypatch):
    entry, theirs, src, log = served_resnet18
    half = src.stat().st_size // 2
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / (src.name + ".part")).write_bytes(src.read_bytes()[:half])
    resnetkit.create_model("resnet18", pretrained="test_in1k")
    assert log[-1]["Range"] == f"bytes={half}-"
    bad = WeightsEntry(**{**entry.__dict__, "tag": "bad_in1k", "sha256": "00000000"})
    monkeypatch.setitem(registry.PRETRAINED, bad.name, bad)
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "other"))
    with pytest.raises(ChecksumError, match="expected 00000000"):
        load_model("resnet18.bad_in1k", progress=False)


def test_offline_names_the_file_to_place_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_ALLOW_INSECURE_DOWNLOADS", "1")  # the unreachable address below is plain http
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv("RESNETKIT_CACHE", raising=False)
    entry = registry.get_weights("resnet50.tv2_in1k")
    offline = WeightsEntry(**{**entry.__dict__, "url": "http://127.0.0.1:9/resnet50-11ad3fa6.pth"})
    monkeypatch.setitem(registry.PRETRAINED, entry.name, offline)
    with pytest.raises(DatasetNotFoundError) as err:
        resnetkit.create_model("resnet50", pretrained=True)
    message = str(err.value)
    assert "\n" not in message and "resnet50-11ad3fa6.pth" in message and str(tmp_path / "th" / "resnetkit") in message


def test_pretrained_with_another_head_keeps_the_backbone(tmp_path):
    source = randomize_norms(resnetkit.create_model("resnet18"))
    save_weights(tmp_path / "r18.safetensors", source, ModelRecord("resnet18", source.config))
    model = resnetkit.create_model("resnet18", pretrained=str(tmp_path / "r18.safetensors"), num_classes=10)
    assert model.fc.out_features == 10
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    expected = r"do not fit the model asked for: layer1.0.conv1.weight is \(64, 64, 3, 3\) in the weights, \(32, 64"
    with pytest.raises(WeightsError, match=expected) as err:
        resnetkit.create_model("resnet18", pretrained=str(tmp_path / "r18.safetensors"), widths=(32, 64, 128, 256))
    assert "\n" not in str(err.value)


SHAPE_KEEPING = [{"drop_path_rate": 0.2}, {"drop_rate": 0.3}, {"zero_init_last": True}, {"norm": "frozen_batch"},
                 {"output_stride": 8}, {"num_classes": 7}, {"num_classes": 0}, {"in_chans": 1}, {"in_chans": 5}]


@pytest.mark.parametrize("options", SHAPE_KEEPING, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pretrained_works_with_every_option_that_keeps_the_shapes(tmp_path, options):
    """timm's behaviour: the weights load into the model asked for; in eval mode the options that only change
    training (stochastic depth, dropout, zero-init, frozen statistics) give the source's outputs exactly."""
    source = randomize_norms(resnetkit.create_model("resnet18")).eval()
    save_weights(tmp_path / "r18.safetensors", source, ModelRecord("resnet18", source.config))
    model = resnetkit.create_model("resnet18", pretrained=str(tmp_path / "r18.safetensors"), **options).eval()
    assert model.config == resnetkit.model_config("resnet18", **options)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert torch.equal(model.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        if "in_chans" in options:  # the stem is adapted as timm does
            if options["in_chans"] == 1:  # summed: a grey image gives its RGB twin's features
                grey = x[:, :1]
                torch.testing.assert_close(model.forward_features(grey),
                                           source.forward_features(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
            else:  # the kernels repeated over the channels, scaled by 3/5 so the output keeps its magnitude
                torch.testing.assert_close(model.conv1.weight[:, 3:], source.conv1.weight[:, :2] * 3 / 5)
                assert model(torch.randn(2, 5, 64, 64)).shape == (2, 1000)
        elif "num_classes" in options:
            torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                                       source.forward_head(source.forward_features(x), pre_logits=True))  # fmt: skip
            assert model(x).shape == (2, options["num_classes"] or 512)
        elif "output_stride" in options:
            assert model.forward_features(x).shape[-1] == 64 // 8  # dilated, with the same kernels
        else:  # frozen BatchNorm computes the same affine map in another order: equal up to rounding
            torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)


def test_pretrained_init_is_skipped_and_the_new_head_is_initialised(tmp_path, monkeypatch):
    source = resnetkit.create_model("resnet18")
    save_weights(tmp_path / "r18.safetensors", source, ModelRecord("resnet18", source.config))
    devices = []
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda t, **kw: devices.append(t.device.type) or t)
    model = resnetkit.create_model("resnet18", pretrained=str(tmp_path / "r18.safetensors"), num_classes=5)
    assert devices and set(devices) == {"meta"}  # built on the meta device: no memory or time for what is replaced
    assert model.fc.weight.abs().sum() > 0 and model.fc.weight.device.type == "cpu"


def test_registry_covers_torchvision_v1_and_v2_weights():
    for arch in TV_ARCHS:
        for weights in torchvision.models.get_model_weights(arch):
            entry = registry.get_weights(f"{arch}.{registry.TORCHVISION_TAGS[weights.name]}")
            assert entry.url == weights.url and entry.sha256 in weights.url
            assert entry.metrics[0].top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        default = torchvision.models.get_model_weights(arch).DEFAULT  # the most accurate: ours picks the same
        assert registry.get_weights(arch).tag == registry.TORCHVISION_TAGS[default.name]
    assert registry.get_weights("resnet50").tag == "tv2_in1k"


def test_readme_weights_table_is_current():
    from resnetkit.tasks.checkpoints import task_weights_table

    page = (REPO / "docs" / "weights.md").read_text()
    for table in (registry.weights_table(markdown=True), task_weights_table(markdown=True)):
        assert table in page, "regenerate with `resnetkit weights --format markdown`"


# -- the same top-5 as torchvision with its own weights enum and transforms -----------------------------------------


def test_predict_gives_torchvision_top5(served_resnet18, tmp_path, monkeypatch, capsys):
    """A torchvision ImageNet checkpoint, served as resnet50.tv2_in1k would be, predicts a real photo (from
    scikit-learn's sample images) like torchvision does with ResNet50_Weights.IMAGENET1K_V2 and its transforms."""
    url, www = served_resnet18[0].url.rsplit("/", 1)[0] + "/", served_resnet18[2].parent
    torch.manual_seed(0)
    theirs = randomize_norms(torchvision.models.resnet50()).eval()
    src = www / "resnet50-v2.pth"
    torch.save(theirs.state_dict(), src)
    entry = registry.get_weights("resnet50.tv2_in1k")
    monkeypatch.setitem(registry.PRETRAINED, entry.name,
                        WeightsEntry(**{**entry.__dict__, "url": url + src.name, "filename": src.name, "sha256": sha_prefix(src)}))  # fmt: skip
    photo = tmp_path / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(photo, quality=95)

    tv_weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    with torch.no_grad():
        probs = theirs(tv_weights.transforms()(Image.open(photo)).unsqueeze(0)).softmax(1)[0]
    expected = [tv_weights.meta["categories"][i] for i in probs.topk(5).indices]

    assert main(["predict", "resnet50.tv2_in1k", str(photo)]) == 0
    shown = capsys.readouterr().out.strip().split(": ", 1)[1].split(", ")
    assert [s.rsplit(" ", 1)[0] for s in shown] == expected


# -- torch.hub -----------------------------------------------------------------------------------------------------


def test_torch_hub_loads_every_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entry_points = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]  # as hub.list
    assert sorted(entry_points) == sorted(resnetkit.list_models())
    source = randomize_norms(resnetkit.create_model("cifar_resnet20"))
    save_weights(tmp_path / "w.safetensors", source, ModelRecord("cifar_resnet20", source.config))
    model = torch.hub.load(str(REPO), "cifar_resnet20", source="local", pretrained=str(tmp_path / "w.safetensors"))
    assert max_diff(model, source, 32) == 0.0
    assert torch.hub.load(str(REPO), "resnext50_32x4d", source="local", num_classes=7).fc.out_features == 7


def test_eval_with_weights_uses_their_preprocessing(tmp_path, capsys):
    """`resnetkit eval FILE --data ZIP`: a folder of real photos, crops of scikit-learn's samples."""
    model = randomize_norms(resnetkit.create_model("cifar_resnet20", num_classes=2))
    save_weights(tmp_path / "w.safetensors", model,
                 ModelRecord("cifar_resnet20", model.config, Preprocess(32, 36), ("china", "flower")))  # fmt: skip
    import zipfile

    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        for name in ("china", "flower"):
            photo = Image.fromarray(load_sample_image(f"{name}.jpg"))
            for i in range(3):
                path = tmp_path / f"{name}{i}.png"
                photo.crop((60 * i, 40 * i, 60 * i + 200, 40 * i + 150)).save(path)
                archive.write(path, f"photos/{name}/{i}.png")
    assert main(["eval", str(tmp_path / "w.safetensors"), "--data", str(tmp_path / "photos.zip")]) == 0
    out = capsys.readouterr().out
    assert "6 images" in out and "china" in out and "flower" in out
    assert main(["eval", str(tmp_path / "w.safetensors")]) == 2  # no --data: a one-line error
