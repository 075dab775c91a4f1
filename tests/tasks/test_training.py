"""Detection and segmentation through the one engine: fit, resume, checkpoints rebuilt from the file alone, eval,
predict and the CLI, on small generated datasets (real PNG files in zips)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetkit.cli import main
from resnetkit.errors import UserError
from resnetkit.tasks.checkpoints import TASK_WEIGHTS, shipped_entries
from resnetkit.tasks.training import HEADS, Detection, Segmentation, load_task_model, task_for
from resnetkit.train.config import DETECTION_HEADS, TrainConfig, load_config
from resnetkit.train.distributed import World
from resnetkit.train.engine import fit
from resnetkit.train.task import Classification
from resnetkit.train.task_metrics import DetectionMeter
from resnetkit.weights import hub
from resnetkit.weights.format import WeightsError
from resnetkit.weights.publish import publish_run
from tests.data_tasks.generated import encode

COLOURS = np.array([[20, 20, 20], [230, 40, 40], [40, 40, 230]], dtype=np.uint8)  # background, red, blue


def scene(rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    """A dark image with a red and a blue rectangle: its label map (0, 1, 2) and the boxes (x0, y0, x1, y1, label)."""
    labels = np.zeros((size, size), dtype=np.uint8)
    boxes = []
    for label in (1, 2):
        w, h = rng.integers(8, 14, size=2)
        x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
        labels[y0 : y0 + h, x0 : x0 + w] = label
        boxes.append((int(x0), int(y0), int(x0 + w), int(y0 + h), label))
    image = COLOURS[labels] + rng.integers(0, 20, size=(size, size, 3), dtype=np.uint8)
    return image, labels, boxes


def segmentation_zip(tmp_path: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """SegNet layout (``train/`` + ``trainannot/``), label 3 marks a void border row."""
    rng, path = np.random.default_rng(0), tmp_path / "seg.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for split, n in (("train", n_train), ("val", n_val)):
            for i in range(n):
                image, labels, _ = scene(rng)
                labels[0] = 3  # void
                archive.writestr(f"toy/{split}/{i:03d}.png", encode(image))
                archive.writestr(f"toy/{split}annot/{i:03d}.png", encode(labels))
    return path


def detection_zip(tmp_path: Path, n_train: int = 6, n_val: int = 2) -> Path:
    """VGG Image Annotator layout: each rectangle one polygon region, one class (``box``)."""
    rng, path = np.random.default_rng(1), tmp_path / "det.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for split, n in (("train", n_train), ("val", n_val)):
            via = {}
            for i in range(n):
                image, _, boxes = scene(rng, 64)
                name = f"{i:03d}.png"
                archive.writestr(f"toy/{split}/{name}", encode(image))
                regions = {str(k): {"shape_attributes": {"name": "polygon", "all_points_x": [x0, x1, x1, x0],
                                                         "all_points_y": [y0, y0, y1, y1]}, "region_attributes": {}}
                           for k, (x0, y0, x1, y1, _) in enumerate(boxes)}  # fmt: skip
                via[name] = {"filename": name, "size": 0, "regions": regions}
            archive.writestr(f"toy/{split}/via_region_data.json", json.dumps(via))
    return path


SEG = ["model.name=cifar_resnet20", "model.head=deeplabv3", "model.head_options={output_stride: 4, aux: true}",
       "data.classes=[background, red, blue]", "data.ignore_index=3", "data.input_size=24", "data.batch_size=4",
       "data.eval_batch_size=4", "data.workers=0", "optim.lr=0.05", "progress=false"]  # fmt: skip
DET = ["model.name=resnet18", "model.options={norm: group, widths: [16, 32, 64, 128], stem_width: 16}", "model.head=mask_rcnn",
       "model.head_options={min_size: 64, max_size: 64}", "data.classes=[box]", "data.batch_size=2",
       "data.eval_batch_size=2", "data.workers=0", "optim.lr=0.005", "optim.grad_clip=5", "optim.warmup_steps=2",
       "progress=false"]  # fmt: skip


def seg_config(tmp_path: Path, *extra: str):
    return load_config(None, [f"data.dataset={segmentation_zip(tmp_path)}", *SEG, f"out={tmp_path / 'seg'}", *extra])


def test_task_for_picks_the_task_from_the_head(tmp_path):
    assert isinstance(task_for(load_config(None, [])), Classification)
    assert isinstance(task_for(seg_config(tmp_path)), Segmentation)
    assert isinstance(task_for(load_config(None, ["model.head=mask_rcnn"])), Detection)
    with pytest.raises(UserError, match="unknown model.head 'deeplab'; did you mean deeplabv3"):
        task_for(load_config(None, ["model.head=deeplab"]))


def test_the_config_layer_knows_every_detection_head():
    # The config check of data.augment=lsj cannot import the tasks layer, so it restates which heads detect.
    assert set(DETECTION_HEADS) == {head for head, (kind, _) in HEADS.items() if kind == "detection"}


def test_segmentation_trains_with_ema_resumes_and_rebuilds_from_its_file(tmp_path):
    cfg = seg_config(tmp_path, "epochs=4", "ema_decay=0.5")
    history = fit(cfg, task=task_for(cfg))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    summary = json.loads((tmp_path / "seg" / "summary.json").read_text())
    val = summary["metrics"]["val"]
    assert summary["task"] == "segmentation" and 0.0 <= val["miou"] <= 1.0
    assert set(val["per_class"]) == {"background", "red", "blue"}
    assert summary["best_val_miou"] == max(r["val_miou"] for r in history)
    model = load_task_model(tmp_path / "seg" / "weights.safetensors")
    assert model.record.task["head"] == "deeplabv3" and model.record.classes == ("background", "red", "blue")
    assert model.record.recipe.endswith("random scale 0.5-2.0x, 24-pixel crops, flips")  # the task's, not data.augment
    out = model(torch.zeros(1, 3, 24, 24))["out"]
    assert out.shape == (1, 3, 24, 24)
    resumed = fit(seg_config(tmp_path, "epochs=5", "ema_decay=0.5"), resume=True, task=Segmentation())
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5]


def test_segmentation_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(UserError, match="qat: not available for segmentation"):
        fit(seg_config(tmp_path, "qat=true"), task=Segmentation())
    with pytest.raises(UserError, match="at least 2 images per process.*data.batch_size=1 over 1 process"):
        fit(seg_config(tmp_path, "data.batch_size=1"), task=Segmentation())


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> Path:
    """A tiny Mask R-CNN trained 2 epochs on generated boxes, with large-scale jitter."""
    tmp = tmp_path_factory.mktemp("det")
    lsj = ["data.augment=lsj", "data.input_size=64", "data.scale_range=[0.5, 1.5]"]  # large-scale jitter
    cfg = load_config(None, [f"data.dataset={detection_zip(tmp)}", *DET, *lsj, "epochs=2", f"out={tmp / 'det'}"])
    fit(cfg, task=task_for(cfg))
    return tmp / "det"


def test_detection_trains_and_measures_coco_ap(det_run):
    history = [json.loads(line) for line in (det_run / "log.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(np.isfinite(r["train_loss"]) for r in history)
    summary = json.loads((det_run / "summary.json").read_text())
    val = summary["metrics"]["val"]
    assert summary["task"] == "detection" and {"bbox_map50", "segm_map", "per_class"} <= set(val)
    model = load_task_model(det_run / "best.safetensors")
    assert type(model).__name__ == "MaskRCNN" and model.record.classes == ("__background__", "box")
    assert model.record.recipe.endswith("2 epochs, large-scale jitter 0.5-1.5x, 64-pixel crops, then shorter side 64 px, "
                                        "flips")


def test_a_detector_trained_in_bf16_is_scored_in_float32(det_run, monkeypatch):
    # under bf16 autocast torchvision would decode the boxes in bfloat16: steps of 8 px at a photo's scale
    model = load_task_model(det_run / "best.safetensors")
    cfg = TrainConfig.from_dict({**model.record.train_config, "precision": "bf16"})
    task = task_for(cfg)
    data = task.build_data(cfg, torch.device("cpu"), World())
    scored = []
    monkeypatch.setattr(DetectionMeter, "update", lambda self, outputs, targets: scored.extend(outputs))
    task.evaluate(model, data.val_batches(), data, cfg)
    assert len(scored) == 2 and {o["boxes"].dtype for o in scored} == {torch.float32}


def test_detector_exports_to_onnx_with_parity(det_run, tmp_path, capsys):
    out = tmp_path / "det.onnx"
    code = main(["export", str(det_run / "best.safetensors"), "--out", str(out)])
    line = capsys.readouterr().out
    assert code == 0 and "ok" in line and "masks" in line, line
    import onnx

    graph = onnx.load(str(out)).graph
    assert [o.name for o in graph.output] == ["boxes", "labels", "scores", "masks"]


def test_bench_times_a_detector_eager_and_in_onnx_runtime(det_run, tmp_path, capsys):
    out = tmp_path / "bench.json"
    timing = ["--image-size", "64", "96", "--repeats", "2", "--warmup", "1", "--threads", "1"]
    assert main(["bench", str(det_run / "best.safetensors"), *timing, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["route"] for r in rows] == ["eager", "onnxruntime"]
    assert all(r["batch"] == 1 and r["latency_ms"] > 0 and r["macs"] > 1e6 for r in rows)
    assert rows[1]["file_bytes"] > rows[0]["file_bytes"] / 2  # the ONNX graph holds the same weights
    assert "onnxruntime" in capsys.readouterr().out
    assert main(["bench", str(det_run / "best.safetensors"), "--routes", "int8", *timing]) == 2
    assert "eager and onnxruntime routes" in capsys.readouterr().err


def test_cli_train_eval_predict_segmentation(tmp_path, capsys):
    data = segmentation_zip(tmp_path)
    out = tmp_path / "cli"
    assert main(["train", *[f"data.dataset={data}", *SEG, "epochs=1"], "--out", str(out)]) == 0
    assert main(["eval", str(out / "best.safetensors")]) == 0
    report = capsys.readouterr().out
    assert "[val], 4 images: mean IoU" in report and "blue" in report
    image = tmp_path / "frame.png"
    with zipfile.ZipFile(data) as archive:
        image.write_bytes(archive.read("toy/val/000.png"))
    assert main(["predict", str(out / "best.safetensors"), str(image), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "frame.png").is_file()
    written = json.loads((tmp_path / "pred" / "frame.json").read_text())
    assert written["image"].endswith("frame.png") and set(written["pixels"]) <= {"background", "red", "blue"}


def test_a_published_segmenter_is_listed_and_predicts_by_name(tmp_path, monkeypatch, capsys):
    cfg = seg_config(tmp_path, "epochs=1")
    fit(cfg, task=task_for(cfg))
    files = tmp_path / "files"
    files.mkdir()
    entry = publish_run(tmp_path / "seg", "toy_e1", "resnetkit train ...", "a test CPU", files=files)
    name = entry["name"]
    assert name == "deeplabv3_cifar_resnet20.toy_e1" and entry["categories"] == ["background", "red", "blue"]
    metrics = entry["metrics"]["seg.zip val"]
    assert set(metrics) == {"miou", "pixel_acc", "mean_acc"} and entry["aux"]  # in percent, as torchvision's
    val = json.loads((tmp_path / "seg" / "summary.json").read_text())["metrics"]["val"]
    assert metrics["miou"] == pytest.approx(100 * val["miou"], abs=0.01)
    monkeypatch.setattr(hub, "SHIPPED", files)  # the package's weights folder, here the test's
    monkeypatch.setitem(TASK_WEIGHTS, name, shipped_entries(files / "task_manifest.json")[name])
    assert main(["weights", "deeplabv3_cifar*"]) == 0 and "resnetkit (shipped" in capsys.readouterr().out
    model, trained = load_task_model(name), load_task_model(tmp_path / "seg" / "weights.safetensors")
    assert model.record.extra["hardware"] == "a test CPU" and model.record.task == trained.record.task
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], trained(x)["out"])
    image = tmp_path / "frame.png"
    with zipfile.ZipFile(cfg.data.dataset) as archive:
        image.write_bytes(archive.read("toy/val/000.png"))
    assert main(["predict", name, str(image), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "frame.png").is_file()
    assert main(["eval", name]) == 0 and f"mean IoU {metrics['miou']:.2f}%" in capsys.readouterr().out
    half = publish_run(tmp_path / "seg", "toy_half", "resnetkit train ...", "a test CPU", files=files, half=True)
    assert half["file_mb"] < 0.6 * entry["file_mb"]  # float16 storage: about half the file
    monkeypatch.setitem(TASK_WEIGHTS, half["name"], shipped_entries(files / "task_manifest.json")[half["name"]])
    halved = load_task_model(half["name"])
    assert next(halved.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(halved(x)["out"], trained(x)["out"], atol=0.05, rtol=0.01)
    with open(files / entry["filename"], "r+b") as f:  # a damaged file is refused, not loaded
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(WeightsError, match="damaged"):
        load_task_model(name)


@pytest.mark.parametrize("name", sorted(shipped_entries()))
def test_shipped_task_weights_load_offline_and_match_the_manifest(name):
    entry = TASK_WEIGHTS[name]
    model = load_task_model(name)  # the file's SHA-256 is checked against the manifest first
    assert model.record.classes == entry.categories and model.record.task["head"] == entry.builder
    assert sum(p.numel() for p in model.parameters()) == entry.num_params
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 80))
    if isinstance(out, list):  # a detector: one dict of boxes, labels, scores (and masks) per image
        assert out[0]["boxes"].shape[1:] == (4,) and set(out[0]) >= {"labels", "scores"}
    else:
        assert out["out"].shape == (1, entry.num_classes, 64, 80) and torch.isfinite(out["out"]).all()


def test_eval_refuses_torchvision_checkpoints_before_downloading(capsys):
    assert main(["eval", "deeplabv3_resnet50.coco_voc_v1"]) != 0
    err = capsys.readouterr().err
    assert "torchvision's checkpoint, not a resnetkit run" in err and len(err.strip().splitlines()) == 1


def test_segmentation_exports_to_onnx_with_parity(tmp_path, capsys):
    cfg = seg_config(tmp_path, "epochs=1", "data.base_size=24")
    fit(cfg, task=task_for(cfg))
    out = tmp_path / "seg.onnx"
    assert main(["export", str(tmp_path / "seg" / "best.safetensors"), "--out", str(out)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "seg" / "best.safetensors"), "--int8"]) != 0
    assert "models export to fp32 ONNX" in capsys.readouterr().err
    timing = ["--routes", "eager,onnxruntime", "--batch-size", "2", "--repeats", "2", "--warmup", "1"]
    assert main(["bench", str(tmp_path / "seg" / "best.safetensors"), *timing]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_median_frequency_weights_favour_rare_classes(tmp_path):
    from resnetkit.data.segmentation import SegmentationDataset
    from resnetkit.tasks.training import median_frequency_weights

    dataset = SegmentationDataset(segmentation_zip(tmp_path), "train", ignore_index=3, num_classes=3)
    weights = median_frequency_weights(dataset, 3)
    pixels = sum(torch.bincount(dataset.load(i)[1].flatten(), minlength=256)[:3] for i in range(len(dataset)))
    assert torch.isclose(weights, torch.ones(3)).any()  # the median class weighs 1
    assert weights[0] < 1.0 and pixels[0] == pixels.max()  # the background, the commonest, counts less
    cfg = seg_config(tmp_path, "epochs=1", "optim.class_balance=true")
    assert np.isfinite(fit(cfg, task=task_for(cfg))[-1]["train_loss"])


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_dense_tasks_under_torchrun_score_the_whole_val_set(tmp_path, task):
    """Two CPU processes on gloo train a segmenter (DeepLabv3) or a detector (Mask R-CNN, whose heads see a
    different number of proposals on each process) with the same engine; the val metric they report is the one a
    single process computes over every val image from the saved weights (odd counts: shards of unequal size)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from resnetkit.workflows.evaluate import evaluate_model

    if task == "segmentation":
        data, options, metric = segmentation_zip(tmp_path, n_train=8, n_val=5), SEG, "miou"
    else:
        data, options, metric = detection_zip(tmp_path, n_train=4, n_val=3), DET, "bbox_map50"
    out = tmp_path / "ddp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}", "-m",
           "resnetkit", "train", f"data.dataset={data}", *options, "epochs=2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as launcher:  # fmt: skip
        try:
            _, stderr = launcher.communicate(timeout=600)
        except subprocess.TimeoutExpired:  # a hang: stop torchrun and both workers, not the launcher alone
            os.killpg(launcher.pid, signal.SIGKILL)
            raise
    assert launcher.returncode == 0, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task
    report = evaluate_model(str(out / "weights.safetensors"), split="val").to_dict()
    assert summary["metrics"]["val"][metric] == pytest.approx(report[metric], abs=1e-6)
