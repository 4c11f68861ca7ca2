"""What one evaluation shows, rendered once for every logger: grids, the table, the spectrum.

Nothing here imports a logging library: the writers (:mod:`~diversity_callbacks.media.loggers`)
turn a :class:`Media` into W&B, TensorBoard or MLflow calls, or into files. Every image is uint8
RGB, and is PNG-encoded once (:attr:`~diversity_callbacks.media.picture.Picture.png`, :attr:`Media.spectrum_png`), whatever the
number of loggers: encoding was most of the logging time (``docs/performance.md``).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diversity_callbacks.evaluation.conditions import ConditionSet, EvaluationSet
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.evaluation.memorization import CopiedSamples
from diversity_callbacks.media.modes import TABLE_COLUMNS, ModePanel, mode_panels, mode_table_rows
from diversity_callbacks.media.picture import PAD_VALUE, Picture, png_bytes, same_size, tile

GRID_COLUMNS = 8
"""Samples per row of a condition's grid."""

SPECTRUM_CAPTION = "eigenvalues of K/n"


@dataclass(frozen=True)
class Grid(Picture):
    """The thumbnails of one condition's samples, tiled.

    Attributes:
        condition: the condition's number in the evaluation set.
        name: a file- and tag-safe name, ``03_a_red_apple``: the number keeps the set's order.
        caption: what the grid shows, ``prompt: a red apple``.
        pixels: ``(3, H, W)`` uint8 tensor on the CPU.
    """

    condition: int
    name: str
    caption: str
    pixels: Tensor


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a CSV cell as a formula (OWASP, "CSV
Injection")."""


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a leading single quote, as OWASP recommends. Numbers,
    and text that reads as a number (``-1.5``), are written as they are.

    Examples:
        >>> [csv_cell(v) for v in ("=1+1", "@SUM(A1)", "-1.5", -1.5, "a cat")]
        ["'=1+1", "'@SUM(A1)", '-1.5', -1.5, 'a cat']
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


@dataclass(frozen=True)
class Table:
    """The per-condition scores: ``columns[0]`` is the condition kind, then one column a score.

    Attributes:
        columns: ``["prompt", "vendi_q1", "vendi_q2"]``, say.
        rows: one row per condition: its name, then its scores.
    """

    columns: list[str]
    rows: list[list[str | float]]

    def csv(self, line_end: str = "\n") -> str:
        """The table as CSV text, with a header row; no cell runs as a formula (:func:`csv_cell`).

        Args:
            line_end: what ends each row (the ``diversity-callbacks score --csv`` file keeps
                the csv module's ``"\\r\\n"``).
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator=line_end)
        writer.writerow([csv_cell(column) for column in self.columns])
        writer.writerows([csv_cell(cell) for cell in row] for row in self.rows)
        return buffer.getvalue()

    def text(self, digits: int = 3) -> str:
        """The table as aligned plain text for a terminal: the first column left-aligned, the
        others right-aligned, a rule under the header, numbers with ``digits`` decimals (NaN:
        ``-``).

        Examples:
            >>> print(Table(["run", "vendi_q1"], [["healthy", 18.3351], ["bad", float("nan")]]).text())
            run      vendi_q1
            -------  --------
            healthy    18.335
            bad             -
        """
        cells = [list(self.columns)] + [
            [_text_cell(cell, digits) for cell in row] for row in self.rows
        ]
        widths = [max(len(row[c]) for row in cells) for c in range(len(self.columns))]
        lines = [
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as a Markdown table (TensorBoard's text tab renders it)."""

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cells) + " |"

        body = [
            [_markdown_cell(row[0]), *(_markdown_value(value) for value in row[1:])]
            for row in self.rows
        ]
        return "\n".join([line(self.columns), line(["---"] * len(self.columns)), *map(line, body)])


