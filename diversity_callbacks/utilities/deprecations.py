"""Arguments and result keys of 0.1 that still work, with a ``FutureWarning``, or fail naming
their new names: no 0.1 call silently changes meaning."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

RENAMED = {
    "samples_per_prompt": "samples_per_condition",
    "image_range": "value_range",
    "on_validation_end": "after_validation",
    "max_logged_prompts": "max_thumbnail_conditions",
    "log_spectrum": "spectrum",
    "conditional": "per_condition",
}
"""Arguments of 0.1.0 that still work, with a FutureWarning, under their new names."""


def renamed_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options under their current names; 0.1.0 names warn once each."""
    renamed = dict(options)
    for old, new in RENAMED.items():
        if old in renamed:
            if new in renamed:
                raise TypeError(f"give `{new}` or its former name `{old}`, not both")
            warnings.warn(f"`{old}` is now `{new}`", FutureWarning, stacklevel=3)
            renamed[new] = renamed.pop(old)
    return renamed


def renamed_arguments(function: str, former: Mapping[str, Any], **current: Any) -> dict[str, Any]:
    """The values of ``current``, with arguments given under their 0.1.0 names in ``former``.

    ``former`` is a function's ``**kwargs``: each 0.1.0 name warns once and gives the value of
    its new name (whose default is None); any other keyword is a ``TypeError``, as Python
    raises for an unexpected keyword.
    """
    values = dict(current)
    for old, value in former.items():
        new = RENAMED.get(old)
        if new not in values:
            raise TypeError(f"{function}() got an unexpected keyword argument {old!r}")
        if values[new] is not None:
            raise TypeError(f"give `{new}` or its former name `{old}`, not both")
        warnings.warn(f"`{old}` is now `{new}`", FutureWarning, stacklevel=3)
        values[new] = value
    return values


# Result keys of 0.1.0: "class_conditional_vendi_q1" (class labels) and "conditional_vendi_q1"
# (prompts), after an optional "{prefix}/".
_RENAMED_KEY = re.compile(r"(?P<prefix>(?:.*/)?)(?P<name>class_conditional|conditional)_vendi_")
_NEW_KEY_NAMES = {"class_conditional": "per_class", "conditional": "per_prompt"}


def renamed_key(key: str) -> str:
    """The current name of a 0.1.0 result key (``diversity/conditional_vendi_q1`` ->
    ``diversity/per_prompt_vendi_q1``); other keys are returned unchanged."""
    match = _RENAMED_KEY.match(key)
    if match is None or "/" in key[match.end() :]:
        return key
    new = _NEW_KEY_NAMES[match["name"]]
    return f"{match['prefix']}{new}_vendi_{key[match.end() :]}"


def check_current_key(key: str, argument: str) -> None:
    """Raise when ``key``, given as ``argument``, is a 0.1.0 result key, naming the new one."""
    new = renamed_key(key)
    if new != key:
        raise ValueError(
            f"`{argument}` names the 0.1 key {key!r}, which is no longer logged: the per-condition "
            f"Vendi score is now logged as {new!r}"
        )
