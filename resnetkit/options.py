"""Parsing options given as strings (CLI, YAML, checkpoints) into the enums the code uses, once, at the boundary."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)


def parse_enum(kind: type[E], value: Any, name: str) -> E:
    """``value`` as a member of ``kind``: a member passes through, its value is looked up, anything else is a
    one-line ``ValueError`` naming the option and the valid values."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not one of {[m.value for m in kind]}") from None
