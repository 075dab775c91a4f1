"""Known pretrained weights, keyed ``name.tag`` as in timm (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``).

torchvision's entries are read from torchvision's own weight enums (address, published accuracy, preprocessing,
recipe), so they cannot drift from what torchvision serves. torchvision publishes the first 8 hex digits of each
file's SHA-256 in its name, and verifies only those (``torch.hub.load_state_dict_from_url(check_hash=True)``); we
verify the same prefix. Weights trained by resnetkit ship inside the package and carry their full SHA-256.
"""

from __future__ import annotations

import enum
import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

from torchvision.models import get_model_weights

from ..errors import UnknownNameError
from ..io import natural_key
from ..models import Metric, Preprocess

SHIPPED = Path(__file__).parent / "files"  # weights trained by resnetkit, inside the package
MANIFEST = SHIPPED / "manifest.json"
TASK_MANIFEST = SHIPPED / "task_manifest.json"  # detectors and segmenters trained by resnetkit (see resnetkit.tasks)


class SourceFormat(enum.Enum):
    TORCHVISION = "torchvision"  # a plain pickled state dict, loaded with weights_only=True and converted once
    RESNETKIT = "resnetkit"  # a resnetkit .safetensors file


@dataclass(frozen=True)
class WeightsEntry:
    """One set of known weights.

    Args:
        arch: variant name.
        tag: what distinguishes these weights (``tv_in1k`` = torchvision's IMAGENET1K_V1).
        url: download address; ``None`` for weights shipped inside the package.
        filename: file name in the cache (or in the package's ``weights/files``).
        sha256: the file's SHA-256, or the published prefix of it.
        preprocess: what the weights expect.
        metrics: published accuracies.
        num_params: parameter count.
        file_mb: file size in MB.
        recipe: how they were trained.
        source_format: how the downloaded file is read.
    """

    arch: str
    tag: str
    url: str | None
    filename: str
    sha256: str
    preprocess: Preprocess
    metrics: tuple[Metric, ...]
    num_params: int
    file_mb: float
    recipe: str
    source_format: SourceFormat

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def source(self) -> str:
        return self.url or f"resnetkit (shipped: weights/files/{self.filename})"


TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")  # fmt: skip
TORCHVISION_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}


def _torchvision_entries() -> list[WeightsEntry]:
    entries = []
    for arch in TORCHVISION_ARCHS:
        for weights in get_model_weights(arch):
            filename = weights.url.rsplit("/", 1)[-1]
            sizes = weights.transforms.keywords  # functools.partial(ImageClassification, crop_size=..., ...)
            preprocess = Preprocess(crop_size=sizes["crop_size"], resize_size=sizes.get("resize_size", 256))
            metrics = tuple(Metric(dataset, "val", m["acc@1"], m["acc@5"]) for dataset, m in weights.meta["_metrics"].items())
            entries.append(WeightsEntry(
                arch, TORCHVISION_TAGS[weights.name], weights.url, filename, hash_prefix(filename), preprocess,
                metrics, weights.meta["num_params"], weights.meta["_file_size"], weights.meta["recipe"],
                SourceFormat.TORCHVISION,
            ))  # fmt: skip
    return entries


def hash_prefix(filename: str) -> str:
    """The SHA-256 prefix torchvision publishes in a file's name (``resnet50-0676ba61.pth`` -> ``0676ba61``)."""
    match = re.search(r"-([a-f0-9]{8,})\.", filename)
    if match is None:
        raise ValueError(f"torchvision file name {filename!r} carries no hash prefix")
    return match.group(1)


def entry_from_dict(data: dict) -> WeightsEntry:
    """A shipped entry from its manifest record (see :mod:`resnetkit.weights.publish`)."""
    return WeightsEntry(
        data["arch"], data["tag"], None, data["filename"], data["sha256"], Preprocess(**data["preprocess"]),
        tuple(Metric(**m) for m in data["metrics"]), data["num_params"], data["file_mb"], data["recipe"],
        SourceFormat.RESNETKIT,
    )  # fmt: skip


def _shipped_entries() -> list[WeightsEntry]:
    if not MANIFEST.is_file():
        return []
    return [entry_from_dict(record) for record in json.loads(MANIFEST.read_text())]


# Weights trained by resnetkit (the CIFAR-10 reproduction), listed in the manifest that `publish_run` writes.
SHIPPED_ENTRIES: list[WeightsEntry] = _shipped_entries()

PRETRAINED: dict[str, WeightsEntry] = {e.name: e for e in [*SHIPPED_ENTRIES, *_torchvision_entries()]}


def default_tag(arch: str) -> str:
    """The default weights of an arch: the most accurate of its weights, as torchvision's ``DEFAULT`` (for its
    ImageNet ResNets the newer ``tv2_in1k``) and timm's first tag are."""
    entries = [e for e in PRETRAINED.values() if e.arch == arch]
    if not entries:
        raise UnknownNameError(f"no pretrained weights are known for {arch!r}; see `resnetkit weights`")
    return max(entries, key=lambda e: e.metrics[0].top1 if e.metrics else float("-inf")).tag


def get_weights(name: str) -> WeightsEntry:
    """The entry for ``arch.tag``, or the default tag of a bare ``arch``; unknown names list what exists."""
    if "." not in name:
        name = f"{name}.{default_tag(name)}"
    try:
        return PRETRAINED[name]
    except KeyError:
        arch = name.split(".")[0]
        known = [n for n in PRETRAINED if n.startswith(arch + ".")] or list_weights()[:6]
        raise UnknownNameError(f"unknown weights {name!r}; known: {', '.join(known)}") from None


def list_weights(pattern: str = "*") -> list[str]:
    """``arch.tag`` names matching a shell-style pattern, e.g. ``"resnet50.*"``."""
    return sorted((n for n in PRETRAINED if fnmatch.fnmatchcase(n, pattern)), key=natural_key)


def weights_table(pattern: str = "*", markdown: bool = False) -> str:
    """The registry as a table (name.tag, accuracy and where measured, size, preprocessing, source)."""
    header = ["weights", "top-1", "top-5", "measured on", "params", "size", "resize/crop", "source"]
    rows = []
    for name in list_weights(pattern):
        e = PRETRAINED[name]
        m = e.metrics[0] if e.metrics else None
        rows.append([name, f"{m.top1:.2f}" if m else "", f"{m.top5:.2f}" if m and m.top5 is not None else "",
                     f"{m.dataset} {m.split}" if m else "", f"{e.num_params / 1e6:.2f}M", f"{e.file_mb:.1f} MB",
                     f"{e.preprocess.resize_size}/{e.preprocess.crop_size}", e.source])  # fmt: skip
    return render_table(header, rows, markdown)


def render_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Rows under a header as aligned text columns or a Markdown table; empty when there are no rows."""
    if not rows:
        return ""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])
