"""Temporal heads over 2D backbones (TSN consensus, an LSTM/GRU over frame features) and torchvision's Kinetics-400
video checkpoints: entries read from torchvision, loading through resnetkit's download/cache/verify path (tested
against a local server, never the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
import torch
from torchvision.models import get_model_weights
from torchvision.models import video as tv_video

from resnetkit import create_model
from resnetkit.io import ChecksumError
from resnetkit.tasks.video import (
    VIDEO_WEIGHTS,
    FrameLSTM,
    RecurrentHead,
    TemporalSegmentNetwork,
    frames_of,
    get_video_weights,
    load_video_checkpoint,
    pretrained_video_model,
)

from ..test_video_models import randomize_norms

BACKBONE = "cifar_resnet20"


def clip(batch: int = 2, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32)


def still(frame: torch.Tensor, frames: int = 4) -> torch.Tensor:
    """A clip of ``frames`` copies of ``frame`` (B, 3, H, W)."""
    return frame.unsqueeze(2).repeat(1, 1, frames, 1, 1)


# -- heads ---------------------------------------------------------------------------------------------------------


def test_shapes():
    x = clip()
    tsn = TemporalSegmentNetwork(BACKBONE, num_classes=5)
    assert tsn(x).shape == (2, 5) and tsn.forward_frames(x).shape == (2, 4, 5)
    assert tsn.forward_features(x).shape == (2, 64)
    for cell in ("lstm", "gru"):
        model = FrameLSTM(BACKBONE, hidden=16, num_classes=5, cell=cell)
        assert model(x).shape == (2, 5) and model.head.cell.value == cell
    assert RecurrentHead(8, 16, 3, num_layers=2, dropout=0.1)(torch.randn(2, 6, 8)).shape == (2, 3)
    assert frames_of(x).shape == (8, 3, 32, 32) and torch.equal(frames_of(x)[1], x[0, :, 1])


def test_tsn_on_identical_frames_is_the_2d_network():
    model = randomize_norms(create_model(BACKBONE, num_classes=7)).eval()
    tsn = TemporalSegmentNetwork(model, num_classes=7).eval()
    frame = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tsn(still(frame)), model(frame), rtol=0, atol=1e-5)
        maximum = TemporalSegmentNetwork(model, 7, "max")
        torch.testing.assert_close(maximum(still(frame)), model(frame), rtol=0, atol=1e-5)


def test_order_matters_to_the_lstm_and_not_to_tsn():
    """A real property of the heads: reversing the frames leaves TSN's average unchanged and changes the LSTM's
    (and the GRU's) output."""
    x = clip()
    reversed_x = x.flip(2)
    tsn = TemporalSegmentNetwork(BACKBONE, num_classes=5).eval()
    with torch.no_grad():
        torch.testing.assert_close(tsn(reversed_x), tsn(x), rtol=0, atol=1e-5)
        for cell in ("lstm", "gru"):
            rnn = FrameLSTM(BACKBONE, hidden=16, num_classes=5, cell=cell).eval()
            assert (rnn(reversed_x) - rnn(x)).abs().max() > 1e-4, cell


def test_a_given_backbone_keeps_its_weights_and_trains_with_the_head():
    model = create_model(BACKBONE, num_classes=10)
    stem = model.conv1.weight.detach().clone()
    tsn = TemporalSegmentNetwork(model, num_classes=3)
    assert tsn.backbone is model and model.fc.out_features == 3 and torch.equal(model.conv1.weight, stem)
    rnn = FrameLSTM(create_model(BACKBONE), hidden=8, num_classes=3)
    rnn(clip()).sum().backward()
    assert rnn.backbone.conv1.weight.grad is not None and rnn.head.rnn.weight_ih_l0.grad is not None


def test_bad_inputs_are_one_line_errors():
    tsn = TemporalSegmentNetwork(BACKBONE, num_classes=3)
    with pytest.raises(ValueError, match=r"expected a clip \(B, C, T, H, W\), got a tensor of shape \(2, 3, 32, 32\)"):
        tsn(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="must be a 2D resnetkit network, got ResNet with conv='3d'"):
        TemporalSegmentNetwork(create_model("r3d_18", layers=(1, 1, 1, 1)), num_classes=3)
    with pytest.raises(ValueError, match="cell='rnn' is not one of"):
        FrameLSTM(BACKBONE, 8, 3, cell="rnn")
    with pytest.raises(ValueError, match="consensus='median' is not one of"):
        TemporalSegmentNetwork(BACKBONE, 3, consensus="median")
    with pytest.raises(ValueError, match="apply to a backbone built by name"):
        TemporalSegmentNetwork(create_model(BACKBONE), 3, drop_rate=0.5)


# -- Kinetics-400 checkpoints --------------------------------------------------------------------------------------


def test_entries_are_torchvisions():
    assert set(VIDEO_WEIGHTS) == {"r3d_18.tv_k400", "mc3_18.tv_k400", "r2plus1d_18.tv_k400"}
    for name, entry in VIDEO_WEIGHTS.items():
        published = [w for w in get_model_weights(entry.backbone) if w.url == entry.url]
        assert len(published) == 1 and name == f"{entry.backbone}.tv_k400"
        assert entry.url.startswith("https://download.pytorch.org/models/")
        assert re.fullmatch(r"[0-9a-f]{8}", entry.sha256) and f"-{entry.sha256}." in entry.filename
        with torch.device("meta"):
            assert entry.num_classes == 400 == create_model(entry.backbone).num_classes
        assert entry.categories == tuple(published[0].meta["categories"])
        assert entry.metrics["Kinetics-400"]["acc@1"] > 60
    assert get_video_weights("r3d_18") is VIDEO_WEIGHTS["r3d_18.tv_k400"]
    with pytest.raises(Exception, match="unknown video weights 'r3d_34'"):
        get_video_weights("r3d_34")


def tiny_mc3() -> torch.nn.Module:
    """torchvision's MC3 class with one unit per stage and 3 classes: the published layout, small enough to serve."""
    theirs = tv_video.VideoResNet(tv_video.resnet.BasicBlock, [tv_video.resnet.Conv3DSimple]
                                  + [tv_video.resnet.Conv3DNoTemporal] * 3, [1, 1, 1, 1], tv_video.resnet.BasicStem,
                                  num_classes=3)  # fmt: skip
    return randomize_norms(theirs).eval()


def publish(model: torch.nn.Module, www) -> tuple[str, str]:
    """Save ``model``'s state dict as torchvision names its files (``stem-<sha256[:8]>.pth``)."""
    tmp = www / "tmp.pth"
    torch.save(model.state_dict(), tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    filename = f"mc3_tiny-{prefix}.pth"
    tmp.rename(www / filename)
    return filename, prefix


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no copy in torchvision's cache
    return tmp_path / "cache"


def test_checkpoint_downloads_verifies_caches_and_agrees_with_torchvision(server, caches, monkeypatch):
    url, www, log = server
    theirs = tiny_mc3()
    filename, prefix = publish(theirs, www)
    entry = dataclasses.replace(VIDEO_WEIGHTS["mc3_18.tv_k400"], name="mc3_tiny.tv_k400", url=url + filename,
                                filename=filename, sha256=prefix, categories=("a", "b", "c"))  # fmt: skip
    monkeypatch.setitem(VIDEO_WEIGHTS, entry.name, entry)
    ours = pretrained_video_model(entry.name, progress=False, layers=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)
    assert ours.record.classes == ("a", "b", "c") and ours.record.preprocess.crop_size == 112
    assert ours.record.metrics[0].dataset == "Kinetics-400" and (caches / filename).is_file() and len(log) == 1
    load_video_checkpoint(create_model("mc3_18", layers=(1, 1, 1, 1), num_classes=3), entry, progress=False)
    assert len(log) == 1, "the second load reads the cache"


def test_wrong_hash_is_refused(server, caches):
    url, www, _ = server
    filename, prefix = publish(tiny_mc3(), www)
    entry = dataclasses.replace(VIDEO_WEIGHTS["mc3_18.tv_k400"], url=url + filename, filename=filename,
                                sha256="0" * 8 if prefix != "0" * 8 else "1" * 8)  # fmt: skip
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_video_checkpoint(create_model("mc3_18", layers=(1, 1, 1, 1), num_classes=3), entry, progress=False)
    assert not (caches / filename).exists()
