"""The ``resnetkit`` command line: ``resnetkit <command> [options]``; ``resnetkit <command> -h`` for help.

Each command is a module with ``NAME``, ``HELP`` (and optionally ``USAGE``), ``add_arguments(parser)`` and
``run(args) -> int``; commands parse their arguments into library calls and print, and all the work lives in the
library. This module assembles the parser from :data:`COMMANDS` and decides how errors end a command:

- a user error (:class:`~resnetkit.errors.UserError`, ``ValueError``, ``FileNotFoundError``) is one line,
  ``resnetkit CMD: error: MESSAGE``, and exit status 2; with ``RESNETKIT_DEBUG=1`` its traceback comes first;
- anything else is a bug and keeps its traceback;
- Ctrl-C is one line and exit status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from types import ModuleType
from typing import Sequence

from ..errors import UserError
from . import analyze, bench, compress, convert, evaluate, export, models, predict, serve, train, weights

COMMANDS: tuple[ModuleType, ...] = (
    train, evaluate, predict, analyze, convert, weights, export, bench, compress, models, serve)
USER_ERRORS = (UserError, ValueError, FileNotFoundError)
DEBUG_ENV = "RESNETKIT_DEBUG"  # set to 1: show the traceback of a user error too


def build_parser() -> argparse.ArgumentParser:
    """The ``resnetkit`` parser: one sub-parser per command, which sets ``args.run`` to the command's ``run``."""
    parser = argparse.ArgumentParser(prog="resnetkit", description="Residual networks: define, count, train, deploy.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, usage=getattr(command, "USAGE", None))
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Parse the command line; ``KEY=VALUE`` overrides may also follow the flags (``--out X epochs=3``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return parser, args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status (0 success, 1 a failed check, 2 a user error, 130 interrupted)."""
    parser, args = parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except KeyboardInterrupt as interrupt:
        hint = f" ({interrupt})" if str(interrupt) else ""  # e.g. train's "continue with --resume"
        print(f"resnetkit {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"resnetkit {args.command}: error: {err}", file=sys.stderr)
        return 2
