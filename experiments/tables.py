"""RESULTS.md: one Markdown table per experiment from the driver's JSON records, figures embedded.

Rows are runs; where a run ran with several seeds, its validation error is the mean ± sample std over them.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

DATA_NOTE = ("Our numbers (†) are top-1 error on a fixed-seed 5,000-image validation split held out of the 50,000 "
             "CIFAR-10 training images **re-encoded as JPEG** (the other 45,000 train), not on the official "
             "10,000-image test set; JPEG re-encoding costs some accuracy against the original PNG images. The "
             "paper's numbers are test error on the official test set.")  # fmt: skip
Section = tuple[str, list[dict], Path | None]  # title, records, the JSON file they came from


def results_markdown(sections: list[Section], source: Path, markdown: Path) -> list[str]:
    lines = ["# Reproducing He et al. 2015 on CIFAR-10", "", f"> {DATA_NOTE}", "",
             f"Written by `python experiments/cifar10.py report` from the JSON under `{source}`. Train time: the sum "
             "of the training epochs over every session (evaluation excluded), per run.", ""]  # fmt: skip
    for title, records, path in sections:
        lines += section(title, records, path, markdown)
    return lines


COLUMNS = ["run", "model", "params", "val. error† (%)", "paper test error (%)", "recipe", "epochs", "train time",
           "hardware", "command"]  # fmt: skip


def section(title: str, records: list[dict], path: Path | None, markdown: Path) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["run"], r["recipe"]), []).append(r)
    where = f" (`{path}`)" if path else ""
    lines = [f"## {title}{where}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(group)) + " |" for group in groups.values()]
    splits = {f"`{Path(r['dataset']).name}` ({_held_out(r['val_size'])} held out)" for r in records}
    datasets = ", ".join(sorted(splits))
    lines += ["", f"† validation error on {datasets}; not the official test set (see the note at the top).", ""]
    figure = path.with_suffix(".png") if path else None
    if figure and figure.is_file():
        lines += [f"![{title}]({os.path.relpath(figure, markdown.parent)})", ""]
    return lines


def _cells(group: list[dict]) -> list[str]:
    """One row: a run over its seeds (finished seeds only, while any has finished)."""
    first, done = group[0], [r for r in group if r["finished"]]
    shown = done or group
    paper = first["paper_test_error_pct"]
    options = ", ".join(f"{k}={v}" for k, v in first["options"].items())
    hardware = sorted({r["hardware"] for r in shown})
    commands = sorted({r["command"] for r in group if r["command"]})
    return [first["run"], first["model"] + (f" ({options})" if options else ""), f"{first['params'] / 1e6:.3f}M",
            _error(shown), "" if paper is None else f"{paper:.2f}", str(first["recipe"]), _epochs(group, done),
            _duration(statistics.fmean(r["train_time_s"] for r in shown)), "<br>".join(hardware),
            "<br>".join(f"`{c}`".replace("|", "\\|") for c in commands)]  # fmt: skip


def tradeoff_markdown(document: dict) -> list[str]:
    """The accuracy-latency points as a table, fastest first: what each trained model costs and buys."""
    columns = ["run", "val. accuracy† (%)", "seeds", "params", "MACs", "ONNX Runtime batch 1 (ms)",
               "training images/s", "train time", "trained on"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * 7 + "---|"]
    for p in sorted(document["points"], key=lambda p: p["latency_ms"]):
        spread = f" ± {p['val_top1_std']:.2f}" if len(p["seeds"]) > 1 else ""
        rate = "–" if p["train_images_per_s"] is None else f"{p['train_images_per_s']:.0f}"
        lines.append("| " + " | ".join([
            f"`{p['run']}`" + (" (shipped)" if p["shipped"] else ""), f"{p['val_top1_mean']:.2f}{spread}",
            str(len(p["seeds"])), f"{p['params'] / 1e6:.2f}M", f"{p['macs'] / 1e6:.0f}M", f"{p['latency_ms']:.2f}",
            rate, _duration(p["train_time_s"]), "<br>".join(p["hardware"])]) + " |")  # fmt: skip
    return lines + ["", "† mean ± std over the seeds, on the held-out split of the JPEG copy (see the note on the "
                    f"data). Latency: {document['latency']}. Training images/s and time: the mean over the seeds, "
                    "on the machines named, in each run's precision (bf16 where its command says so); a run that shared "
                    "the machine or was paused and resumed reads slower.", ""]


def _error(records: list[dict]) -> str:
    errors = [r["val_error_pct"] for r in records if r["val_error_pct"] is not None]
    if not errors:
        return "–"
    if len(errors) == 1:
        return f"{errors[0]:.2f}†"
    return f"{statistics.fmean(errors):.2f} ± {statistics.stdev(errors):.2f}† ({len(errors)} seeds)"


def _epochs(group: list[dict], done: list[dict]) -> str:
    if not done:
        return f"{group[0]['epochs']} of ~{_total_epochs(group[0])}, still training"
    running = f"; {len(group) - len(done)} more seed(s) still training" if len(done) < len(group) else ""
    return f"{done[0]['epochs']} ({done[0]['steps']:,} it.){running}"


def _total_epochs(record: dict) -> int:
    return round(record["total_steps"] * record["epochs"] / max(record["steps"], 1))


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _held_out(val_size: float) -> str:
    return f"{val_size:.0%}" if val_size < 1 else f"{val_size:,.0f} images"
