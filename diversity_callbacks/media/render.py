"""What one evaluation shows, rendered once for every logger: grids, the table, the spectrum.

Nothing here imports a logging library: the writers (:mod:`~diversity_callbacks.media.writers`)
turn a :class:`Media` into W&B, TensorBoard or MLflow calls, or into files. Every image is uint8
RGB, the one format all of them accept unchanged.
"""

from __future__ import annotations

import csv
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diversity_callbacks.evaluation.conditions import EvaluationSet
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.images import make_grid
from diversity_callbacks.media.modes import TABLE_COLUMNS, ModePanel, mode_panels, mode_table_rows

GRID_COLUMNS = 8
"""Samples per row of a condition's grid."""

SPECTRUM_CAPTION = "eigenvalues of K/n"


@dataclass(frozen=True)
class Grid:
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

    def hwc(self) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 array that image libraries expect."""
        return self.pixels.permute(1, 2, 0).contiguous().numpy()


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

    def csv(self) -> str:
        """The table as CSV text, with a header row."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([csv_cell(column) for column in self.columns])
        writer.writerows([csv_cell(cell) for cell in row] for row in self.rows)
        return buffer.getvalue()

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
class Media:
    """Everything an evaluation shows besides its scalars, ready for any logger.

    Attributes:
        prefix: the evaluator's key prefix (``"diversity"``); every tag and key starts with it.
        grids: one grid per condition that has thumbnails, in condition order.
        table: per-condition scores, for prompts and classes (None when unconditional or empty).
        spectrum: the eigenvalue plot as an ``(H, W, 3)`` uint8 array, when asked for.
        mode_panels: one grid per mode (leading, lost, gained), when the samples are images.
        mode_table: the top items of each mode, when the samples are texts.
    """

    prefix: str
    grids: list[Grid]
    table: Table | None
    spectrum: np.ndarray | None
    mode_panels: list[ModePanel] = field(default_factory=list)
    mode_table: Table | None = None


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
    return Media(evaluator.prefix, grids, table, spectrum, mode_panels(result), mode_table)


def caption(evaluation_set: EvaluationSet, condition: int) -> str:
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
            pixels = make_grid(torch.stack(shown), nrow=min(GRID_COLUMNS, len(shown))).cpu()
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


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG, with the standard library alone.

    Examples:
        >>> png_bytes(np.zeros((2, 2, 3), dtype=np.uint8))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    # Each scanline starts with filter type 0 (none); zlib does the compressing.
    scanlines = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(image))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(scanlines)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
        for tag, data in chunks
    )


def _markdown_value(value: str | float) -> str:
    return _markdown_cell(value) if isinstance(value, str) else f"{value:.4g}"


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
