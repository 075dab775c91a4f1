"""A control for the CIFAR-10 gap to the paper: the short recipe again, with none of resnetkit's code.

Every resnetkit run on the shared JPEG copy of CIFAR-10 scores 3-4.5 points under the paper. If the cause were in
our model, data pipeline or training loop, a run that shares none of them would not show the gap. This script
trains pytorchcv's ``resnet20_cifar10`` (an independent implementation of the paper's CIFAR ResNet-20; its
shortcuts are 1x1 projections where the shape changes, option B) with a plain PyTorch loop: its own decoding and
45k/5k split (``torch.randperm`` with a fixed seed, not resnetkit's split), torchvision's augmentation and
torch's ``OneCycleLR``, on the hyper-parameters of ``cifar10_cpu``: SGD with Nesterov momentum 0.9, lr linearly up
to 0.2 over the first 15% of steps and linearly down after, weight decay 5e-4 on every parameter, batch 128, 30
epochs (``cifar10_cpu`` starts and ends the cycle at 0, ``OneCycleLR`` at 0.008 and 8e-7)::

    python experiments/peer_control.py --data ../shared/data/cifar10-jpeg-train.zip --precision bf16

writes ``experiments/results/cifar10_cpu/peer_control-seed0.json`` (atomically) with the per-epoch curves.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from pytorchcv.models.resnet_cifar import resnet20_cifar10
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

RESULTS = Path(__file__).resolve().parent / "results" / "cifar10_cpu"
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the usual CIFAR-10 statistics


def read_zip(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of an ImageFolder-layout zip (``*/<class>/<file>``) as uint8 NCHW, their labels, the classes."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
        classes = sorted({n.split("/")[-2] for n in names})
        images, labels = [], []
        for name in names:
            try:
                image = Image.open(io.BytesIO(archive.read(name))).convert("RGB")
            except OSError as error:
                warnings.warn(f"skipped {path.name}:{name}: {error}", stacklevel=2)
                continue
            images.append(pil_to_tensor(image))
            labels.append(classes.index(name.split("/")[-2]))
    return torch.stack(images), torch.tensor(labels), classes


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []  # fmt: skip
    return models[0] if models else platform.processor() or platform.machine()


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((images.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)


def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, autocast) -> float:
    model.eval()
    correct = 0
    with torch.no_grad(), autocast():
        for start in range(0, len(images), 500):
            logits = model(normalise(images[start : start + 500]))
            correct += (logits.argmax(1) == labels[start : start + 500]).sum().item()
    return correct / len(images)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    images, labels, classes = read_zip(args.data)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.split_seed))
    val, train_ = order[: args.val_size], order[args.val_size :]
    augment = v2.Compose([v2.RandomCrop(images.shape[-1], padding=4), v2.RandomHorizontalFlip()])
    model = resnet20_cifar10().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(train_) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15,
        anneal_strategy="linear", cycle_momentum=False)  # as cifar10_cpu: linear up, linear down, momentum fixed
    dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
    autocast = lambda: torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)  # noqa: E731
    history, started = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        seen = wrong = loss_sum = 0
        for batch in train_[torch.randperm(len(train_))].split(args.batch_size):
            x = normalise(torch.stack([augment(image) for image in images[batch]]))
            y = labels[batch]
            with autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(y)
            wrong += (logits.argmax(1) != y).sum().item()
            loss_sum += loss.item() * len(y)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_error_pct": 100 * wrong / seen,
                  "val_top1_pct": 100 * evaluate(model, images[val], labels[val], autocast)}  # fmt: skip
        history.append(record)
        print(f"epoch {epoch}/{args.epochs}  train error {record['train_error_pct']:.2f}%  "
              f"val top-1 {record['val_top1_pct']:.2f}%", flush=True)  # fmt: skip
    return {
        "model": "pytorchcv resnet20_cifar10", "params": sum(p.numel() for p in model.parameters()),
        "data": str(args.data), "classes": classes, "train_images": len(train_), "val_images": len(val),
        "epochs": args.epochs, "precision": args.precision, "seed": args.seed, "split_seed": args.split_seed,
        "val_top1_pct": history[-1]["val_top1_pct"], "train_error_pct": history[-1]["train_error_pct"],
        "wall_time_s": round(time.perf_counter() - started, 1),
        "hardware": f"{cpu_name()} ({os.cpu_count()} logical CPUs), {torch.get_num_threads()} threads",
        "command": "python experiments/peer_control.py " + " ".join(sys.argv[1:]), "history": history,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cifar10-jpeg-train.zip"))
    parser.add_argument("--out", type=Path, help="the JSON to write (default: RESULTS/peer_control-seedN.json)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args(argv)
    if not args.data.is_file() or not zipfile.is_zipfile(args.data):
        parser.error(f"no zip of images at {args.data}; pass its path with --data")
    args.out = args.out or RESULTS / f"peer_control-seed{args.seed}.json"
    result = train(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".json.tmp")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(partial, args.out)
    print(f"val top-1 {result['val_top1_pct']:.2f}% after {args.epochs} epochs; wrote {args.out}")


if __name__ == "__main__":
    main()
