"""The deployment matrix: model x route, with batch-1 latency, file size and accuracy on the model's own
validation split, measured in one run; routes that cannot run here are listed with the reason.

    python bench/deploy_matrix.py cifar_resnet20.c10jpeg_cpu30 cifar_resnet56.c10jpeg_cpu30 --threads 1

Each route is :mod:`resnetkit.deploy.bench`'s (the same exported, quantised or converted file ``resnetkit bench``
times): its latency is the median of ``--repeats`` batch-1 calls, and its accuracy is ``resnetkit eval``'s on the
``--split`` images the model was trained beside (CIFAR-10: the 5,000 held-out images of the JPEG copy), run
through that route's own runtime. int8 routes are calibrated on ``--calibration`` training images. Core ML files
are converted and their size measured, but run only on macOS; TensorRT (fp16, int8) needs a CUDA GPU and the
``tensorrt`` extra, and its rows name the GPU.

Results are merged into ``--out`` (JSON; a new measurement replaces the same model and route, a route that cannot
run here never replaces one measured elsewhere, such as the LiteRT rows measured in the environment of the
``litert`` extra), and the Markdown table ``--table`` is written from the merged file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetkit.deploy.bench import BenchSettings, Prepared, Route, prepare, time_calls, unavailable_reason
from resnetkit.deploy.export import sample_images
from resnetkit.runtime import hardware_name
from resnetkit.weights import load_model
from resnetkit.workflows.calibrate import calibration_images
from resnetkit.workflows.evaluate import evaluate_model

COREML = "coreml"  # not a bench route: converted and sized here, run on macOS only
TENSORRT_ROUTES = ("tensorrt", "tensorrt_int8")
DEFAULT_ROUTES = ("eager", "onnxruntime", "int8", "openvino", "openvino_int8", "tflite", "tflite_int8", COREML,
                  *TENSORRT_ROUTES)  # fmt: skip
PRECISION = {"int8": "int8", "openvino_int8": "int8", "tflite_int8": "int8", "tensorrt": "fp16",
             "tensorrt_int8": "int8"}  # fmt: skip
RUNTIME = {"eager": "PyTorch", "channels_last": "PyTorch", "fused": "PyTorch", "compiled": "PyTorch (Inductor)",
           "onnxruntime": "ONNX Runtime", "int8": "ONNX Runtime", "openvino": "OpenVINO", "openvino_int8": "OpenVINO",
           "tflite": "LiteRT (XNNPACK)", "tflite_int8": "LiteRT (XNNPACK)", COREML: "Core ML", "tensorrt": "TensorRT",
           "tensorrt_int8": "TensorRT"}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registry names or model files written by resnetkit runs")
    parser.add_argument("--routes", default=",".join(DEFAULT_ROUTES), help="comma-separated route names")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=1, help="threads of every runtime (a phone core: 1)")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--calibration", type=int, default=512, help="training images that calibrate int8")
    parser.add_argument("--out", default="bench/results/deploy_matrix.json")
    parser.add_argument("--table", default="bench/results/deploy_matrix.md")
    args = parser.parse_args(argv)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = sorted(set(routes) - {r.value for r in Route} - {COREML})
    if unknown:
        parser.error(f"unknown route(s) {unknown}; choose from {[r.value for r in Route] + [COREML]}")
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "bench/deploy_matrix.py", *(argv if argv is not None else sys.argv[1:])])
    rows = [row for model in args.models for row in measure_model(model, routes, args, command)]
    merged = merge(read_rows(Path(args.out)), rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": merged}, indent=1) + "\n")
    Path(args.table).write_text(markdown(merged))
    print(markdown(rows))
    print(f"wrote {args.out} and {args.table}")


def measure_model(source: str, routes: list[str], args: argparse.Namespace, command: str) -> list[dict[str, Any]]:
    model = load_model(source).eval()
    record = model.record
    size = record.preprocess.crop_size
    int8 = any("int8" in r and not unavailable(r) for r in routes)
    calibration = calibration_images(source, args.calibration) if int8 else None
    settings = BenchSettings(input_size=size, batch=1, repeats=args.repeats, warmup=10, threads=args.threads,
                             calibration=calibration)  # fmt: skip
    base = {"model": source, "arch": record.arch, "split": args.split, "threads": args.threads,
            "hardware": hardware_name(), "date": time.strftime("%Y-%m-%d"), "command": command}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for route in routes:
            row = base | {"route": route, "runtime": RUNTIME[route], "precision": PRECISION.get(route, "fp32")}
            reason = unavailable(route)
            if reason:
                rows.append(row | {"measured": False, "reason": reason})
            elif route == COREML:
                rows.append(row | coreml_size(model, Path(tmp)))
            else:
                gpu = {"hardware": hardware_name("cuda")} if route in TENSORRT_ROUTES else {}
                rows.append(row | measure_route(source, model, Route(route), settings, Path(tmp), args) | gpu)
            print(f"{source} {route}: {summary_line(rows[-1])}", flush=True)
    return rows


def unavailable(route: str) -> str | None:
    """Why ``route`` cannot run on this machine, or None."""
    if route == COREML:
        return None if importlib.util.find_spec("coremltools") else "needs coremltools (pip install 'resnetkit[coreml]')"
    return unavailable_reason(Route(route))


def measure_route(source: str, model: torch.nn.Module, route: Route, settings: BenchSettings, directory: Path,
                  args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    prepared = prepare(route, model, settings, directory, args.threads)
    x = sample_images(1, settings.input_size, prepared.in_chans, seed=1)
    times = time_calls(_layout(prepared), x, settings.warmup, settings.repeats)
    report = evaluate_model(source, split=args.split, runner=_layout(prepared), device="cpu")
    return {"measured": True, "latency_ms": statistics.median(times) * 1e3, "file_bytes": prepared.file_bytes,
            "top1": report.meter.top1, "images": report.meter.count, "params": prepared.params,
            "macs": prepared.macs}  # fmt: skip


def _layout(prepared: Prepared):
    """The route's call from NCHW batches to a logits tensor (channels_last routes are fed NHWC memory, as
    ``bench`` times them; ONNX Runtime and OpenVINO answer NumPy arrays)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = prepared.run(x.contiguous(memory_format=torch.channels_last) if prepared.channels_last else x)
        return out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))

    return run


