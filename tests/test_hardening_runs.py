"""Runs, files and downloads under faults (issue 22, items 3, 5 and 8): each test makes the broken input itself."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import torchvision

import resnetkit
from resnetkit.cli import main
from resnetkit.io import DatasetNotFoundError, atomic_write, download_url
from resnetkit.train import engine
from resnetkit.train.checkpoint import LAST, load_checkpoint
from resnetkit.train.config import load_config, recipe_path
from resnetkit.train.engine import fit
from resnetkit.train.report import read_log
from resnetkit.weights import WeightsError, registry, save_weights
from resnetkit.weights.registry import SourceFormat, WeightsEntry

from .conftest import randomize_norms

TINY = ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "data.batch_size=64", "progress=false",
        "optim.schedule=cosine", "optim.lr=0.05"]  # fmt: skip


def tiny(out, *overrides):
    return load_config(recipe_path("digits"), [*TINY, f"out={out}", *overrides])


@pytest.fixture
def run(tmp_path):
    """A 2-epoch run to resume (to 3 epochs) after damaging what a kill would damage."""
    fit(tiny(tmp_path / "run", "epochs=2"))
    return tmp_path / "run"


def epochs(run) -> list[int]:
    return [r["epoch"] for r in read_log(run / "log.jsonl")]


# -- item 5: resume hygiene ----------------------------------------------------------------------------------------


def test_stale_temporaries_of_killed_writes_are_removed(run):
    stale = [run / f".last.safetensors.{i}.tmp" for i in range(3)]
    for path in stale:
        path.write_bytes(b"\0" * 1000)  # what a kill during a checkpoint write leaves
    fit(tiny(run, "epochs=3"), resume=True)
    assert not any(path.exists() for path in stale) and epochs(run) == [1, 2, 3]


def test_a_log_line_past_the_checkpoint_is_not_repeated(run):
    with (run / "log.jsonl").open("a") as f:  # killed after the log line of epoch 3, before its checkpoint
        f.write(json.dumps({"epoch": 3, "train_loss": 9.0, "step": 0}) + "\n")
    fit(tiny(run, "epochs=3"), resume=True)
    assert epochs(run) == [1, 2, 3] and read_log(run / "log.jsonl")[-1]["train_loss"] != 9.0


def test_a_log_line_missing_before_the_checkpoint_is_restored(run):
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[0] + "\n")  # killed after the checkpoint of epoch 2, before its log line
    fit(tiny(run, "epochs=3"), resume=True)
    assert epochs(run) == [1, 2, 3]


def test_a_torn_last_log_line_is_dropped_and_a_damaged_one_named(run):
    with (run / "log.jsonl").open("a") as f:
        f.write('{"epoch": 3, "train_lo')  # a write cut off by a kill
    with pytest.warns(UserWarning, match="torn last line"):
        fit(tiny(run, "epochs=3"), resume=True)
    assert epochs(run) == [1, 2, 3]
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl line 2 is not JSON"):
        read_log(run / "log.jsonl")


# -- item 3: integrity -----------------------------------------------------------------------------------------------


def test_a_flipped_bit_in_a_training_checkpoint_is_refused(run, capsys):
    """In the weights (every file) or in the training state (last.safetensors): each part has its digest."""
    data = bytearray((run / "best.safetensors").read_bytes())
    data[-200] ^= 0x10  # in the last tensor of the weights
    (run / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged"):
        resnetkit.load_model(run / "flipped.safetensors")
    assert main(["eval", str(run / "flipped.safetensors")]) == 2
    assert "damaged" in capsys.readouterr().err
    data = bytearray((run / LAST).read_bytes())
    data[-4] ^= 0x10  # safetensors stores byte tensors last: the RNG state, part of the training state
    (run / LAST).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="damaged: its training state"):
        fit(tiny(run, "epochs=3"), resume=True)


def test_non_finite_outputs_are_an_error_not_a_prediction(run, tmp_path, capsys):
    model = resnetkit.load_model(run / LAST)
    with torch.no_grad():
        model.fc.bias.fill_(float("nan"))  # weights that are broken yet carry a valid digest
    save_weights(tmp_path / "nan.safetensors", model, model.record)
    digit = tmp_path / "digit.png"
    torchvision.io.write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(digit))
    assert main(["predict", str(tmp_path / "nan.safetensors"), str(digit)]) == 2
    assert main(["eval", str(tmp_path / "nan.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("not finite" in line for line in err)


@pytest.fixture
def served_resnet18(server, tmp_path, monkeypatch):
    url, www, _ = server
    weights = randomize_norms(torchvision.models.resnet18()).state_dict()
    torch.save(weights, www / "resnet18-test.pth")
    digest = __import__("hashlib").sha256((www / "resnet18-test.pth").read_bytes()).hexdigest()
    entry = WeightsEntry("resnet18", "test_in1k", url + "resnet18-test.pth", "resnet18-test.pth", digest[:8],
                         resnetkit.Preprocess(), (), 11_689_512, 44.7, "a test", SourceFormat.TORCHVISION)  # fmt: skip
    monkeypatch.setitem(registry.PRETRAINED, entry.name, entry)
    monkeypatch.setenv("RESNETKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return entry, weights, digest


def test_a_torchvision_cache_file_with_other_weights_is_not_trusted(served_resnet18, tmp_path):
    entry, weights, digest = served_resnet18
    planted = tmp_path / "torch_home" / "hub" / "checkpoints" / entry.filename
    planted.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), planted)  # other weights under the promised name
    model = resnetkit.load_model(entry.name, progress=False)
    assert torch.equal(model.fc.weight, weights["fc.weight"])  # downloaded and verified, not the planted file
    assert model.record.source_sha256 == digest  # the real, full hash


def test_a_damaged_converted_cache_is_rebuilt(served_resnet18, tmp_path):
    entry, weights, _ = served_resnet18
    resnetkit.load_model(entry.name, progress=False)
    converted = tmp_path / "cache" / f"{entry.name}.safetensors"
    data = bytearray(converted.read_bytes())
    data[-100] ^= 0xFF
    converted.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="converting it again"):
        model = resnetkit.load_model(entry.name, progress=False)
    assert torch.equal(model.fc.weight, weights["fc.weight"])


# -- item 8: files and downloads -----------------------------------------------------------------------------------


def test_a_link_planted_at_the_plot_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / "curves.png").symlink_to(target)
    fit(tiny(out, "epochs=1"))
    assert target.read_text() == "keep me" and not (out / "curves.png").is_symlink()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_atomic_write_leaves_the_process_umask_alone(tmp_path, monkeypatch):
    def no_umask(mask):
        raise AssertionError("os.umask changes the whole process's umask, racing other threads")

    umask = os.umask(0o022)
    os.umask(umask)
    monkeypatch.setattr(os, "umask", no_umask)
    path = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask and path.read_bytes() == b"x"


def test_a_dropped_connection_keeps_the_partial_file_to_resume(server, tmp_path, monkeypatch):
    url, www, log = server
    (www / "big.bin").write_bytes(os.urandom(100_000))
    sha256 = __import__("hashlib").sha256((www / "big.bin").read_bytes()).hexdigest()
    real_read = __import__("http.client").client.HTTPResponse.read

    def drop_after_half(self, amt=None):  # the server closes the connection half way through
        data = real_read(self, 50_000 if amt is None or amt > 50_000 else amt)
        self.fp = None
        return data

    monkeypatch.setattr("http.client.HTTPResponse.read", drop_after_half)
    with pytest.raises(DatasetNotFoundError, match="connection dropped after 50,000 of 100,000 bytes"):
        download_url(url + "big.bin", tmp_path / "big.bin", sha256=sha256, progress=False)
    assert (tmp_path / "big.bin.part").stat().st_size == 50_000
    monkeypatch.setattr("http.client.HTTPResponse.read", real_read)
    download_url(url + "big.bin", tmp_path / "big.bin", sha256=sha256, progress=False)
    assert log[-1]["Range"] == "bytes=50000-" and (tmp_path / "big.bin").read_bytes() == (www / "big.bin").read_bytes()


def test_the_checkpoint_of_a_run_still_resumes_after_all_this(run):
    assert load_checkpoint(run / LAST).train_state["epoch"] == 2
    assert engine.remove_stale_temporaries(run) == []


@pytest.mark.parametrize("url, checksum, words", [
    ("http://example.invalid/w.pth", "ab" * 32, "only https://"),
    ("file:///etc/passwd", "ab" * 32, "only https://"),
    ("https://example.invalid/w.pth", None, "without a checksum"),
])  # fmt: skip
def test_downloads_need_https_and_a_checksum_unless_opted_in(tmp_path, monkeypatch, url, checksum, words):
    monkeypatch.delenv("RESNETKIT_ALLOW_INSECURE_DOWNLOADS", raising=False)
    with pytest.raises(ValueError, match=words):
        download_url(url, tmp_path / "w.pth", sha256=checksum, progress=False)
    assert not (tmp_path / "w.pth.part").exists()  # refused before any connection
