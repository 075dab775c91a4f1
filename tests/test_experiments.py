"""The CIFAR-10 experiment driver (experiments/cifar10.py) end to end, on tiny digits runs.

The driver's experiments are tables of runs; here each is cut down with ``--only`` and trained for one or two
epochs of a 3-unit network at 16x16 on the embedded digits, so the whole file takes seconds.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from resnetkit.data import SkippedImageWarning
from resnetkit.train import engine
from resnetkit.train.checkpoint import LAST
from resnetkit.train.report import read_log

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--recipe", "cifar10_cpu", "--data", "digits", "model.options={layers: [1, 1, 1]}", "data.input_size=16",
        "data.val_size=0.1", "epochs=1"]  # fmt: skip
RECORD_FIELDS = {"model", "params", "options", "recipe", "epochs", "steps", "wall_time_s", "train_time_s", "device",
                 "hardware", "train_error_pct", "val_error_pct", "best_val_error_pct", "paper_test_error_pct",
                 "command", "train_command", "history"}  # fmt: skip


@pytest.fixture
def driver(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # as when run as `python experiments/cifar10.py`
    import cifar10

    return cifar10


def mtimes(out: Path) -> dict[Path, int]:
    """When training last wrote each run's config.json (at every start) and summary.json (at its end)."""
    return {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*") if p.name in ("config.json", "summary.json")}


KEPT_IN_GIT = {"config.json", "summary.json", "log.jsonl", "driver.json", "curves.png", "tensorboard"}


def as_in_git(run_dir: Path) -> None:
    """Leave a finished run as the repository keeps it: no checkpoints, no weights."""
    for path in run_dir.iterdir():
        if path.name not in KEPT_IN_GIT:
            path.unlink()


def test_degradation_runs_skips_and_reports(driver, tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["degradation", "--only", "cifar_plain20", "cifar_resnet20", "--out", str(out), *TINY]
    driver.main(argv)
    printed = capsys.readouterr().out
    assert printed.count(" started ") == 2 and printed.count(" finished ") == 2

    document = json.loads((out / "degradation.json").read_text())
    assert "JPEG" in document["note"] and "test set" in document["note"]
    records = document["records"]
    assert [(r["run"], r["panel"]) for r in records] == [("cifar_plain20", "plain"), ("cifar_resnet20", "ResNet")]
    for r in records:
        assert RECORD_FIELDS <= r.keys()
        assert r["finished"] and r["epochs"] == 1 and r["steps"] == r["total_steps"] > 0
        assert r["recipe"] == "cifar10_cpu" and r["device"] == "cpu" and r["params"] > 0
        assert r["options"] == {"layers": [1, 1, 1]} and r["paper_test_error_pct"] is None  # not the paper's net
        assert 0 <= r["val_error_pct"] <= 100 and r["wall_time_s"] > 0
        assert r["command"].startswith("python experiments/cifar10.py degradation --only cifar_plain20")
        assert len(r["history"]) == 1 and r["history"][0]["train_error_pct"] == r["train_error_pct"]
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = mtimes(out)
    assert len(before) == 4
    for run_dir in {p.parent for p in before}:
        as_in_git(run_dir)
    driver.main(argv)  # finished runs are skipped: nothing is trained again, and their records stay the same
    assert capsys.readouterr().out.count(" skipped ") == 2
    assert mtimes(out) == before
    assert json.loads((out / "degradation.json").read_text())["records"] == records
    with pytest.raises(SystemExit, match=r"epochs: 1 -> 2"):  # other settings are refused, not skipped
        driver.main([*argv, "epochs=2"])

    alone = tmp_path / "alone"  # a run trained with `resnetkit train`, without the driver's driver.json
    shutil.copytree(out / "runs" / "table6" / "cifar_resnet20-seed0", alone)  # shared with Table 6
    (alone / "driver.json").unlink()
    markdown = tmp_path / "docs" / "RESULTS.md"
    report = ["report", "--out", str(out), "--markdown", str(markdown)]
    driver.main([*report, "--extra-run", f"{alone}=resnetkit train cifar10_cpu data.dataset=digits --out {alone}"])
    text = markdown.read_text()
    assert "| run | model | params | val. error† (%) | paper test error (%) | recipe |" in text
    assert re.search(r"\| cifar_plain20 \| cifar_plain20 \(layers=\[1, 1, 1\]\) \| [\d.]+M \| [\d.]+† \|", text)
    assert "| cifar_resnet20 |" in text and "| alone |" in text
    assert "**re-encoded as JPEG**" in text and "not on the official" in text
    assert f"`{records[0]['command']}`" in text and "`resnetkit train cifar10_cpu data.dataset=digits" in text
    figure = re.search(r"!\[.*\]\((.+\.png)\)", text).group(1)
    assert (markdown.parent / figure).is_file()
    driver.main(report)  # the extra run is remembered in OUT/extra.json
    assert "| alone |" in markdown.read_text()


def test_cut_off_run_resumes(driver, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    argv = ["table6", "--only", "cifar_resnet20", "--out", str(out), *TINY, "epochs=2"]
    end_of_epoch = engine._end_of_epoch

    def cut_off_after_first_epoch(t, record, log):
        end_of_epoch(t, record, log)
        raise KeyboardInterrupt  # as if the session ended here, after the epoch-1 checkpoint

    monkeypatch.setattr(engine, "_end_of_epoch", cut_off_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        driver.main(argv)
    monkeypatch.setattr(engine, "_end_of_epoch", end_of_epoch)
    run_dir = out / "runs" / "table6" / "cifar_resnet20-seed0"
    assert (run_dir / LAST).is_file() and not (run_dir / "summary.json").exists()

    markdown = tmp_path / "RESULTS.md"  # the report shows a run that is still training as such
    driver.main(["report", "--out", str(out), "--markdown", str(markdown), "--extra-run", f"{run_dir}=(cut off)"])
    assert "1 of ~2, still training" in markdown.read_text()
    (cut_off,) = json.loads((out / "extra.json").read_text())["records"]  # its progress read from log.jsonl
    assert not cut_off["finished"] and (cut_off["epochs"], cut_off["total_steps"]) == (1, 2 * cut_off["steps"])
    assert cut_off["best_val_error_pct"] == cut_off["val_error_pct"] is not None

    capsys.readouterr()
    driver.main(argv)
    assert " resumed " in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(run_dir / "log.jsonl")] == [1, 2]
    (record,) = json.loads((out / "table6.json").read_text())["records"]
    assert record["finished"] and record["epochs"] == 2 and record["steps"] == record["total_steps"]
    assert os.path.isfile(out / "table6.png")


def test_resnet110_warms_up_and_no_other_run_does(driver, tmp_path):
    args = driver.parse_args(["table6", "--out", str(tmp_path)])
    by_model = {run.model: driver.run_overrides(run, 0, args) for run in driver.EXPERIMENTS["table6"].runs}
    assert "optim.warmup_steps=400" in by_model["cifar_resnet110"]
    assert not any("warmup" in item for name, items in by_model.items() if name != "cifar_resnet110" for item in items)
    cfg = driver.load_config(args.recipe, by_model["cifar_resnet110"], check_data=False)
    assert cfg.optim.warmup_steps == 400 and cfg.model.name == "cifar_resnet110"


def digits_jpeg_zip(path: Path, per_class: int = 20, size: int = 16) -> Path:
    """The first digits of each class as RGB JPEGs (quality 90, ``size`` square) in ``train/<class>/``, and one broken
    file."""
    from resnetkit.data.digits import load_digits

    digits = load_digits()
    with zipfile.ZipFile(path, "w") as archive:
        for label in range(10):
            for i in (digits.labels == label).nonzero().flatten()[:per_class].tolist():
                image = Image.fromarray(digits.images[i, 0].numpy()).resize((size, size)).convert("RGB")
                saved = io.BytesIO()
                image.save(saved, "JPEG", quality=90)
                archive.writestr(f"train/{label}/{i:04d}.jpg", saved.getvalue())
        archive.writestr("train/3/broken.jpg", b"not a jpeg")
    return path


def test_jpeg_experiment_trains_on_the_images_saved_again_at_lower_quality(driver, tmp_path, capsys):
    source = digits_jpeg_zip(tmp_path / "digits-jpeg.zip")
    out = tmp_path / "results"
    tiny = [a for a in TINY if a not in ("--data", "digits")]
    with pytest.warns(SkippedImageWarning, match="digits-jpeg-q25.zip:train/3/broken.jpg"):
        driver.main(["jpeg", "--only", "q25", "--data", str(source), "--out", str(out), *tiny])

    reencoded = out / "reencoded" / "digits-jpeg-q25.zip"
    with zipfile.ZipFile(source) as before, zipfile.ZipFile(reencoded) as after:
        assert after.namelist() == before.namelist()
        assert after.read("train/3/broken.jpg") == b"not a jpeg"  # copied; training reported and skipped it
        name = "train/0/0000.jpg"
        with Image.open(io.BytesIO(before.read(name))) as old, Image.open(io.BytesIO(after.read(name))) as new:
            assert new.format == "JPEG" and new.size == old.size == (16, 16)
            assert new.quantization[0][0] == 16 * 2 and old.quantization[0][0] == round(16 * 0.2)  # q25, q90 scale
    assert f"wrote {reencoded}: mean bytes of JPEG scan data per image" in capsys.readouterr().out
    scan_bytes = [driver.mean_scan_bytes(path) for path in (reencoded, source)]
    with zipfile.ZipFile(source) as archive:
        file_bytes = [m.file_size for m in archive.infolist() if m.filename.endswith("0.jpg")]
    assert 0 < scan_bytes[0] < scan_bytes[1] < min(file_bytes) - 300  # headers and tables left out
    (record,) = json.loads((out / "jpeg.json").read_text())["records"]
    assert (record["run"], record["jpeg_quality"], record["dataset"]) == ("q25", 25, str(reencoded))
    assert record["finished"] and (out / "jpeg.png").read_bytes()[:4] == b"\x89PNG"

    mtime = reencoded.stat().st_mtime_ns
    driver.main(["jpeg", "--only", "q25", "--data", str(source), "--out", str(out), *tiny])
    assert " skipped " in capsys.readouterr().out and reencoded.stat().st_mtime_ns == mtime  # made once
    with pytest.raises(SystemExit, match="re-encodes a zip of images"):
        driver.main(["jpeg", "--only", "q50", "--data", "digits", "--out", str(out), *tiny])


def test_publish_refuses_an_unfinished_run(driver, tmp_path):
    with pytest.raises(SystemExit, match="has not finished"):
        driver.main(["publish", str(tmp_path), "--tag", "x", "--command", "resnetkit train ..."])


def test_a_run_two_experiments_share_is_trained_once(driver, tmp_path, capsys):
    out = tmp_path / "results"
    common = ["--out", str(out), *TINY]
    driver.main(["table6", "--only", "cifar_resnet20", *common])
    trained = mtimes(out)
    assert [p.parent.name for p in trained] == ["cifar_resnet20-seed0"] * 2
    capsys.readouterr()
    driver.main(["degradation", "--only", "cifar_resnet20", *common])
    assert " skipped " in capsys.readouterr().out and mtimes(out) == trained
    (record,) = json.loads((out / "degradation.json").read_text())["records"]
    assert (record["experiment"], record["run"], record["panel"]) == ("degradation", "cifar_resnet20", "ResNet")
    assert record["command"].startswith("python experiments/cifar10.py table6")  # the command that trained it


def test_distillation_needs_a_finished_teacher_then_teaches_resnet20(driver, tmp_path, capsys):
    out = tmp_path / "results"
    common = ["--out", str(out), *TINY]
    teacher = out / "runs" / "table6" / "cifar_resnet56-seed0" / "weights.safetensors"  # its final weights
    with pytest.raises(SystemExit, match=rf"teacher {re.escape(str(teacher))} has not finished training"):
        driver.main(["distillation", "--only", "resnet20-distilled", *common])
    driver.main(["distillation", *common])  # the teacher and the student alone are Table 6's runs
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["distillation", "table6"]
    records = json.loads((out / "distillation.json").read_text())["records"]
    assert [r["run"] for r in records] == ["teacher-resnet56", "resnet20-alone", "resnet20-distilled",
                                           "resnet20-distilled-alpha0.5"]  # fmt: skip
    assert [r["model"] for r in records] == ["cifar_resnet56"] + ["cifar_resnet20"] * 3
    for record, alpha in zip(records[2:], (0.9, 0.5)):
        distilled = json.loads((Path(record["run_dir"]) / "config.json").read_text())["train_config"]["distill"]
        assert distilled == {"teacher": str(teacher), "temperature": 4.0, "alpha": alpha}

    shutil.rmtree(records[2]["run_dir"])  # to train again where the teacher finished elsewhere, as in a clone
    as_in_git(teacher.parent)
    with pytest.raises(SystemExit, match=rf"teacher {re.escape(str(teacher))} is not here"):
        driver.main(["distillation", "--only", "resnet20-distilled", *common])


def test_figure_6_keeps_the_papers_error_range_only_when_our_curves_fit(driver):
    import plots

    def run(*errors):  # one epoch a point, training and validation error alike
        history = [{"step": 100 * (i + 1), "train_error_pct": e, "val_error_pct": e} for i, e in enumerate(errors)]
        return {"history": history}

    assert plots._error_range([run(90, 19, 12, 8, 6)]) == 20  # the first fifth of a run is left out
    assert plots._error_range([run(90, 19, 12, 8, 6), run(90, 45, 35, 25, 15)]) == 60
    assert plots._error_range([run(95, 95, 95, 95, 95)]) == 100


@pytest.mark.parametrize("panels", [1, 2])
def test_figure_titles_fit_the_figure(driver, panels):
    import matplotlib.pyplot as plt
    import plots

    fig, _ = plt.subplots(1, panels, figsize=(6 * panels, 4.5))  # error_curves' size: one panel for shortcuts
    plots._suptitle(fig, "Shortcut options A and B, and zero_init_last, on ResNet-32",
                    f"dashed: training error, solid: {' '.join(plots.DATA_NOTE_LINES)}")
    title = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    plt.close(fig)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width


def test_peer_control_trains_pytorchcv_resnet20_without_resnetkit(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import peer_control

    data = digits_jpeg_zip(tmp_path / "digits-jpeg.zip", per_class=6, size=32)
    out = tmp_path / "peer_control.json"
    with pytest.warns(UserWarning, match="skipped digits-jpeg.zip:train/3/broken.jpg"):
        peer_control.main(["--data", str(data), "--out", str(out), "--epochs", "2", "--val-size", "20",
                           "--batch-size", "16"])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["params"] == 272_474 and result["train_images"] == 40 and result["val_images"] == 20
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    assert result["val_top1_pct"] == result["history"][-1]["val_top1_pct"] and 0 <= result["val_top1_pct"] <= 100
    imports = [node for node in ast.walk(ast.parse(Path(peer_control.__file__).read_text()))
               if isinstance(node, (ast.Import, ast.ImportFrom))]  # fmt: skip
    modules = [getattr(node, "module", None) or alias.name for node in imports for alias in node.names]
    assert "pytorchcv.models.resnet_cifar" in modules and not any("resnetkit" in m for m in modules)  # none of ours
    assert "wrote" in capsys.readouterr().out and not out.with_suffix(".json.tmp").exists()
    with pytest.raises(SystemExit):
        peer_control.main(["--data", str(tmp_path / "missing.zip")])


def test_variants_then_tradeoff_plots_accuracy_against_latency(driver, tmp_path, capsys):
    out = tmp_path / "results"
    driver.main(["variants", "--only", "cifar_se_resnet56", "cifar_wrn16_4", "--seeds", "0", "1", "--out", str(out),
                 *TINY])  # fmt: skip
    records = json.loads((out / "variants.json").read_text())["records"]
    assert sorted((r["run"], r["seed"]) for r in records) == [("cifar_se_resnet56", 0), ("cifar_se_resnet56", 1),
                                                              ("cifar_wrn16_4", 0), ("cifar_wrn16_4", 1)]  # fmt: skip
    driver.main(["tradeoff", "--out", str(out), "--repeats", "5"])
    points = {p["run"]: p for p in json.loads((out / "tradeoff.json").read_text())["points"]}
    se, wide = points["cifar_se_resnet56"], points["cifar_wrn16_4"]
    assert se["seeds"] == [0, 1] and se["val_top1_std"] >= 0 and 0 < se["val_top1_mean"] <= 100
    errors = [r["val_error_pct"] for r in records if r["run"] == "cifar_se_resnet56"]
    assert se["val_top1_mean"] == pytest.approx(100 - sum(errors) / 2)
    assert wide["macs"] > se["macs"] > 0 and wide["params"] > se["params"]  # 3 units of 64..256 against 16..64
    assert se["latency_ms"] > 0 and se["train_images_per_s"] > 0 and not se["shipped"]  # cut down: not the weights
    assert (out / "tradeoff.png").stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
    rows = [line for line in (out / "tradeoff.md").read_text().splitlines() if line.startswith("| `cifar_se")]
    assert rows and f"{se['val_top1_mean']:.2f} ± {se['val_top1_std']:.2f}" in rows[0]  # the table is the points