@dataclass(frozen=True)
class CopiesGrid(Picture):
    """The most-copied samples, each (left) beside its nearest training sample (right).

    Attributes:
        pixels: ``(3, H, W)`` uint8: one pair per row, most similar first.
        pairs: each pair alone, ``(3, h, w)`` uint8, for loggers that caption every image.
        captions: each pair's ``similarity 0.998 to training sample 33``.
        similarities: every sample's nearest-neighbour similarity (for histograms).
    """

    pixels: Tensor
    pairs: list[Tensor]
    captions: list[str]
    similarities: np.ndarray

    def csv(self) -> str:
        """``rank,similarity,training_index`` of every pair shown."""
        rows = [caption.split(" ") for caption in self.captions]
        return "rank,similarity,training_index\n" + "".join(
            f"{rank},{row[1]},{row[-1]}\n" for rank, row in enumerate(rows)
        )


@dataclass(frozen=True)
class Media:
    """Everything an evaluation shows besides its scalars, ready for any logger.

    Attributes:
        prefix: the evaluator's key prefix (``"diversity"``); every tag and key starts with it.
        grids: one grid per condition that has thumbnails, in condition order.
        table: per-condition scores, for prompts and classes (None when unconditional or empty).
        spectrum: the eigenvalue plot as an ``(H, W, 3)`` uint8 array, when asked for.
        mode_panels: one grid per mode (leading, lost, gained), when the samples are images.
        mode_table: the top items of each mode, when the samples are texts.
        copies: with a reference set, the most-copied samples beside their training samples.
    """

    prefix: str
    grids: list[Grid]
    table: Table | None
    spectrum: np.ndarray | None
    mode_panels: list[ModePanel] = field(default_factory=list)
    mode_table: Table | None = None
    copies: CopiesGrid | None = None

    @functools.cached_property
    def spectrum_png(self) -> bytes | None:
        """The spectrum plot as PNG bytes (None without a spectrum), encoded once."""
        return None if self.spectrum is None else png_bytes(self.spectrum)


def render_media(evaluator: DiversityEvaluator, result: EvaluationResult) -> Media:
    """Render the grids, table and spectrum of one evaluation (on rank 0, where thumbnails are).

    Args:
        evaluator: the evaluator that produced ``result`` (its conditions and prefix).
        result: the evaluation: thumbnails (possibly of the first conditions only), the
            per-condition columns and the spectrum.
    """
    evaluation_set = evaluator.evaluation_set
    grids = condition_grids(evaluation_set, result.thumbnails)
    table = None
    if evaluation_set.is_conditional and (grids or result.per_condition):
        rows: list[list[str | float]] = [
            [name, *(float(column[c]) for column in result.per_condition.values())]
            for c, name in enumerate(evaluation_set.names)
        ]
        table = Table([evaluation_set.kind, *result.per_condition], rows)
    spectrum = None if result.spectrum is None else spectrum_plot(result.spectrum)
    mode_rows = mode_table_rows(result)
    mode_table = Table(list(TABLE_COLUMNS), mode_rows) if mode_rows else None
    copies = None if result.copies is None else copies_grid(result.copies)
    return Media(evaluator.prefix, grids, table, spectrum, mode_panels(result), mode_table, copies)


def copies_grid(copies: CopiedSamples) -> CopiesGrid:
    """Lay the most-copied samples out beside their nearest training samples (black where the
    reference holds embeddings only), every thumbnail padded to one size."""
    similarities = copies.similarities.to(torch.float64).numpy()
    if not any(t is not None for c in copies.shown for t in (c.sample, c.reference)):
        return CopiesGrid(torch.zeros(3, 0, 0, dtype=torch.uint8), [], [], similarities)
    tiles = same_size([t for c in copies.shown for t in (c.sample, c.reference)], fill=0)
    pairs = [tile(tiles[2 * row : 2 * row + 2], nrow=2) for row in range(len(copies.shown))]
    captions = [
        f"similarity {c.similarity:.4f} to training sample {c.reference_index}"
        for c in copies.shown
    ]
    return CopiesGrid(tile(tiles, nrow=2), pairs, captions, similarities)


