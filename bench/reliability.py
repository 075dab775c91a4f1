"""What resnetkit promises under bad input and faults, measured: crafted pickles through every load path, odd and
byte-mutated images, byte-mutated CIFAR batches, decompression bombs (peak memory), kills during checkpoint
writes, and resume against a run that never stopped.

Writes a JSON file (default ``bench/results/reliability.json``) that ``docs/reliability.md`` quotes.

    python bench/reliability.py --images 4000 --cifar 2000 --kills 20
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

import resnetkit
from resnetkit import runtime
from resnetkit.cli import main as cli
from resnetkit.data import ImageDecodeError, decode_image
from resnetkit.train import engine
from resnetkit.train.checkpoint import LAST, load_checkpoint
from resnetkit.train.config import load_config
from resnetkit.weights import convert, read_any, read_state_dict
from resnetkit.workflows import Predictor, evaluate_model

TINY = ["model.options={layers: [1, 1, 1]}", "data.input_size=16", "data.batch_size=64", "progress=false"]


class Exploit:
    """Unpickling this runs a shell command that creates ``marker``: what plain ``torch.load`` would execute."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# -- crafted pickles -----------------------------------------------------------------------------------------------


def pickles(folder: Path) -> dict[str, Any]:
    """Every way resnetkit reads a checkpoint, fed pickles that would run code; count the payloads that ran."""
    marker = folder / "pwned"
    payloads = {
        "bare.pth": {"fc.weight": Exploit(marker)},
        "wrapped.pt": {"state_dict": {"fc.weight": Exploit(marker)}},
        "training.bin": {"model": {"conv1.weight": torch.zeros(1)}, "optimizer": Exploit(marker)},
        "top.pth": Exploit(marker),
    }
    for name, obj in payloads.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    image = folder / "image.png"
    Image.new("L", (8, 8)).save(image)
    paths: dict[str, Callable[[Path], Any]] = {
        "resnetkit.load_model": resnetkit.load_model,
        "weights.read_any": read_any,
        "weights.read_state_dict": read_state_dict,
        "weights.convert": lambda p: convert(p, folder / "out.safetensors"),
        "create_model(pretrained=FILE)": lambda p: resnetkit.create_model("resnet18", pretrained=str(p)),
        "workflows.Predictor.load": Predictor.load,
        "workflows.evaluate_model": lambda p: evaluate_model(str(p), dataset=str(folder)),
        "train init_from": lambda p: engine.build_trainer(load_config("digits", [*TINY, f"init_from={p}"])),
        "train distill.teacher": lambda p: engine.build_trainer(load_config("digits", [*TINY, f"distill.teacher={p}"])),
        "cli predict": lambda p: cli(["predict", str(p), str(image)]),
        "cli eval": lambda p: cli(["eval", str(p)]),
        "cli export": lambda p: cli(["export", str(p), "--out", str(folder / "x.onnx")]),
        "cli convert": lambda p: cli(["convert", str(p), str(folder / "c.safetensors")]),
        "cli bench": lambda p: cli(["bench", str(p), "--routes", "eager", "--repeats", "1", "--warmup", "0"]),
        "cli compress": lambda p: cli(["compress", str(p), "--out", str(folder / "c"), "--prune", "0.5"]),
    }
    tried, refused = 0, 0
    for payload in payloads:
        for load in paths.values():
            tried += 1
            try:
                refused += load(folder / payload) == 2  # the CLI: a one-line error and exit status 2
            except Exception:  # noqa: BLE001 (any refusal counts; only the marker decides)
                refused += 1
    return {"payloads": len(payloads), "load_paths": len(paths), "tried": tried, "refused": refused,
            "executed": int(marker.exists()), "paths": sorted(paths)}  # fmt: skip


# -- odd and mutated images ------------------------------------------------------------------------------------------


