"""The model table: counts against the papers, the CLI that prints it, and the copy in the docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resnetkit import create_model
from resnetkit.cli import main
from resnetkit.cli.models import format_table
from resnetkit.models.complexity import count_macs, count_params, model_table

MODELS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"


@pytest.fixture(scope="module")
def table():
    return model_table()


def test_paper_figures_within_three_percent(table):
    with_paper = [row for row in table if row.paper_value is not None]
    assert len(with_paper) >= 20
    for row in with_paper:
        assert abs(row.paper_diff) <= 0.03, f"{row.name}: {row.ours_in_paper_setting} vs paper {row.paper_value}"


def test_meta_device_counts_equal_real_ones():
    model = create_model("cifar_resnet20")
    assert count_macs(model, 32) == 40_551_040 and count_params(model) == 269_722


def test_counting_leaves_every_module_in_its_mode():
    model = create_model("cifar_resnet20").train()
    model.layer1.eval()  # e.g. a frozen stage while the rest trains
    modes = {name: module.training for name, module in model.named_modules()}
    count_macs(model, 32)
    assert {name: module.training for name, module in model.named_modules()} == modes


def test_docs_show_the_generated_table(table):
    stale = "docs/models.md table is stale: regenerate it with `resnetkit models --format markdown`"
    assert format_table(table, markdown=True) in MODELS_PAGE.read_text(), stale


def test_cli_models_text(capsys):
    assert main(["models", "cifar_resnet2*"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20" in out and "269.72K" in out and "-0.1%" in out


def test_cli_unknown_pattern(capsys):
    assert main(["models", "vgg*"]) == 2
    assert "no model matches 'vgg*'" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "resnetkit", "models", "cifar_resnet20", "--format", "json"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert '"params": 269722' in result.stdout
