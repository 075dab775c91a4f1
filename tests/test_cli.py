"""The command line as a whole: the parser assembled from the commands' own definitions, options spelled once (the
compress flags are ChainPlan's fields), and the error policy (a user error is one line and exit status 2, a bug
keeps its traceback, ``RESNETKIT_DEBUG=1`` shows the traceback of a user error too)."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from resnetkit import cli
from resnetkit.cli import fields, main, parse_args
from resnetkit.workflows.compress import ChainPlan
from resnetkit.compress.prune import Criterion
from resnetkit.deploy.quantize import Calibration
from resnetkit.errors import UnknownNameError, UserError


def test_the_parser_lists_every_command_with_its_help(capsys):
    assert [command.NAME for command in cli.COMMANDS] == ["train", "eval", "predict", "analyze", "convert", "weights",
                                                          "export", "bench", "compress", "models", "serve"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(["-h"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for command in cli.COMMANDS:
        assert f"{command.NAME} {' '.join(command.HELP.split())}" in text


# -- options spelled once: ChainPlan's fields are the compress flags ------------------------------------------------


def test_compress_defaults_are_the_plans():
    _, args = parse_args(["compress", "run/last.safetensors", "--out", "o"])
    assert fields.from_args(ChainPlan, args) == ChainPlan()


def test_compress_flags_build_the_plan_with_enums_parsed():
    _, args = parse_args(["compress", "run/last.safetensors", "optim.lr=0.05", "--out", "o", "--prune", "0.5", "--criterion",
                          "bn_scale", "--calibration", "minmax", "--distill", "--finetune-epochs", "2", "--repeats",
                          "3", "--threads", "1", "epochs=1"])  # fmt: skip
    plan = fields.from_args(ChainPlan, args)
    assert plan == ChainPlan(prune=0.5, criterion=Criterion.BN_SCALE, calibration=Calibration.MINMAX, distill=True,
                             finetune_epochs=2, latency_repeats=3, latency_threads=1,
                             overrides=("optim.lr=0.05", "epochs=1"))  # fmt: skip


def test_every_plan_field_has_its_help_on_the_command_line(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "-h"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in dataclasses.fields(ChainPlan):
        assert " ".join(f.metadata["help"].split()) in text, f.name
    assert "--repeats REPEATS" in text and "--prune FRACTION" in text and "--criterion {l1,bn_scale}" in text


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Plan:
        steps: int = 0

    with pytest.raises(TypeError, match="'steps' has no metadata"):
        fields.add_arguments(argparse.ArgumentParser(), Plan)


# -- errors ---------------------------------------------------------------------------------------------------------


def test_a_user_error_is_one_line_and_exit_status_2(monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the config is checked before anything is trained or decoded")

    monkeypatch.setattr("resnetkit.train.engine.fit", never)
    assert main(["train", "data.dataset=/no/such.zip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnetkit train: error: ") and "/no/such.zip" in err and len(err.splitlines()) == 1


def test_an_unknown_name_is_one_unquoted_line(monkeypatch, capsys):
    def lookup(args):
        raise UnknownNameError("unknown model 'resnet5'; did you mean resnet50?")

    monkeypatch.setattr("resnetkit.cli.models.run", lookup)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == "resnetkit models: error: unknown model 'resnet5'; did you mean resnet50?\n"


@pytest.mark.parametrize("argv, words", [
    (["train", "model.name=resnet5"], "unknown model 'resnet5'; did you mean"),
    (["train", "model.options={widht: 2}"], "unknown model option 'widht'"),
    (["predict", "cifar_resnet20.no_such_tag", "x.png"], "unknown weights 'cifar_resnet20.no_such_tag'"),
    (["eval", "no/such/best.safetensors"], "model file 'no/such/best.safetensors' not found"),
])  # fmt: skip
def test_the_library_s_own_lookups_are_user_errors(capsys, argv, words):
    """Names and options the library looks up raise UnknownNameError/UnknownOptionError: one line, exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), KeyError("params"), AttributeError("no .fc")])
def test_a_bug_is_not_turned_into_a_user_error(monkeypatch, capsys, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr("resnetkit.cli.models.run", broken)
    with pytest.raises(type(bug)):
        main(["models"])
    assert "error" not in capsys.readouterr().err


def test_a_bug_ends_the_process_with_its_traceback():
    code = "import sys, resnetkit.cli as c; c.models.run = lambda args: {}['params']; sys.exit(c.main(['models']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "KeyError: 'params'" in result.stderr


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch, capsys):
    monkeypatch.setenv("RESNETKIT_DEBUG", "1")
    assert main(["train", "data.dataset=/no/such.zip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "check_dataset" in err
    assert err.splitlines()[-1].startswith("resnetkit train: error: ")


def test_unknown_name_error_is_a_key_error_with_a_plain_message():
    error = UnknownNameError("unknown weights 'x'")
    assert isinstance(error, KeyError) and isinstance(error, UserError)
    assert str(error) == "unknown weights 'x'"  # a plain KeyError would print "\"unknown weights 'x'\""


def test_interrupted_training_says_how_to_resume(monkeypatch, capsys):
    def interrupted(cfg, resume=False, task=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("resnetkit.train.engine.fit", interrupted)
    assert main(["train", "epochs=1"]) == 130
    assert capsys.readouterr().err == "resnetkit train: interrupted (continue with --resume)\n"
