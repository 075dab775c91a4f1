"""``resnetkit bench``: every route runs the same network and is timed the same way; the JSON has the documented
fields. Tests check structure and what the numbers must satisfy whatever the machine; speed itself is measured by
``resnetkit bench`` runs quoted in the README, never asserted here."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from resnetkit import create_model
from resnetkit.cli import main
from resnetkit.deploy.bench import BenchSettings, Route, available_routes, bench, format_results, time_calls
from resnetkit.models.complexity import count_macs

FIELDS = {"route", "batch", "latency_ms", "images_per_s", "params", "macs", "file_bytes"}
SMALL = BenchSettings(input_size=32, batch=4, repeats=3, warmup=1, threads=1)


@pytest.fixture(scope="module")
def results():
    routes = [Route.EAGER, Route.CHANNELS_LAST, Route.FUSED, Route.ONNXRUNTIME, Route.INT8]
    return bench(create_model("cifar_resnet20"), routes, SMALL)


def test_two_batch_sizes_per_route_with_consistent_numbers(results):
    assert [(r.route, r.batch) for r in results[:2]] == [("eager", 1), ("eager", 4)]
    assert len(results) == 10
    macs = count_macs(create_model("cifar_resnet20"), 32)
    for r in results:
        assert r.latency_ms > 0 and r.latency_min_ms <= r.latency_ms and r.runs == SMALL.repeats
        assert r.images_per_s == pytest.approx(r.batch / (r.latency_ms / 1e3))
        assert r.macs == macs  # every route runs the same network
        assert FIELDS <= set(r.to_dict())


def test_sizes_follow_what_each_route_ships(results):
    one = {r.route: r for r in results if r.batch == 1}
    assert one["fused"].params < one["eager"].params  # BatchNorm folded: gamma/beta gone, one bias per conv
    assert one["int8"].file_bytes < one["onnxruntime"].file_bytes / 3  # int8 weights: about 4x smaller
    assert one["eager"].file_bytes == pytest.approx(4 * one["eager"].params, rel=0.05)  # fp32 + BN buffers


def test_table_has_a_row_per_route_and_the_speedup_column(results):
    table = format_results(results)
    assert table.splitlines()[0].split()[:3] == ["route", "batch", "1"]
    assert {line.split()[0] for line in table.splitlines()[1:]} == {"eager", "channels_last", "fused", "onnxruntime", "int8"}
    assert "1.00x" in next(line for line in table.splitlines() if line.startswith("onnxruntime"))


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    times = time_calls(lambda x: calls.append(x), torch.zeros(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(times) == 5 and min(times) >= 0


def test_cli_writes_the_json_list(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "cifar_resnet20", "--routes", "eager,onnxruntime", "--input-size", "32", "--batch-size",
                 "2", "--repeats", "2", "--warmup", "1", "--threads", "1", "--json", str(out)])  # fmt: skip
    assert code == 0
    records = json.loads(out.read_text())
    assert [(r["route"], r["batch"]) for r in records] == [("eager", 1), ("eager", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    assert all(FIELDS <= set(r) for r in records)
    assert "onnxruntime" in capsys.readouterr().out


def test_cli_on_a_checkpoint(tiny_checkpoint, capsys):
    assert main(["bench", str(tiny_checkpoint), "--routes", "fused", "--batch-size", "2", "--repeats", "1"]) == 0
    assert "fused" in capsys.readouterr().out


HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.mark.parametrize(
    "routes, calibrated",
    [("fused", False), ("eager,int8", True),
     pytest.param("openvino_int8", True, marks=pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO not installed"))],
)  # fmt: skip
def test_a_checkpoint_reads_calibration_images_only_for_int8_routes(tiny_checkpoint, monkeypatch, routes, calibrated):
    calls, seen = [], []
    monkeypatch.setattr("resnetkit.cli.bench.calibration_images", lambda state, count: calls.append(count) or "images")
    monkeypatch.setattr("resnetkit.cli.bench.bench", lambda model, routes, settings, progress: seen.append(settings))
    monkeypatch.setattr("resnetkit.cli.bench.format_results", lambda results: "")
    assert main(["bench", str(tiny_checkpoint), "--routes", routes, "--calibration-images", "7"]) == 0
    assert calls == ([7] if calibrated else []) and seen[0].calibration == ("images" if calibrated else None)


def test_unknown_route_is_one_line_error(capsys):
    assert main(["bench", "cifar_resnet20", "--routes", "eager,warp"]) == 2
    err = capsys.readouterr().err
    assert "'warp'" in err and "eager" in err and len(err.strip().splitlines()) == 1


def test_available_routes_start_with_eager():
    assert available_routes()[0] is Route.EAGER and Route.INT8 in available_routes()
