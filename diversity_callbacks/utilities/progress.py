"""The one progress bar of the package: the evaluator's sampling, the reading of existing samples,
the reference set's embedding and the command line's file discovery all draw it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    description: str,
    enabled: bool = True,
    total: int | None = None,
    unit: str = "it",
) -> tqdm:
    """A transient tqdm bar: drawn only on a terminal, and only when ``enabled``.

    Args:
        iterable: what to iterate over; ``None`` for a bar moved by ``update``.
        description: the bar's label.
        enabled: ``False`` hides it (e.g. on ranks other than 0, or ``progress=False``).
        total: the number of steps, when ``iterable`` has no length.
        unit: what a step is (``"batch"``...).

    Example:
        >>> with progress_bar(range(3), description="counting", enabled=False) as bar:
        ...     sum(bar)
        3
    """
    # disable=None: tqdm draws only on a terminal, so log files get no line per evaluation;
    # leave=False: a finished bar disappears instead of piling up between training steps.
    return tqdm(
        iterable,
        desc=description,
        total=total,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        disable=None if enabled else True,
    )
