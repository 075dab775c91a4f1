"""torchvision's published detector and segmenter checkpoints: the registry entries are torchvision's, and loading
goes through resnetkit's download, cache and checksum path (tested against a local server, never the network)."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import pytest
import torch
from torchvision.models import get_model_weights
from torchvision.ops import FrozenBatchNorm2d

from resnetkit.io import ChecksumError
from resnetkit.tasks import TASK_WEIGHTS, deeplabv3, faster_rcnn, fcn, get_task_weights, load_torchvision_checkpoint
from resnetkit.tasks.checkpoints import _TV_MODEL, shipped_entries

EXPECTED = {"fasterrcnn_resnet50_fpn.coco_v1", "maskrcnn_resnet50_fpn.coco_v1", "retinanet_resnet50_fpn.coco_v1",
            "deeplabv3_resnet50.coco_voc_v1", "deeplabv3_resnet101.coco_voc_v1", "fcn_resnet50.coco_voc_v1",
            "fcn_resnet101.coco_voc_v1"}  # fmt: skip


def test_entries_are_torchvisions():
    downloaded = {name: e for name, e in TASK_WEIGHTS.items() if e.url is not None}  # the rest ship in the package
    assert set(downloaded) == EXPECTED and set(TASK_WEIGHTS) - set(downloaded) == set(shipped_entries())
    for name, entry in downloaded.items():
        tv_name = _TV_MODEL[entry.builder].format(entry.backbone)
        assert name.startswith(tv_name + ".")
        published = [w for w in get_model_weights(tv_name) if w.url == entry.url]
        assert len(published) == 1, name
        assert entry.url.startswith("https://download.pytorch.org/models/")
        assert re.fullmatch(r"[0-9a-f]{8}", entry.sha256) and f"-{entry.sha256}." in entry.filename
        assert entry.categories == tuple(published[0].meta["categories"])
        assert entry.num_classes == (91 if "rcnn" in name or "retinanet" in name else 21)
        assert (entry.frozen_eps == 0.0) == (entry.builder in ("faster_rcnn", "mask_rcnn", "retinanet"))


def _publish(model: torch.nn.Module, www, stem: str) -> tuple[str, str]:
    """Save ``model``'s state dict as torchvision names its files (``stem-<sha256[:8]>.pth``)."""
    tmp = www / "tmp.pth"
    torch.save(model.state_dict(), tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    filename = f"{stem}-{prefix}.pth"
    tmp.rename(www / filename)
    return filename, prefix


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no copy in torchvision's cache
    return tmp_path / "cache"


def test_load_downloads_verifies_caches(server, caches):
    url, www, log = server
    published = fcn("resnet18", num_classes=3, aux=True)
    filename, prefix = _publish(published, www, "fcn_tiny_coco")
    entry = dataclasses.replace(get_task_weights("fcn_resnet50.coco_voc_v1"), url=url + filename, filename=filename,
                                sha256=prefix, backbone="resnet18", categories=("bg", "a", "b"))  # fmt: skip
    torch.manual_seed(1)
    model = load_torchvision_checkpoint(fcn("resnet18", num_classes=3, aux=True), entry, progress=False)
    for key, value in published.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert (caches / filename).is_file() and len(log) == 1
    load_torchvision_checkpoint(fcn("resnet18", num_classes=3, aux=True), entry, progress=False)
    assert len(log) == 1, "the second load reads the cache"


def test_wrong_hash_is_refused(server, caches):
    url, www, _ = server
    filename, prefix = _publish(fcn("resnet18", num_classes=3), www, "fcn_tiny_coco")
    entry = dataclasses.replace(get_task_weights("fcn_resnet50.coco_voc_v1"), url=url + filename, filename=filename,
                                sha256="0" * 8 if prefix != "0" * 8 else "1" * 8, backbone="resnet18")  # fmt: skip
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_torchvision_checkpoint(fcn("resnet18", num_classes=3), entry, progress=False)
    assert not (caches / filename).exists()


def test_builder_weights_argument_loads_a_detector_as_torchvision_does(server, caches, monkeypatch):
    """``faster_rcnn(weights=NAME)`` builds the pretrained layout (frozen BatchNorm, stem and stage 1 frozen), loads
    the checkpoint strictly and sets the frozen BatchNorms' eps to 0, as torchvision does for its COCO_V1 models."""
    url, www, _ = server
    published = faster_rcnn("resnet18", num_classes=3, norm="frozen_batch", frozen_stages=1)
    filename, prefix = _publish(published, www, "fasterrcnn_tiny_coco")
    entry = dataclasses.replace(get_task_weights("fasterrcnn_resnet50_fpn.coco_v1"), name="fasterrcnn_tiny.coco",
                                url=url + filename, filename=filename, sha256=prefix, backbone="resnet18",
                                categories=("bg", "a", "b"))  # fmt: skip
    monkeypatch.setitem(TASK_WEIGHTS, entry.name, entry)
    model = faster_rcnn("resnet18", weights=entry.name)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert torch.equal(model.backbone.fpn.layer_blocks[0][0].weight, published.backbone.fpn.layer_blocks[0][0].weight)
    frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad


def test_weights_of_another_model_are_refused_before_any_download():
    with pytest.raises(ValueError, match=r"are of fcn\('resnet50'\), not deeplabv3\('resnet18'\)"):
        deeplabv3("resnet18", weights="fcn_resnet50.coco_voc_v1")
    with pytest.raises(Exception, match="unknown task weights 'nope'"):
        fcn("resnet50", weights="nope")


def test_a_published_name_loads_predicts_and_is_listed(server, caches, monkeypatch, tmp_path, capsys):
    """``load_task_model`` and the CLI take a checkpoint's registry name as they take a file: built, downloaded
    once through the checked path, given torchvision's categories and preprocessing."""
    from PIL import Image

    from resnetkit.cli import main
    from resnetkit.tasks import load_task_model

    url, www, log = server
    published = fcn("resnet18", num_classes=3, aux=True)
    filename, prefix = _publish(published, www, "fcn_tiny_coco")
    name = "fcn_resnet50.coco_voc_v1"
    entry = dataclasses.replace(TASK_WEIGHTS[name], url=url + filename, filename=filename, sha256=prefix,
                                backbone="resnet18", categories=("bg", "a", "b"))  # fmt: skip
    monkeypatch.setitem(TASK_WEIGHTS, name, entry)
    model = load_task_model(name)
    assert model.record.classes == ("bg", "a", "b") and model.record.task["head"] == "fcn"
    assert model.record.task["base_size"] == 520 and model.record.source == entry.url and not model.training
    assert torch.equal(model.classifier[4].weight, published.classifier[4].weight)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "street.png")
    assert main(["predict", name, str(tmp_path / "street.png"), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "street.png").is_file() and (tmp_path / "pred" / "street.json").is_file()
    assert len(log) == 1, "downloaded once, then read from the cache"
    capsys.readouterr()
    assert main(["weights", "fcn_*"]) == 0
    listed = capsys.readouterr().out
    assert "fcn_resnet50.coco_voc_v1" in listed and "fcn(resnet18)" in listed
