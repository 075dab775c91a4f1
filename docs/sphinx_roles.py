"""Griffe extension: render the package's Sphinx roles (:class:`X`, :func:`~.mod.f`) as Markdown code.

The docstrings are Google style with reStructuredText roles for cross-references, which mkdocstrings would show
verbatim (":class:`ImageSet`"). The API reference shows the target as inline code instead: the last dotted part
when the target starts with ``~`` (Sphinx's "short name"), the text before ``<target>`` when the role has a title.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    text = match.group(1)
    if "<" in text:  # :class:`the loader <resnetkit.data.DeviceLoader>`
        return f"`{text.split('<')[0].strip()}`"
    if text.startswith("~"):
        return f"`{text.rsplit('.', 1)[-1]}`"
    return f"`{text.lstrip('.')}`"


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring's Sphinx roles when griffe loads the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
