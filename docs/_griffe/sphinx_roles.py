"""A griffe extension for the API reference: Sphinx roles in docstrings become code spans.

Some docstrings name objects the Sphinx way (``:class:`~diversity_callbacks.DiversityEvaluator```,
``:meth:`evaluate <diversity_callbacks.DiversityEvaluator.evaluate>```), which Markdown would show
as written. This turns each into what Sphinx would display, as code: the title if one is given,
the last part of a ``~`` path, the path otherwise. Loaded by mkdocs.yml; nothing else uses it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj):`(?P<target>[^`]+)`")


def display(target: str) -> str:
    """What Sphinx shows for a role's target: ``title <path>`` -> title, ``~a.b.c`` -> c."""
    target = " ".join(target.split())  # a role may wrap across docstring lines
    titled = re.fullmatch(r"(?P<title>.+?)\s*<(?P<path>[^>]+)>", target)
    if titled:
        return titled.group("title")
    if target.startswith("~"):
        return target.rsplit(".", 1)[-1]
    return target.lstrip("!")


def plain_roles(text: str) -> str:
    return ROLE.sub(lambda match: f"`{display(match.group('target'))}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring as it is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
