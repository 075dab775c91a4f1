"""Command-line options spelled once: the fields of a dataclass become a command's arguments, and back.

A field's ``metadata`` carries what the command line needs beyond its name, type and default:

- ``help``: the help line (required: an option nobody can read about is not an option);
- ``metavar``: the placeholder in the usage line, e.g. ``FRACTION``;
- ``flag``: the flag when it is not the field's name with dashes (``latency_repeats`` -> ``--repeats``);
- ``positional``: ``True`` makes the field a positional argument instead of a flag.

Types map as follows: ``bool`` is a ``store_true`` switch, an enum offers its values as choices (and is parsed into
the member by :func:`from_args`, once), a ``tuple`` takes any number of values, ``int``/``float``/``str`` are
converted by argparse.

    >>> from dataclasses import dataclass, field
    >>> @dataclass(frozen=True)
    ... class Plan:
    ...     prune: float = field(default=0.0, metadata={"help": "keep this fraction", "metavar": "FRACTION"})
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser, Plan)
    >>> from_args(Plan, parser.parse_args(["--prune", "0.5"]))
    Plan(prune=0.5)
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import typing
from typing import Any

from ..options import parse_enum


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field of dataclass ``cls``, in field order; each lands in ``args.<field name>``.

    Args:
        parser: the command's parser.
        cls: a dataclass whose fields all carry ``metadata["help"]``.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            parser.add_argument(f.name, **_argument_options(f, hints[f.name], f.name))
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        parser.add_argument(flag, dest=f.name, **_argument_options(f, hints[f.name], flag))


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of dataclass ``cls`` from the arguments :func:`add_arguments` made: enum values become members,
    lists become tuples."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _parse(hints[f.name], getattr(args, f.name), f.name) for f in dataclasses.fields(cls)})


def _argument_options(f: dataclasses.Field, hint: Any, flag: str) -> dict[str, Any]:
    """``add_argument`` keywords for field ``f`` of type ``hint``, given on the command line as ``flag``."""
    if "help" not in f.metadata:
        raise TypeError(f"field {f.name!r} has no metadata['help'] to show on the command line")
    help_ = f.metadata["help"]
    if hint is bool:
        if _default(f) is not False:
            raise TypeError(f"field {f.name!r}: a switch (store_true) needs the default False")
        return {"help": help_, "action": "store_true"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):  # argparse shows the choices as the placeholder
        return {"help": help_, "choices": [member.value for member in hint], "default": _default(f).value}
    # the placeholder follows the flag, not the field: --repeats REPEATS where the field is latency_repeats
    metavar = f.metadata.get("metavar", flag.lstrip("-").replace("-", "_").upper())
    if typing.get_origin(hint) is tuple:
        return {"help": help_, "metavar": metavar, "nargs": "*", "default": list(_default(f))}
    return {"help": help_, "metavar": metavar, "type": hint, "default": _default(f)}


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _parse(hint: Any, value: Any, name: str) -> Any:
    """A parsed argument as the field's type: the one place strings become enum members."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return parse_enum(hint, value, name)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value
