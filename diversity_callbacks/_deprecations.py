"""Arguments of 0.1 that still work, with a ``FutureWarning``, under their new names."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

RENAMED = {
    "samples_per_prompt": "samples_per_condition",
    "image_range": "value_range",
    "on_validation_end": "after_validation",
    "max_logged_prompts": "max_thumbnail_conditions",
    "log_spectrum": "spectrum",
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