def coreml_size(model: torch.nn.Module, directory: Path) -> dict[str, Any]:
    from resnetkit.deploy.coreml import export_coreml

    path = directory / "model.mlpackage"
    export_coreml(model, path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"measured": False, "file_bytes": size, "reason": "converted and sized here; predictions run only on macOS"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with each (model, route) of ``new`` replaced, unless the old row was measured and the new one not."""
    rows = {(r["model"], r["route"]): r for r in old}
    for row in new:
        key = (row["model"], row["route"])
        if row["measured"] or not rows.get(key, {}).get("measured"):
            rows[key] = row
    models = list(dict.fromkeys(r["model"] for r in [*old, *new]))
    order = {route: i for i, route in enumerate(dict.fromkeys([*DEFAULT_ROUTES, *(r.value for r in Route)]))}
    return sorted(rows.values(), key=lambda r: (models.index(r["model"]), order.get(r["route"], 99)))


def summary_line(row: dict[str, Any]) -> str:
    if not row["measured"]:
        return f"not measured: {row['reason']}"
    return f"{row['latency_ms']:.2f} ms, {row['file_bytes'] / 1e6:.2f} MB, top-1 {100 * row['top1']:.2f}%"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The matrix as a Markdown table, then the commands and machines of its rows."""
    lines = ["| model | route | runtime | precision | batch-1 latency (ms) | file (MB) | val top-1 | measured on |",
             "|---|---|---|---|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        size = f"{r['file_bytes'] / 1e6:.2f}" if r.get("file_bytes") else "-"
        if r["measured"]:
            cells = [f"{r['latency_ms']:.2f}", size, f"{100 * r['top1']:.2f}%",
                     f"{r['hardware']}, {r['threads']} thread(s), {r['date']}"]  # fmt: skip
        else:
            cells = ["-", size, "-", f"not measured: {r['reason']}"]
        lines.append(f"| `{r['model']}` | {r['route']} | {r['runtime']} | {r['precision']} | " + " | ".join(cells) + " |")
    commands = list(dict.fromkeys(r["command"] for r in rows))
    lines += ["", "Made by:", "", *(f"    {c}" for c in commands)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
