"""TensorRT (resnetkit.deploy.tensorrt): the CLI and bench refuse it in one line without CUDA; Model Optimizer's
int8 calibration runs on the CPU; on a CUDA machine with the tensorrt extra, fp32/fp16/int8 engines are built
and checked against eager on the GPU, and bench times them."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from resnetkit.cli import main
from resnetkit.deploy.bench import BenchSettings, Route, available_routes, bench
from resnetkit.deploy.export import sample_images
from resnetkit.deploy.tensorrt import cuda_ready, quantize_int8
from resnetkit.weights import load_model
from resnetkit.workflows import calibration_images

needs_tensorrt = pytest.mark.skipif(not cuda_ready(), reason="TensorRT needs a CUDA GPU and torch-tensorrt")
needs_modelopt = pytest.mark.skipif(not importlib.util.find_spec("modelopt"), reason="nvidia-modelopt not installed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine: TensorRT runs")
def test_without_cuda_export_and_bench_refuse_tensorrt_in_one_line(tiny_checkpoint, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "tensorrt", "--int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA" in err
    assert Route.TENSORRT not in available_routes() and Route.TENSORRT_INT8 not in available_routes()
    assert main(["bench", str(tiny_checkpoint), "--routes", "eager,tensorrt"]) == 2
    assert "route 'tensorrt' cannot run here: needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [(["--format", "onnx", "--fp16"], "--fp16 is for --format coreml or tensorrt"),
     (["--format", "tensorrt", "--fp16", "--int8"], "choose one"),
     (["--format", "torchscript", "--int8"], "--int8 writes ONNX, LiteRT or TensorRT")],
)  # fmt: skip
def test_precision_options_belong_to_their_formats(tiny_checkpoint, capsys, args, match):
    assert main(["export", str(tiny_checkpoint), *args]) == 2
    assert match in capsys.readouterr().err


@needs_modelopt
def test_int8_calibration_runs_on_the_cpu_and_keeps_the_top1(tiny_checkpoint):
    """Model Optimizer's Q/DQ pairs, calibrated on real training images, fake-quantize in PyTorch: the classes of
    held-out images stay those of fp32, the original model is untouched."""
    model = load_model(tiny_checkpoint).eval()
    images = calibration_images(model.record, 192)
    calibration, held_out = images[:128], images[128:]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model, calibration)
    quantizers = [n for n, m in quantized.named_modules() if type(m).__name__ == "TensorQuantizer"]
    assert any(n.endswith("conv1.weight_quantizer") for n in quantizers)
    assert any(n.endswith("conv1.input_quantizer") for n in quantizers)
    with torch.no_grad():
        fp32, int8 = model(held_out), quantized(held_out)
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean() >= 0.9
    assert 0 < (fp32 - int8).abs().max() < 0.5 * fp32.abs().max()  # quantized, not identical, not broken
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="at least 2 images"):
        quantize_int8(model, calibration[:1])


@needs_tensorrt
@pytest.mark.parametrize("precision", [[], ["--fp16"], ["--int8", "--calibration-images", "64"]])
def test_cli_builds_engines_checked_on_the_gpu(tiny_checkpoint, tmp_path, capsys, precision):
    out = tmp_path / "model.ep"
    assert main(["export", str(tiny_checkpoint), "--format", "tensorrt", *precision, "--atol", "1e-3",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "tensorrt" in capsys.readouterr().out and out.is_file()


@needs_tensorrt
def test_bench_times_the_tensorrt_routes(tiny_checkpoint):
    model = load_model(tiny_checkpoint).eval()
    settings = BenchSettings(input_size=16, batch=8, repeats=3, warmup=1, calibration=sample_images(16, 16, 1))
    results = bench(model, [Route.TENSORRT, Route.TENSORRT_INT8], settings)
    assert [(r.route, r.batch) for r in results] == [("tensorrt", 1), ("tensorrt", 8), ("tensorrt_int8", 1),
                                                     ("tensorrt_int8", 8)]  # fmt: skip
    assert all(r.latency_ms > 0 and r.file_bytes > 0 for r in results)
