"""``resnetkit analyze``: the analyses of :mod:`resnetkit.analysis` run on model files or registry names, with
images from the model's own data (its run's split, rebuilt from the file) or a folder; one JSON of numbers and
one PNG figure per analysis, several models (a ResNet and its plain twin) in the same figure.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import analysis, runtime
from ..data import DeviceLoader, ImageFolderDataset
from ..errors import UnknownNameError, UnknownOptionError
from ..io import atomic_write
from ..models import ModelRecord, ResNet
from ..train.config import TrainConfig
from ..train.data import RunData, build_data
from ..train.distributed import World
from ..weights import load_model


@dataclass(frozen=True)
class Kind:
    """One analysis as the workflow runs it.

    Attributes:
        run: ``(model, images, labels, **options) -> result``, or ``(models, data, options, seed) -> results`` when
            ``custom`` (analyses that need more than one model state, or the images as pixels).
        plot: ``(results, path, data) -> None``.
        split: the split whose images it reads by default (the loss landscape and gradients: training images).
        images: how many images by default.
        options: the option names it accepts, with their defaults (forwarded from the CLI).
        custom: ``run`` receives the loaded models and data itself.
        seeded: ``run`` draws random numbers and takes a ``seed``.
    """

    run: Callable[..., Any]
    plot: Callable[..., None]
    split: str
    images: int
    options: dict[str, Any] = field(default_factory=dict)
    custom: bool = False
    seeded: bool = False


@dataclass
class AnalysisData:
    """Normalised images and their labels, on the device, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    dataset: str
    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class Loaded:
    """A model to analyse: the network (eval mode, on the device), its record and its label in the figures."""

    source: str
    model: nn.Module
    record: ModelRecord
    label: str


def _gradients(models: list[Loaded], data: AnalysisData, options: dict[str, Any], seed: int) -> list[Any]:
    """Per-layer gradient norms of each model at initialisation (a fresh network of its config, seeded) and now."""
    results = []
    for m in models:
        fresh = _initialised(m.model, seed)
        for when, net in (("init", fresh), ("trained", m.model)):
            results.append(analysis.gradient_norms(net, data.images, data.labels, batch_size=options["batch_size"],
                                                   when=when, label=m.label))  # fmt: skip
    return results


def _landscape(models: list[Loaded], data: AnalysisData, options: dict[str, Any], seed: int) -> list[Any]:
    """The loss surface of each model, with the straight path from a fresh initialisation to it."""
    return [analysis.landscape(m.model, data.images, data.labels, init_state=_initialised(m.model, seed).state_dict(),
                               seed=seed, label=m.label, **options)
            for m in models]  # fmt: skip


def _cam(models: list[Loaded], data: AnalysisData, options: dict[str, Any], seed: int) -> list[Any]:
    """Each model's maps for each method, of the class it predicts, on the same images."""
    methods = options["methods"].split(",") if isinstance(options["methods"], str) else list(options["methods"])
    return [analysis.class_activation_maps(m.model, data.images, method=method.strip(), label=m.label)
            for m in models for method in methods]  # fmt: skip


def _plot_cam(results: list[Any], path: Path, data: AnalysisData) -> None:
    images = analysis.to_uint8_images(data.images.cpu(), data.mean, data.std)
    analysis.plot_cam(images, results, path, class_names=data.classes)


def _reuse(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **options: Any) -> Any:
    return analysis.reuse(model, images, **options)  # the labels play no part


def _figure(plot: Callable[..., None]) -> Callable[..., None]:
    """A ``plot_*`` of :mod:`resnetkit.analysis`, which draws from the results alone."""
    return lambda results, path, data: plot(results, path)


