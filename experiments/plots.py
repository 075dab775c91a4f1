"""Figures for the CIFAR-10 experiments (matplotlib, Agg backend), drawn from the records the driver writes.

Every record carries its per-epoch ``history`` (``step``, ``train_error_pct``, ``val_error_pct``), so a figure can
be redrawn from the experiment's JSON alone. Where several seeds ran, the curves show the lowest seed.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

Record = dict[str, Any]
DATA_NOTE_LINES = ("validation error on a 5k split of JPEG-re-encoded CIFAR-10 train,", "not the official test set")


def first_seed(records: list[Record]) -> list[Record]:
    """One record per run name, the one with the lowest seed, in first-seen order."""
    chosen: dict[str, Record] = {}
    for r in records:
        if r["run"] not in chosen or r["seed"] < chosen[r["run"]]["seed"]:
            chosen[r["run"]] = r
    return list(chosen.values())


def error_curves(records: list[Record], path: Path, title: str) -> Path:
    """Training (dashed) and validation (solid) error against iterations, one panel per ``panel`` value, one
    colour per run: the layout of He et al. 2015, Figure 6."""
    runs = first_seed(records)
    panels = list(dict.fromkeys(r.get("panel", "") for r in runs))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), sharey=True, squeeze=False)
    top = _error_range(runs)
    for ax, panel in zip(axes[0], panels):
        members = [r for r in runs if r.get("panel", "") == panel]
        for colour, r in enumerate(members):
            _plot_run(ax, r, f"C{colour}")
        ax.set_ylim(0, top)
        ax.set(title=panel, xlabel="iterations", ylabel="error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    _suptitle(fig, title, f"dashed: training error, solid: {' '.join(DATA_NOTE_LINES)}")
    return _save(fig, path)


def _suptitle(fig, *lines: str) -> None:
    """Title lines wrapped to the figure's width (a one-panel figure is too narrow for the data note)."""
    chars = int(fig.get_figwidth() * 10)  # about 10 characters of 10-point text per inch
    fig.suptitle("\n".join(part for line in lines for part in textwrap.wrap(line, chars)), fontsize=10)


def _error_range(records: list[Record], tops: tuple[float, ...] = (20, 30, 40, 60, 100)) -> float:
    """The paper's 0-20% when our curves fit it, else the smallest wider range that holds every error after the
    first fifth of each run (the first epochs of any run sit near 90% and would flatten the rest)."""
    late = [0.0]
    for r in records:
        points = [h for h in r["history"] if h.get("step") is not None]
        last = max((h["step"] for h in points), default=0)
        late += [h[key] for h in points if h["step"] > last / 5
                 for key in ("train_error_pct", "val_error_pct") if h.get(key) is not None]  # fmt: skip
    return next((top for top in tops if max(late) <= top), tops[-1])


def _plot_run(ax, record: Record, colour: str) -> None:
    history = record["history"]
    train = [(h["step"], h["train_error_pct"]) for h in history if h.get("train_error_pct") is not None]
    val = [(h["step"], h["val_error_pct"]) for h in history if h.get("val_error_pct") is not None]
    if train:
        ax.plot(*zip(*train), "--", color=colour, linewidth=1)
    if val:
        marker = "o" if len(val) == 1 else None  # a one-epoch run is a single point
        ax.plot(*zip(*val), "-", color=colour, linewidth=2, marker=marker, label=record["run"])


def error_vs_depth(records: list[Record], path: Path, title: str) -> Path:
    """Final validation error (mean ± std over seeds) against depth, beside the paper's test error."""
    stats = _seed_stats(records)
    depths = [_depth(first["model"]) for first, _, _ in stats]
    paper = [(d, first["paper_test_error_pct"]) for d, (first, _, _) in zip(depths, stats)
             if first.get("paper_test_error_pct") is not None]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 5))
    _errorbar(ax, depths, stats)
    if paper:
        ax.plot(*zip(*paper), "x--", color="k", label="He et al. 2015, Table 6: test error")
    ax.set(xlabel="depth (layers)", ylabel="error (%)", xticks=depths)
    ax.grid(alpha=0.3)
    ax.legend()
    _suptitle(fig, title, *DATA_NOTE_LINES)
    return _save(fig, path)


def error_vs_quality(records: list[Record], path: Path, title: str, source_quality: int) -> Path:
    """Final validation error (mean ± std over seeds) against the JPEG quality of the images trained and scored on;
    a record's ``jpeg_quality`` is None for the images as given, which were saved at ``source_quality``."""
    def quality(stat: tuple[Record, float, float]) -> int:
        return stat[0].get("jpeg_quality") or source_quality

    stats = sorted(_seed_stats(records), key=quality)
    qualities = [quality(stat) for stat in stats]
    fig, ax = plt.subplots(figsize=(7, 5))
    _errorbar(ax, qualities, stats)
    ax.set(xlabel=f"JPEG quality (images as given: {source_quality}; lower: decoded and saved again)",
           ylabel="error (%)", xticks=qualities)
    ax.grid(alpha=0.3)
    ax.legend()
    _suptitle(fig, title, *DATA_NOTE_LINES)
    return _save(fig, path)


def _seed_stats(records: list[Record]) -> list[tuple[Record, float, float]]:
    """Per run that has a validation error, in first-seen order: its first record, and the mean and sample std
    (0 for one seed) of its final validation errors over seeds."""
    by_run: dict[str, list[Record]] = {}
    for r in records:
        by_run.setdefault(r["run"], []).append(r)
    stats = []
    for group in by_run.values():
        errors = [r["val_error_pct"] for r in group if r["val_error_pct"] is not None]
        if errors:
            stats.append((group[0], statistics.fmean(errors), statistics.stdev(errors) if len(errors) > 1 else 0.0))
    return stats


def _errorbar(ax, xs: list[float], stats: list[tuple[Record, float, float]]) -> None:
    ax.errorbar(xs, [mean for _, mean, _ in stats], yerr=[std for _, _, std in stats], fmt="o-", capsize=3,
                label="ours: validation error (mean ± std)")


def _depth(model: str) -> int:
    match = re.search(r"(\d+)$", model)
    return int(match.group(1)) if match else 0


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def accuracy_vs_latency(points: list[Record], path: Path, title: str, latency_note: str) -> Path:
    """Validation accuracy (mean ± std over seeds) against batch-1 latency, one labelled point per run; shipped
    weights as stars."""
    fig, ax = plt.subplots(figsize=(9, 6))
    for p in points:
        ax.errorbar(p["latency_ms"], p["val_top1_mean"], yerr=p["val_top1_std"], fmt="*" if p["shipped"] else "o",
                    markersize=11 if p["shipped"] else 6, capsize=3, color="C1" if p["shipped"] else "C0")
    for i, p in enumerate(sorted(points, key=lambda p: (p["latency_ms"], p["val_top1_mean"]))):
        ax.annotate(p["run"], (p["latency_ms"], p["val_top1_mean"]), textcoords="offset points",
                    xytext=(5, 4 if i % 2 else -10), fontsize=7)  # alternate above/below: close points stay legible
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set(xlabel="batch-1 latency (ms, log scale)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.plot([], [], "*", color="C1", markersize=11, label="weights shipped in resnetkit")
    ax.plot([], [], "o", color="C0", label="other trained runs")
    ax.legend(loc="lower right")
    _suptitle(fig, title, latency_note, " ".join(DATA_NOTE_LINES))
    return _save(fig, path)
