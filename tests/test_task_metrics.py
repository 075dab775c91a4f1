"""The dense-task meters give the standard tools' numbers: IoU by hand and by torchmetrics' Jaccard index, COCO AP
through pycocotools (a box at IoU 0.6 counts at AP50, not at AP75; a perfect mask scores segm AP 1)."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from resnetkit.train.task_metrics import DetectionMeter, SegmentationMeter

# 2x4 label maps, 255 = ignore; by hand: class 0 TP 1 FP 1 FN 1, class 1 TP 3 FP 1, class 2 TP 1 FN 1, class 3 nowhere
TARGETS = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
PREDICTED = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 1]]])


def one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def test_perfect_segmentation_scores_one():
    meter = SegmentationMeter(3)
    labels = torch.tensor([[[0, 1], [2, 2]]])
    meter.update(one_hot_logits(labels, 3), labels, loss=0.25)
    assert meter.summary() == {"loss": 0.25, "miou": 1.0, "pixel_acc": 1.0, "mean_acc": 1.0}
    assert meter.main == 1.0


def test_hand_computed_iou_and_absent_class_is_nan():
    meter = SegmentationMeter(4, class_names=["road", "car", "sky", "tree"])
    meter.update(PREDICTED, TARGETS)
    per_class = meter.per_class()
    assert per_class["road"] == {"iou": pytest.approx(1 / 3), "acc": pytest.approx(1 / 2)}
    assert per_class["car"] == {"iou": pytest.approx(3 / 4), "acc": 1.0}
    assert per_class["sky"] == {"iou": pytest.approx(1 / 2), "acc": pytest.approx(1 / 2)}
    assert math.isnan(per_class["tree"]["iou"]) and math.isnan(per_class["tree"]["acc"])
    summary = meter.summary()
    assert summary["miou"] == pytest.approx(19 / 36)  # (1/3 + 3/4 + 1/2) / 3: the absent class is left out
    assert summary["pixel_acc"] == pytest.approx(5 / 7)
    assert summary["mean_acc"] == pytest.approx(2 / 3)
    assert math.isnan(summary["loss"])
    assert meter.confusion.dtype == torch.int64 and int(meter.confusion.sum()) == 7


def test_ignored_pixels_count_nowhere():
    meter, other = SegmentationMeter(4), SegmentationMeter(4)
    meter.update(PREDICTED, TARGETS)
    changed = PREDICTED.clone()
    changed[0, 1, 2] = 3  # the prediction under the ignored pixel
    other.update(changed, TARGETS)
    other.update(torch.full((1, 2, 4), 2), torch.full((1, 2, 4), 255))  # an all-ignored image
    assert torch.equal(meter.confusion, other.confusion)


def test_agrees_with_torchmetrics_jaccard():
    g = torch.Generator().manual_seed(0)
    meter = SegmentationMeter(5, ignore_index=255)
    jaccard = MulticlassJaccardIndex(num_classes=5, average="macro", ignore_index=255)
    for _ in range(3):
        logits = torch.randn(2, 5, 8, 8, generator=g)
        targets = torch.randint(0, 4, (2, 8, 8), generator=g)  # class 4 only ever predicted
        targets[torch.rand(2, 8, 8, generator=g) < 0.2] = 255
        meter.update(logits, targets, loss=1.0)
        jaccard.update(logits.argmax(1), targets)
    assert meter.miou == pytest.approx(float(jaccard.compute()), abs=1e-6)
    assert meter.loss == 1.0


def test_segmentation_rejects_bad_labels_and_shapes():
    meter = SegmentationMeter(2)
    with pytest.raises(ValueError, match="0..1 or 255"):
        meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="differ in shape"):
        meter.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


CLASSES = ["__background__", "cat", "dog"]


def box_target(box: list[float], label: int) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}


def box_prediction(box: list[float], label: int, score: float = 0.9) -> dict[str, torch.Tensor]:
    return {**box_target(box, label), "scores": torch.tensor([score])}


def test_perfect_boxes_score_one_and_pycocotools_is_the_backend():
    meter = DetectionMeter(CLASSES)
    # the evaluator torchmetrics will call (a private attribute: the public one is only the constructor argument)
    assert meter.metric._coco_backend.cocoeval.__module__ == "pycocotools.cocoeval"
    boxes = [[10.0, 10.0, 40.0, 50.0], [5.0, 60.0, 30.0, 90.0]]
    meter.update([box_prediction(boxes[0], 1), box_prediction(boxes[1], 2)],
                 [box_target(boxes[0], 1), box_target(boxes[1], 2)], loss=0.5)  # fmt: skip
    assert meter.summary() == {"loss": 0.5, "bbox_map": 1.0, "bbox_map50": 1.0, "bbox_map75": 1.0}
    assert meter.per_class() == {"cat": {"bbox_ap": 1.0}, "dog": {"bbox_ap": 1.0}}
    assert meter.main == 1.0


def test_box_at_iou_06_counts_at_ap50_not_ap75():
    meter = DetectionMeter(CLASSES)
    # a 10x10 box shifted 2.5 px: overlap 75, union 125, IoU 0.6
    meter.update([box_prediction([22.5, 20.0, 32.5, 30.0], 1)], [box_target([20.0, 20.0, 30.0, 30.0], 1)])
    summary = meter.summary()
    assert summary["bbox_map50"] == pytest.approx(1.0)
    assert summary["bbox_map75"] == pytest.approx(0.0)
    assert 0.0 < summary["bbox_map"] < 0.5
    assert math.isnan(meter.per_class()["dog"]["bbox_ap"])  # no dog anywhere: no AP, not -1


def test_perfect_mask_scores_segm_ap_one():
    meter = DetectionMeter(CLASSES, masks=True)
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, 4:20, 6:18] = 1
    probabilities = mask[:, None].float() * 0.8 + 0.1  # (N, 1, H, W) as Mask R-CNN gives them: 0.9 inside, 0.1 out
    prediction = {**box_prediction([6.0, 4.0, 18.0, 20.0], 1), "masks": probabilities}
    meter.update([prediction], [{**box_target([6.0, 4.0, 18.0, 20.0], 1), "masks": mask}])
    summary = meter.summary()
    assert summary["segm_map"] == summary["segm_map50"] == summary["segm_map75"] == pytest.approx(1.0)
    assert summary["bbox_map"] == pytest.approx(1.0) and math.isnan(summary["loss"])
    assert meter.per_class()["cat"] == {"bbox_ap": pytest.approx(1.0), "segm_ap": pytest.approx(1.0)}


def test_detection_needs_the_background_name():
    with pytest.raises(ValueError, match="__background__"):
        DetectionMeter(["cat", "dog"])


def test_meters_with_nothing_seen_report_nan():
    detection, segmentation = DetectionMeter(CLASSES, masks=True), SegmentationMeter(3)
    assert all(math.isnan(v) for v in detection.summary().values())
    assert all(math.isnan(v) for v in segmentation.summary().values())
    assert math.isnan(detection.per_class()["cat"]["segm_ap"])
