"""Peer proof for resnetkit.tasks.detection: torchvision's own ResNet-50-FPN detectors, built with random weights,
load into ours with ``strict=True`` and give the same boxes, scores, labels and masks; other variants build,
predict and train under the same heads."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torchvision.models import detection as tvd

from resnetkit.tasks import faster_rcnn, mask_rcnn, retinanet

from ..conftest import randomize_norms
from .images import smooth_images

SIZE = {"min_size": 128, "max_size": 160}
PEERS = {
    "faster_rcnn": (faster_rcnn, tvd.fasterrcnn_resnet50_fpn, {"box_score_thresh": 0.0, "box_detections_per_img": 50}),
    "mask_rcnn": (mask_rcnn, tvd.maskrcnn_resnet50_fpn, {"box_score_thresh": 0.0, "box_detections_per_img": 20}),
    "retinanet": (retinanet, tvd.retinanet_resnet50_fpn, {"score_thresh": 0.0, "detections_per_img": 50}),
    "faster_rcnn_v2": (
        partial(faster_rcnn, head_norm="batch"),
        tvd.fasterrcnn_resnet50_fpn_v2,
        {"box_score_thresh": 0.0, "box_detections_per_img": 50},
    ),
    "mask_rcnn_v2": (
        partial(mask_rcnn, head_norm="batch"),
        tvd.maskrcnn_resnet50_fpn_v2,
        {"box_score_thresh": 0.0, "box_detections_per_img": 20},
    ),
}


@pytest.mark.parametrize("kind", sorted(PEERS))
def test_torchvision_detector_loads_strictly_and_predicts_the_same(kind):
    ours_builder, theirs_builder, options = PEERS[kind]
    torch.manual_seed(0)
    theirs = randomize_norms(theirs_builder(weights=None, weights_backbone=None, **SIZE, **options)).eval()
    ours = ours_builder("resnet50", **SIZE, **options).eval()
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = list(smooth_images(2, 150, 190, seed=1))  # resized to 128 x 160 by both transforms
    with torch.no_grad():
        expected, got = theirs(images), ours(images)
    keys = {"boxes", "scores", "labels"} | ({"masks"} if kind.startswith("mask_rcnn") else set())
    for e, g in zip(expected, got, strict=True):
        assert set(g) == keys
        assert len(e["boxes"]) >= 10, "too few boxes to compare: lower the score threshold"
        for key in keys:
            torch.testing.assert_close(g[key], e[key], rtol=0, atol=0, msg=f"{kind} {key}")


def test_defaults_follow_torchvision():
    """Without pretrained weights: the variant's BatchNorm, nothing frozen (torchvision's trainable layers 5); with
    pretrained ones: frozen BatchNorm and the stem and stage 1 frozen (trainable layers 3). RetinaNet reads C3-C5
    and adds P6, P7 from P5."""
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    scratch = faster_rcnn("resnet18", num_classes=3)
    assert all(p.requires_grad for p in scratch.parameters())
    assert isinstance(scratch.backbone.body.bn1, torch.nn.BatchNorm2d)
    assert isinstance(scratch.backbone.fpn.extra_blocks, LastLevelMaxPool)
    fine_tune = mask_rcnn("resnet18", num_classes=3, frozen_stages=1, norm="frozen_batch")
    body = fine_tune.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    retina = retinanet("resnet18", num_classes=3).backbone
    assert retina.body.out_indices == (2, 3, 4) and retina.body.feature_info.channels() == [128, 256, 512]
    assert isinstance(retina.fpn.extra_blocks, LastLevelP6P7) and retina.fpn.extra_blocks.use_P5


def _targets(n: int, with_masks: bool) -> list[dict[str, torch.Tensor]]:
    targets = []
    for i in range(n):
        boxes = torch.tensor([[8.0, 10.0, 40.0, 50.0], [30.0 + i, 20.0, 90.0, 70.0]])
        target = {"boxes": boxes, "labels": torch.tensor([1, 2])}
        if with_masks:
            masks = torch.zeros(2, 96, 112, dtype=torch.uint8)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                m[y0:y1, x0:x1] = 1
            target["masks"] = masks
        targets.append(target)
    return targets


@pytest.mark.parametrize(("builder", "name"), [(mask_rcnn, "resnet18"), (retinanet, "resnext50_32x4d"),
                                                (faster_rcnn, "preact_resnet18")])  # fmt: skip
def test_other_variants_predict_and_train(builder, name):
    """Any variant under the heads: eval gives detections, train gives torchvision's loss dict, whose sum
    back-propagates into the backbone."""
    small = {} if builder is retinanet else {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
                                             "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100,
                                             "box_batch_size_per_image": 64}  # fmt: skip
    model = builder(name, num_classes=3, min_size=96, max_size=112, **small)
    images = list(smooth_images(2, 96, 112, seed=2))
    model.train()
    losses = model(images, _targets(2, with_masks=builder is mask_rcnn))
    expected = {"retinanet": {"classification", "bbox_regression"}}.get(
        builder.__name__, {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        | ({"loss_mask"} if builder is mask_rcnn else set()))  # fmt: skip
    assert set(losses) == expected
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.body.layer4[0].conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and all(o["boxes"].shape[-1] == 4 for o in out)


@pytest.mark.parametrize("kind", ["faster_rcnn", "retinanet"])
def test_pretrained_layout_is_torchvisions(kind):
    """The layout ``weights=`` builds (frozen BatchNorm, ``frozen_stages=1``) is the one torchvision builds for its
    COCO checkpoints (``FrozenBatchNorm2d``, ``trainable_backbone_layers=3``): same keys, same frozen parameters."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    options = {"returned_layers": [2, 3, 4], "extra_blocks": LastLevelP6P7(256, 256)} if kind == "retinanet" else {}
    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, **options)
    theirs = (tvd.RetinaNet if kind == "retinanet" else tvd.FasterRCNN)(body, 91)
    ours = PEERS[kind][0]("resnet50", norm="frozen_batch", frozen_stages=1)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    frozen = {n for n, p in ours.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in theirs.named_parameters() if not p.requires_grad} and frozen


def test_group_norm_heads_for_training_from_scratch():
    """``head_norm="group"``: torchvision's v2 heads and pyramid with GroupNorm (He et al. 2019), trainable with
    two images a batch; RetinaNet has no such option and says so."""
    small = {"min_size": 96, "max_size": 112, "rpn_post_nms_top_n_train": 100, "box_batch_size_per_image": 64}
    model = mask_rcnn("resnet18", num_classes=3, norm="group", head_norm="group", **small)
    norms = {name.split(".")[0] + "." + name.split(".")[1]: type(m).__name__ for name, m in model.named_modules()
             if isinstance(m, torch.nn.GroupNorm)}  # fmt: skip
    assert {"backbone.body", "backbone.fpn", "roi_heads.box_head", "roi_heads.mask_head"} <= set(norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    model.train()
    losses = model(list(smooth_images(2, 96, 112, seed=3)), _targets(2, with_masks=True))
    assert set(losses) >= {"loss_mask", "loss_classifier"} and torch.isfinite(sum(losses.values()))
    with pytest.raises(ValueError, match="not retinanet"):
        retinanet("resnet18", num_classes=2, head_norm="group")
