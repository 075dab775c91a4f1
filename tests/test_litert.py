"""LiteRT export through litert-torch, checked in the LiteRT interpreter: fp32 parity, int8 (static full-integer
and dynamic-range) agreement on a trained model, the CLI.

The packages are an optional extra (``resnetkit[litert]``); without them only the CLI's install message is tested.
Each conversion takes a few seconds (torch.export, then the converter's MLIR passes), so the models are small.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from resnetkit import create_model, load_model
from resnetkit.cli import main
from resnetkit.deploy import ParityError, sample_images
from resnetkit.workflows import calibration_images

from .conftest import randomize_norms

HAVE_LITERT = all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_litert"))
needs_litert = pytest.mark.skipif(not HAVE_LITERT, reason="LiteRT export needs litert-torch and ai-edge-litert "
                                  "(pip install 'resnetkit[litert]')")  # fmt: skip

# a unit of every kind, few of them: option A (zero-pad) shortcuts, inverted residuals, ShuffleNetV2 units
SMALL = {"cifar_resnet20": {"layers": (1, 1, 1)},
         "cifar_mobilenet_v2": {"stages": [{"channels": 16, "units": 1, "stride": 1, "expansion": 1},
                                           {"channels": 24, "units": 2, "stride": 2, "expansion": 6}]},
         "cifar_shufflenet_v2_x0_5": {"stages": [{"channels": 48, "units": 2, "stride": 2}]}}  # fmt: skip


@needs_litert
@pytest.mark.parametrize("name", list(SMALL))
def test_fp32_matches_eager_in_the_litert_interpreter(tmp_path, name):
    from resnetkit.deploy.litert import export_tflite, tflite_ops

    model = randomize_norms(create_model(name, num_classes=5, **SMALL[name])).eval()
    path = tmp_path / f"{name}.tflite"
    report = export_tflite(model, path, inputs=sample_images(3, 32))
    assert report.ok and report.max_abs_diff <= 1e-4 and report.top1_agree == report.samples == 4
    assert report.batch_sizes == (3, 1) and report.line().startswith(f"tflite {path}")
    assert "CONV_2D" in tflite_ops(path)


@needs_litert
def test_a_tampered_file_fails_the_check(tmp_path):
    from resnetkit.deploy.litert import export_tflite

    model = randomize_norms(create_model("cifar_resnet20", num_classes=5, layers=(1, 1, 1))).eval()
    other = randomize_norms(create_model("cifar_resnet20", num_classes=5, layers=(1, 1, 1)), seed=1).eval()
    with pytest.raises(ParityError) as err:
        export_tflite(other, tmp_path / "r20.tflite", inputs=sample_images(3, 32), reference=model)
    assert not err.value.report.ok and "FAILED" in err.value.report.line()


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    """The tiny digits checkpoint's model, 64 training images to calibrate on and the next 64 to check on."""
    images = calibration_images(tiny_checkpoint, 128)
    return load_model(tiny_checkpoint).eval(), images[:64], images[64:]


@needs_litert
def test_static_int8_is_full_integer_and_agrees_with_eager(trained, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from resnetkit.deploy.litert import Int8Mode, export_tflite_int8, tflite_ops

    model, calibration, held_out = trained
    path = tmp_path / "static.tflite"
    report = export_tflite_int8(model, path, calibration, mode=Int8Mode.STATIC, inputs=held_out)
    assert report.ok and report.top1_agreement >= 0.95
    interpreter = Interpreter(model_path=str(path))
    (image,), (logits,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert image["dtype"] == logits["dtype"] == np.int8 and image["quantization"][0] > 0  # int8 in and out
    assert "QUANTIZE" in tflite_ops(path)


@needs_litert
def test_dynamic_range_int8_needs_no_calibration_and_agrees(trained, tmp_path):
    from resnetkit.deploy.litert import Int8Mode, export_tflite, export_tflite_int8

    model, calibration, held_out = trained
    fp32 = tmp_path / "fp32.tflite"
    export_tflite(model, fp32, inputs=held_out[:4])
    report = export_tflite_int8(model, tmp_path / "dynamic.tflite", calibration[:2], mode=Int8Mode.DYNAMIC,
                                inputs=held_out)  # fmt: skip
    assert report.ok and report.int8_bytes < fp32.stat().st_size / 2  # int8 weights


@needs_litert
def test_cli_exports_fp32_and_int8(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "digits.tflite"
    assert main(["export", str(tiny_checkpoint), "--format", "tflite", "--out", str(out)]) == 0
    assert "OK" in capsys.readouterr().out and out.is_file()
    assert main(["export", str(tiny_checkpoint), "--format", "tflite", "--int8", "--calibration-images", "64",
                 "--out", str(tmp_path / "int8.tflite")]) == 0  # fmt: skip
    lines = capsys.readouterr().out
    assert "calibrating on 64 training images of digits" in lines and "tflite int8" in lines and "OK" in lines


@pytest.mark.skipif(HAVE_LITERT, reason="litert-torch is installed")
def test_cli_without_litert_says_what_to_install(tiny_checkpoint, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "tflite"]) == 2
    assert "pip install 'resnetkit[litert]'" in capsys.readouterr().err


def test_cli_int8_mode_belongs_to_tflite_int8(tiny_checkpoint, capsys):
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--int8", "--int8-mode", "dynamic"]) == 2
    assert "--int8-mode chooses how --int8 --format tflite quantizes" in capsys.readouterr().err


@needs_litert
def test_bench_times_the_litert_routes_with_xnnpack():
    from resnetkit.deploy.bench import BenchSettings, Route, bench

    model = create_model("cifar_resnet20", num_classes=5, layers=(1, 1, 1)).eval()
    settings = BenchSettings(input_size=32, batch=2, repeats=2, warmup=1, threads=1)
    results = bench(model, [Route.TFLITE, Route.TFLITE_INT8], settings)
    assert [(r.route, r.batch) for r in results] == [("tflite", 1), ("tflite", 2), ("tflite_int8", 1),
                                                     ("tflite_int8", 2)]  # fmt: skip
    fp32, int8 = results[0], results[2]
    assert fp32.latency_ms > 0 and int8.file_bytes < fp32.file_bytes / 2


def test_bench_offers_the_litert_routes_only_when_installed():
    from resnetkit.deploy.bench import Route, available_routes

    assert (Route.TFLITE in available_routes()) == (Route.TFLITE_INT8 in available_routes()) == HAVE_LITERT
