"""bench/deploy_matrix.py: one command measures model x route and writes the JSON and the Markdown table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def matrix():
    spec = importlib.util.spec_from_file_location("deploy_matrix", REPO / "bench" / "deploy_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_matrix_measures_routes_and_keeps_rows_measured_elsewhere(matrix, tiny_checkpoint, tmp_path, capsys):
    out, table = tmp_path / "matrix.json", tmp_path / "matrix.md"
    elsewhere = {"model": str(tiny_checkpoint), "route": "tflite", "measured": True, "latency_ms": 0.5,
                 "file_bytes": 1000, "top1": 0.5, "runtime": "LiteRT (XNNPACK)", "precision": "fp32",
                 "hardware": "a phone", "threads": 1, "date": "2026-12-01", "command": "python elsewhere"}  # fmt: skip
    out.write_text(json.dumps({"rows": [elsewhere]}))
    matrix.main([str(tiny_checkpoint), "--routes", "eager,int8,tflite,tensorrt", "--repeats", "3",
                 "--calibration", "64", "--out", str(out), "--table", str(table)])  # fmt: skip
    rows = {r["route"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["eager", "int8", "tflite", "tensorrt"]  # the matrix's route order
    eager, int8 = rows["eager"], rows["int8"]
    assert eager["measured"] and int8["measured"] and eager["images"] == int8["images"] > 100
    assert eager["top1"] > 0.6 and abs(int8["top1"] - eager["top1"]) < 0.05  # real accuracy of each runtime
    assert int8["file_bytes"] < eager["file_bytes"] / 2 and int8["latency_ms"] > 0
    if not matrix.unavailable("tflite"):
        assert rows["tflite"]["hardware"] != "a phone"  # measured here: the new row wins
    else:  # not runnable here: the row measured elsewhere is kept, and the table says where
        assert rows["tflite"] == elsewhere and "a phone" in table.read_text()
    trt = rows["tensorrt"]
    if not matrix.unavailable("tensorrt"):  # a CUDA machine with the tensorrt extra: measured on the GPU
        assert trt["measured"] and trt["hardware"] == torch.cuda.get_device_name() and trt["top1"] > 0.6
    elif torch.cuda.is_available():
        assert not trt["measured"] and "resnetkit[tensorrt]" in trt["reason"]
    else:
        assert not trt["measured"] and "CUDA" in trt["reason"]
        assert "not measured: needs a CUDA GPU" in table.read_text()
    assert "python bench/deploy_matrix.py" in table.read_text()


def test_matrix_refuses_unknown_routes(matrix, tiny_checkpoint, tmp_path):
    with pytest.raises(SystemExit):
        matrix.main([str(tiny_checkpoint), "--routes", "eager,warp_drive", "--out", str(tmp_path / "m.json")])
