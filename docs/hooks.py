"""MkDocs hook: publish the figures under experiments/results with the site.

``python experiments/cifar10.py report`` writes experiments/RESULTS.md with figures linked relative to it
(``results/cifar10_cpu/table6.png``); docs/reproduction.md includes that file as it is, so the same relative paths
must exist in the site. The figures stay where the experiments write them instead of being copied into docs/.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def on_files(files, config):
    """Add every PNG under experiments/results, at the path RESULTS.md links it by."""
    for figure in sorted((EXPERIMENTS / "results").rglob("*.png")):
        path = figure.relative_to(EXPERIMENTS).as_posix()
        files.append(File(path, str(EXPERIMENTS), config["site_dir"], config["use_directory_urls"]))
    return files
