"""What ``diversity-callbacks score`` knows of one scored run: what every output is written from.

Apart from :mod:`~diversity_callbacks.cli.score` (which makes it) and
:mod:`~diversity_callbacks.cli.output` (which writes it), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunScore:
    """One run's scores, as written to the table, ``--json``, ``--csv`` and ``--plot``.

    Attributes:
        name: the run's name.
        path: its folder or embeddings file.
        source: where its prompts came from.
        num_images: samples scored (every process's).
        metrics: ``{"vendi_q1": ..., "per_prompt_vendi_q1": ..., "sce": ..., ...}``.
        prompts: the run's distinct prompts.
        counts: samples scored per prompt.
        per_prompt: per-prompt columns (``"vendi_q1"``...), one value per prompt.
        skipped: ``(path, reason)`` of every image left out.
        seconds: wall seconds of reading, embedding and computing.
        files: the run's image files by prompt number (for ``--grids``).
        copies: with ``--reference``, the most-copied images beside their training images
            (for ``--plot``).
        evaluation: the evaluation's result, with its modes (for ``--modes``).
    """

    name: str
    path: str
    source: str
    num_images: int
    metrics: dict[str, float]
    prompts: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    files: dict[int, list[str]] = field(default_factory=dict)
    copies: Any = None
    evaluation: Any = None
