"""A griffe extension for the API reference: docstrings written for Sphinx render in Markdown.

Sphinx roles become code spans. Some docstrings name objects the Sphinx way
(``:class:`~diversity_callbacks.DiversityEvaluator```, ``:meth:`evaluate <path>```), which
Markdown would show as written; each becomes what Sphinx would display, as code: the title if one
is given, the last part of a ``~`` path, the path otherwise. An ``Example:`` section (Napoleon's
spelling) is read as ``Examples:``, whose doctests griffe renders as code (it would render the
singular as a note, the doctest as quoted text). Loaded by mkdocs.yml; nothing else uses it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE_SECTION = re.compile(r"^(\s*)Example:\s*$", re.M)
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
    """Rewrites every docstring as it is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = EXAMPLE_SECTION.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = plain_roles(text)