@dataclass(frozen=True)
class ConditionRows(Picture):
    """The first conditions' samples in one picture: a row per condition, its first samples
    from left to right (blank tiles where a condition has fewer).

    Attributes:
        pixels: ``(3, H, W)`` uint8 tensor on the CPU.
        captions: each row's :func:`caption`, top row first.
    """

    pixels: Tensor
    captions: list[str]

    def csv(self) -> str:
        """``row,caption`` of every row (no caption runs as a formula: :class:`Table`)."""
        return Table(["row", "caption"], [[str(r), c] for r, c in enumerate(self.captions)]).csv()


def condition_rows(
    conditions: ConditionSet,
    rows: Mapping[int, Sequence[Tensor | None]],
    columns: int = GRID_COLUMNS,
) -> ConditionRows:
    """Tile the ``(3, h, w)`` uint8 thumbnails of each condition number in ``rows`` (``None``:
    not shown) in a row of ``columns``, in the mapping's order, every thumbnail padded to one
    size with :data:`~diversity_callbacks.media.picture.PAD_VALUE`.

    Raises:
        ValueError: for no rows, or a row of more than ``columns`` thumbnails.
    """
    if not rows:
        raise ValueError("rows must hold at least one condition's thumbnails, got none")
    longest = max(len(row) for row in rows.values())
    if longest > columns:
        raise ValueError(f"rows must hold at most columns={columns} thumbnails, got {longest}")
    cells = [row[c] if c < len(row) else None for row in rows.values() for c in range(columns)]
    pixels = tile(same_size(cells, fill=PAD_VALUE), nrow=columns)
    return ConditionRows(pixels, [caption(conditions, c) for c in rows])


def caption(evaluation_set: ConditionSet | EvaluationSet, condition: int) -> str:
    """What a condition's grid shows: ``prompt: a red apple``, ``class: 281``, ``all samples``."""
    name = evaluation_set.names[condition]
    return name if evaluation_set.kind == "none" else f"{evaluation_set.kind}: {name}"


def condition_grids(evaluation_set: EvaluationSet, thumbnails: dict[int, Tensor]) -> list[Grid]:
    """One uint8 grid per condition, of its samples among the thumbnails (in sample order)."""
    grids = []
    width = max(2, len(str(evaluation_set.num_conditions - 1)))  # names sort in set order
    for c in range(evaluation_set.num_conditions):
        shown = [thumbnails[i] for i in evaluation_set.sample_indices(c) if i in thumbnails]
        if shown:
            pixels = tile(torch.stack(shown), nrow=min(GRID_COLUMNS, len(shown)))
            name = f"{c:0{width}d}_{slug(evaluation_set.names[c])}"
            grids.append(Grid(c, name, caption(evaluation_set, c), pixels))
    return grids


def slug(text: str, max_length: int = 48) -> str:
    """A file- and tag-safe version of a condition name: ``a red apple!`` -> ``a_red_apple``.

    Examples:
        >>> slug("A photo of a cat / dog, 4k")
        'a_photo_of_a_cat_dog_4k'
    """
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_length] or "condition"


def spectrum_plot(spectrum: Tensor) -> np.ndarray:
    """Render the eigenvalues (descending, log scale) as an (H, W, 3) uint8 image."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "spectrum=True needs matplotlib: pip install 'diversity-callbacks[plot]'"
        ) from error
    figure = Figure(figsize=(4, 3), dpi=100)
    canvas = FigureCanvasAgg(figure)  # no pyplot: no global figure state, no GUI backend
    axes = figure.subplots()
    values = spectrum.detach().cpu().to(torch.float64).numpy()
    axes.semilogy(np.arange(1, len(values) + 1), values, marker=".")
    axes.set_xlabel("index")
    axes.set_ylabel("eigenvalue of K/n")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _text_cell(value: str | float, digits: int) -> str:
    if isinstance(value, str):
        return value
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _markdown_value(value: str | float) -> str:
    return _markdown_cell(value) if isinstance(value, str) else f"{value:.4g}"


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
