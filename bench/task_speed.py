"""Latency of a detection or segmentation model file, eager PyTorch against its ONNX export in ONNX Runtime.

    python bench/task_speed.py runs/camvid_resnet18/best.safetensors --out bench/results/task_speed_camvid.json

A segmentation model runs one frame at its training scale (shorter side ``base_size``, 4:3); a detector one
image of ``--size`` (height, width) as it is given (torchvision's detectors resize inside). Both routes run the
same input, interleaved call by call so that a busy machine slows both alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from resnetkit.deploy.export import export_onnx
from resnetkit.runtime import hardware_name
from resnetkit.tasks import SegmentationLogits, TaskPredictor, export_detector_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"), help="detector input")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: all cores)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime as ort

    predictor = TaskPredictor.load(args.model)
    model, generator = predictor.model, torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        if predictor.kind == "detection":
            image = torch.rand(3, *args.size, generator=generator)
            export_detector_onnx(model, path, [image, torch.rand(3, *args.size, generator=generator)])
            eager, feed, shape = (lambda: model([image])), {"image": image.numpy()}, list(image.shape)
        else:
            base = model.record.task.get("base_size") or model.record.preprocess.crop_size
            x = torch.randn(2, 3, base, base * 4 // 3, generator=generator)
            logits = SegmentationLogits(model).eval()
            export_onnx(logits, path, inputs=x)
            eager, feed, shape = (lambda: logits(x[:1])), {"image": x[:1].numpy()}, list(x[:1].shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        times = {"eager": [], "onnxruntime": []}
        with torch.no_grad():
            for _ in range(3):  # warm-up
                eager(), session.run(None, feed)
            for _ in range(args.repeats):
                for name, call in (("eager", eager), ("onnxruntime", lambda: session.run(None, feed))):
                    start = time.perf_counter()
                    call()
                    times[name].append(1000 * (time.perf_counter() - start))
    result = {
        "model": args.model, "task": predictor.kind, "head": model.record.task["head"], "backbone": model.record.arch,
        "input": shape, "repeats": args.repeats, "threads": args.threads or torch.get_num_threads(),
        "hardware": hardware_name(torch.device("cpu")),
        "median_ms": {k: statistics.median(v) for k, v in times.items()},
    }  # fmt: skip
    result["onnxruntime_speedup"] = result["median_ms"]["eager"] / result["median_ms"]["onnxruntime"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