def odd_images() -> dict[str, bytes]:
    """Images people have: every Pillow mode, format and degenerate size, plus broken files."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    files = {}
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "LA", "I;16", "I", "F", "YCbCr"):
        for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
            try:
                data = io.BytesIO()
                base.convert(mode).save(data, fmt)
                files[f"{mode}.{fmt.lower()}"] = data.getvalue()
            except (OSError, ValueError, KeyError):
                pass  # Pillow cannot write this pair
    for w, h in ((1, 1), (1, 3000), (3000, 1)):
        data = io.BytesIO()
        Image.new("RGB", (w, h)).save(data, "PNG")
        files[f"{w}x{h}.png"] = data.getvalue()
    png = files["RGB.png"]
    files |= {"empty": b"", "text": b"hello, not an image", "truncated.png": png[: len(png) // 2],
              "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
              "eps-as.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"}  # fmt: skip
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A copy with 1-8 random bytes changed, a truncation or an insertion."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if kind < 0.7 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind < 0.85:
            del data[rng.randrange(len(data) + 1):]
        else:
            data[rng.randrange(len(data) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(data)


def images(count: int) -> dict[str, Any]:
    """Decode every odd image and ``count`` mutated ones: each must decode or be refused with ImageDecodeError."""
    files = odd_images()
    rng = random.Random(0)
    sources = [files["RGB.jpeg"], files["RGB.png"], files["P.gif"], files["RGB.webp"], files["RGB.tiff"]]
    cases = list(files.values()) + [mutate(rng.choice(sources), rng) for _ in range(count)]
    decoded = refused = 0
    crashes: list[str] = []
    for data in cases:
        try:
            decode_image(data)
            decoded += 1
        except ImageDecodeError:
            refused += 1
        except Exception as err:  # noqa: BLE001 (what the promise is about)
            crashes.append(f"{type(err).__name__}: {err}"[:200])
    return {"odd": len(files), "mutated": count, "decoded": decoded, "refused_one_line": refused,
            "crashes": len(crashes), "crash_examples": crashes[:5]}  # fmt: skip


# -- byte-mutated CIFAR batches ----------------------------------------------------------------------------------------


def cifar(count: int, folder: Path) -> dict[str, Any]:
    """A CIFAR-10 python folder as the official archive lays it out (two images per batch), its first batch
    replaced ``count`` times by a byte-mutated copy holding a pickled ``os.system`` call next to the data: each load
    must succeed or fail with a one-line CifarFormatError, and nothing may run."""
    from resnetkit.data.cifar import CIFAR_FILES, Cifar, CifarFormatError, load_cifar

    spec, rng, marker = CIFAR_FILES[Cifar.CIFAR10], random.Random(0), folder / "pwned"
    root = folder / "root"
    batches = root / spec.folder
    batches.mkdir(parents=True)
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 7]}
    for name in spec.train + spec.test:
        (batches / name).write_bytes(pickle.dumps(good, protocol=2))
    (batches / spec.meta).write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, 2))
    evil = pickle.dumps({**good, b"extra": Exploit(marker)}, protocol=2)
    loaded = refused = 0
    crashes: list[str] = []
    for _ in range(count):
        (batches / spec.train[0]).write_bytes(mutate(rng.choice([evil, pickle.dumps(good, protocol=2)]), rng))
        try:
            load_cifar(root, download=False)
            loaded += 1
        except CifarFormatError as err:
            refused += "\n" not in str(err)
        except Exception as err:  # noqa: BLE001 (what the promise is about)
            crashes.append(f"{type(err).__name__}: {err}"[:200])
    return {"mutated_batches": count, "loaded": loaded, "refused_one_line": refused, "crashes": len(crashes),
            "crash_examples": crashes[:5], "executed": int(marker.exists())}  # fmt: skip


# -- decompression bombs: peak memory ------------------------------------------------------------------------------

BOMB = """
import resource, sys
from resnetkit.data import ImageDecodeError, decode_image, load_image_folder
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(open(sys.argv[2], "rb").read()) if sys.argv[1] == "image" else load_image_folder(sys.argv[2])
    outcome = "read"
except (ImageDecodeError, ValueError) as err:
    outcome = "refused: " + str(err)[:160]