def _initialised(model: nn.Module, seed: int) -> nn.Module:
    """A new network of ``model``'s config, initialised as training starts (the seed fixes it): the trained
    weights' own initialisation is not stored in any file."""
    if not isinstance(model, ResNet):
        raise TypeError(f"{type(model).__name__} is not a resnetkit ResNet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = ResNet.from_config(model.config)
    return fresh.to(next(model.parameters()).device).eval()


KINDS: dict[str, Kind] = {
    "lesion": Kind(analysis.lesion, _figure(analysis.plot_lesion), "val", 500, {"draws": 3}, seeded=True),
    "paths": Kind(analysis.paths, _figure(analysis.plot_paths), "val", 500, {"samples": 16}, seeded=True),
    "landscape": Kind(_landscape, _figure(analysis.plot_landscape), "train", 256, {"steps": 11, "span": 1.0},
                      custom=True),
    "reuse": Kind(_reuse, _figure(analysis.plot_reuse), "val", 500),
    "gradients": Kind(_gradients, _figure(analysis.plot_gradients), "train", 128, {"batch_size": 128}, custom=True),
    "cam": Kind(_cam, _plot_cam, "val", 8, {"methods": "gradcam,scorecam"}, custom=True),
}  # fmt: skip


def headline(kind: str, result: dict[str, Any]) -> str:
    """One line of a result's main numbers (``result`` as in the JSON)."""
    r = result
    if kind == "lesion":
        return (
            f"{r['label']}: error {r['baseline_error']:.2f}%, deleting one unit costs {r['mean_single_cost']:.2f} "
            f"points on average (max {r['max_single_cost']:.2f}) over units that keep their shape"
        )
    if kind == "paths":
        return (
            f"{r['label']}: {r['n']} units, effective paths {r['effective_lo']}-{r['effective_hi']} units long "
            f"({100 * r['effective_share']:.0f}% of the gradient), most at {r['mode']}"
        )
    if kind == "landscape":
        s = r["smoothness"]
        return (
            f"{r['label']}: loss {r['center_loss']:.3f}, locally convex on {100 * s['convex_fraction']:.0f}% of "
            f"the grid, mean |lmin/lmax| {s['mean_eig_ratio']:.2f}, {s['local_minima']} local minima"
        )
    if kind == "reuse":
        return (
            f"{r['label']}: mean |F(x)|/|x| {r['mean_ratio']:.3f}, mean CKA of adjacent units {r['adjacent_cka']:.3f}"
        )
    if kind == "gradients":
        return f"{r['label']} ({r['when']}): |grad| first/last layer {r['first_last_ratio']:.3g}"
    return f"{r['label']} {r['method']}: maps of {len(r['classes'])} images on {r['layer']}"


def analyze(
    kind: str,
    sources: Sequence[str],
    out: str | Path,
    *,
    dataset: str | None = None,
    split: str | None = None,
    images: int | None = None,
    seed: int = 0,
    device: str = "auto",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one analysis on each model of ``sources`` and write ``out/KIND.json`` and ``out/KIND.png``.

    Args:
        kind: a key of :data:`KINDS`.
        sources: model files or registry names; the first one's data is used for all.
        out: the folder to write to.
        dataset: another dataset for a run's model, or the image folder or zip for other weights.
        split: ``train``, ``val`` or ``test`` of a run's data (default: the analysis's own).
        images: how many images (drawn at random; default: the analysis's own).
        seed: fixes every random draw: the images, the analysis's own draws, the initialisations it compares to.
        device: ``auto``, ``cpu``, ``cuda``, ...
        options: the analysis's options (see ``KINDS[kind].options``).

    Returns:
        What the JSON holds: the command's settings, the seconds each model took and each result's numbers.
    """
    spec = _kind(kind)
    settings = {**spec.options, **(options or {})}
    if unknown := sorted(set(settings) - set(spec.options)):
        raise UnknownOptionError(
            f"{kind} has no option {unknown[0]!r}; it takes {', '.join(sorted(spec.options)) or 'none'}"
        )
    if images is not None and images < 1:
        raise ValueError(f"--images must be at least 1, got {images}")
    target = runtime.pick_device(device)
    models = _load_all(sources, target)
    data = analysis_data(models[0].record, split or spec.split, dataset, images or spec.images, seed, target)
    results, seconds = [], {}
    for m in [models] if spec.custom else [[m] for m in models]:
        started = time.perf_counter()
        if spec.custom:
            results += spec.run(m, data, settings, seed)
        else:
            seeded = {"seed": seed} if spec.seeded else {}
            results.append(spec.run(m[0].model, data.images, data.labels, label=m[0].label, **seeded, **settings))
        seconds[" + ".join(x.label for x in m)] = round(time.perf_counter() - started, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec.plot(results, out / f"{kind}.png", data)
    report = {"kind": kind, "models": [m.source for m in models], "dataset": data.dataset, "split": data.split,
              "images": len(data.images), "seed": seed, "options": settings, "device": str(target),
              "hardware": runtime.hardware_name(target), "seconds": seconds,
              "results": [r.as_dict() for r in results]}  # fmt: skip
    text = json.dumps(report, indent=1)
    atomic_write(out / f"{kind}.json", lambda f: f.write(text.encode()))
    return report


def analysis_data(
    record: ModelRecord, split: str, dataset: str | None, count: int, seed: int, device: torch.device
) -> AnalysisData:
    """``count`` images drawn at random (seeded) from ``split`` of the model's run data, or from ``dataset`` (a
    folder or zip in ImageFolder layout, read with the weights' own preprocessing) for other weights."""
    generator = torch.Generator().manual_seed(seed)
    if record.train_config:
        return _run_images(record, split, dataset, count, generator, device)
    if not dataset:
        raise ValueError(
            f"{record.arch} does not say what data it was trained on; give the images (--data FOLDER_OR_ZIP)"
        )
    folder = ImageFolderDataset(dataset, record.preprocess, skip_broken=True)
    if record.classes and folder.classes != list(record.classes) and len(folder.classes) != len(record.classes):
        raise ValueError(
            f"{dataset} has {len(folder.classes)} class folders, the weights {len(record.classes)} classes"
        )
    samples = [s for i in torch.randperm(len(folder), generator=generator)[:count] if (s := folder[int(i)]) is not None]
    images = torch.stack([image for image, _ in samples]).to(device)
    labels = torch.tensor([label for _, label in samples], device=device)
    return AnalysisData(images, labels, list(record.classes) or folder.classes, str(dataset), "all",
                        record.preprocess.mean, record.preprocess.std)  # fmt: skip


def _run_images(record, split, dataset, count, generator, device) -> AnalysisData:
    cfg = TrainConfig.from_dict(record.train_config)
    data_section = cfg.data if dataset is None else dataclasses.replace(cfg.data, dataset=dataset)
    cfg = dataclasses.replace(cfg, data=data_section, progress=False)
    data = _run_data(cfg, device, (record.preprocess.mean, record.preprocess.std))
    if split not in data.evals:
        raise ValueError(f"split {split!r} does not exist for {cfg.data.dataset}; choose from {sorted(data.evals)}")
    loader = data.evals[split]
    if isinstance(loader, DeviceLoader):
        index = torch.randperm(len(loader.images), generator=generator)[:count].to(loader.device)
        images, labels = loader.transform(loader.images[index]), loader.labels[index]
    else:  # a streamed folder: decode only the images drawn
        subset = loader.dataset
        samples = [s for i in torch.randperm(len(subset), generator=generator)[:count] if (s := subset[int(i)])]
        images, labels = torch.stack([x for x, _ in samples]), torch.tensor([y for _, y in samples])
    return AnalysisData(images.to(device), labels.to(device), data.classes, cfg.data.dataset, split,
                        record.preprocess.mean, record.preprocess.std)  # fmt: skip


_DECODED: dict[str, RunData] = {}  # the latest run data, kept for the next analysis of the same command


def _run_data(cfg: TrainConfig, device: torch.device, normalize: tuple[tuple[float, ...], ...]) -> RunData:
    """A run's data, decoded once for every analysis of a command (``analyze all``)."""
    key = json.dumps([cfg.to_dict(), str(device), normalize], sort_keys=True, default=str)
    if key not in _DECODED:
        _DECODED.clear()
        _DECODED[key] = build_data(cfg, device, World(), normalize=normalize)
    return _DECODED[key]


def _load_all(sources: Sequence[str], device: torch.device) -> list[Loaded]:
    loaded = []
    for source in sources:
        model = load_model(source).to(device).eval()
        loaded.append(Loaded(str(source), model, model.record, model.record.arch))
    archs = [m.label for m in loaded]
    for m in loaded:
        if archs.count(m.label) > 1:
            m.label = Path(m.source).stem if Path(m.source).exists() else m.source
    return loaded


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise UnknownNameError(f"no analysis {kind!r}; choose from {', '.join(KINDS)}")
    return KINDS[kind]