print(outcome)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def bombs(folder: Path) -> dict[str, Any]:
    """A 100-megapixel PNG of a few KB and a 1 MB zip holding a 1 GiB member, each read in a fresh process:
    the peak resident memory it adds (MiB)."""
    import zipfile

    image = folder / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(image)  # compresses to a few KB
    archive = folder / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/cat/ok.png", _tiny_png())
        z.writestr("train/dog/ok.png", _tiny_png())
        with z.open("train/cat/huge.png", "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(bytes(1 << 20))
    results = {}
    for kind, path in (("image", image), ("zip", archive)):
        run = subprocess.run([sys.executable, "-c", BOMB, kind, str(path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        outcome, added = run.stdout.strip().splitlines()[-2:]
        results[kind] = {"file_bytes": path.stat().st_size, "outcome": outcome, "peak_rss_added_mib": int(added)}
    return results


def _tiny_png() -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (4, 4)).save(data, "PNG")
    return data.getvalue()


# -- kills during checkpoint writes ----------------------------------------------------------------------------------

WRITER = """
import sys, torch, resnetkit
from resnetkit.weights import save_weights
model = resnetkit.create_model("cifar_resnet56")
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model(torch.randn(2, 3, 32, 32)).sum().backward(); optimizer.step()
record = resnetkit.ModelRecord("cifar_resnet56", model.config)
print("ready", flush=True)
while True:
    save_weights(sys.argv[1], model, record, {"optimizer": optimizer.state_dict(), "step": 1})
"""


def kills(count: int, folder: Path) -> dict[str, Any]:
    """Kill (SIGKILL) a process that writes a training checkpoint in a loop at a random moment, ``count`` times;
    after each kill the checkpoint must read back whole, weights and training state."""
    path, rng = folder / LAST, random.Random(0)
    intact = 0
    for _ in range(count):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        writer.stdout.readline()  # "ready": the model is built, the writes begin
        time.sleep(0.05 + rng.random() * 0.5)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if path.is_file():
            checkpoint = load_checkpoint(path)
            intact += checkpoint.train_state is not None and checkpoint.train_state["step"] == 1
    leftovers = len(list(folder.glob(".*.tmp")))
    removed = len(engine.remove_stale_temporaries(folder))
    return {"kills": count, "checkpoint_intact": intact, "temporaries_left": leftovers,
            "temporaries_removed_at_next_start": removed}  # fmt: skip


# -- resume ----------------------------------------------------------------------------------------------------------


def resume(folder: Path) -> dict[str, Any]:
    """A tiny digits run interrupted after epoch 2 of 3 and resumed, against the same run straight through."""
    options = [*TINY, "epochs=3", "deterministic=true", "ema_decay=0.9"]
    engine.fit(load_config("digits", [*options, f"out={folder / 'straight'}"]))
    save_epoch = engine._end_of_epoch

    def interrupt_after_epoch_2(t, record, log):
        save_epoch(t, record, log)
        if t.epoch == 2:
            raise KeyboardInterrupt

    engine._end_of_epoch = interrupt_after_epoch_2
    try:
        engine.fit(load_config("digits", [*options, f"out={folder / 'resumed'}"]))
    except KeyboardInterrupt:
        pass
    finally:
        engine._end_of_epoch = save_epoch
    engine.fit(load_config("digits", [*options, f"out={folder / 'resumed'}"]), resume=True)
    a, b = (load_checkpoint(folder / run / LAST) for run in ("straight", "resumed"))
    diff = max((a.weights[k].float() - b.weights[k].float()).abs().max().item() for k in a.weights)
    raw = max((a.train_state["model"][k].float() - b.train_state["model"][k].float()).abs().max().item()
              for k in a.train_state["model"])  # fmt: skip
    return {"epochs": 3, "interrupted_after": 2, "max_abs_diff_ema": diff, "max_abs_diff_raw": raw,
            "bit_identical": diff == 0.0 and raw == 0.0}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000, help="byte-mutated images to decode")
    parser.add_argument("--cifar", type=int, default=2000, help="byte-mutated CIFAR batches to load")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs during checkpoint writes")
    parser.add_argument("--json", default="bench/results/reliability.json")
    args = parser.parse_args()
    results: dict[str, Any] = {"hardware": runtime.hardware_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, measure in (("pickles", lambda: pickles(_mkdir(tmp / "pickles"))),
                              ("images", lambda: images(args.images)),
                              ("cifar", lambda: cifar(args.cifar, _mkdir(tmp / "cifar"))),
                              ("bombs", lambda: bombs(_mkdir(tmp / "bombs"))),
                              ("kills", lambda: kills(args.kills, _mkdir(tmp / "kills"))),
                              ("resume", lambda: resume(_mkdir(tmp / "resume")))):  # fmt: skip
            started = time.perf_counter()
            results[name] = measure()
            results[name]["seconds"] = round(time.perf_counter() - started, 1)
            print(name, json.dumps(results[name]), flush=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
