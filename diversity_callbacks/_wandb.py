"""Weights & Biases media of one diversity evaluation: sample grids, a per-prompt table, a spectrum.

Only imported when a ``WandbLogger`` is attached, so wandb (and matplotlib, for the spectrum)
stay optional. Every image is handed to wandb as uint8: wandb >= 0.31 saves float images black.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from diversity_callbacks.evaluation.conditions import EvaluationSet
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.images import make_grid

GRID_COLUMNS = 8
"""Samples per row of a prompt's grid."""


def wandb_media(evaluator: DiversityEvaluator, result: EvaluationResult) -> dict[str, Any]:
    """The media entries of one history row, keyed ``{prefix}/samples``, ``/table``, ``/spectrum``.

    Args:
        evaluator: the evaluator that produced ``result`` (its conditions and prefix).
        result: the evaluation: thumbnails (possibly of the first conditions only), the
            per-condition columns and the spectrum.
    """
    import wandb

    prefix, evaluation_set = evaluator.prefix, evaluator.evaluation_set
    media: dict[str, Any] = {}
    grids = condition_grids(evaluation_set, result.thumbnails)
    images = {
        c: wandb.Image(_hwc(grid), caption=caption(evaluation_set, c)) for c, grid in grids.items()
    }
    if images:
        media[f"{prefix}/samples"] = list(images.values())
    if evaluation_set.is_conditional and (images or result.per_condition):
        columns = [evaluation_set.kind, "samples", *result.per_condition]
        rows = []
        for c, name in enumerate(evaluation_set.names):
            scores = [float(column[c]) for column in result.per_condition.values()]
            rows.append([name, images.get(c), *scores])
        media[f"{prefix}/table"] = wandb.Table(columns=columns, data=rows)
    if result.spectrum is not None:
        media[f"{prefix}/spectrum"] = wandb.Image(
            spectrum_plot(result.spectrum), caption="eigenvalues of K/n"
        )
    return media


def caption(evaluation_set: EvaluationSet, condition: int) -> str:
    """What a condition's grid shows: ``prompt: a red apple``, ``class: 281``, ``all samples``."""
    name = evaluation_set.names[condition]
    return name if evaluation_set.kind == "none" else f"{evaluation_set.kind}: {name}"


def condition_grids(evaluation_set: EvaluationSet, thumbnails: dict[int, Tensor]) -> dict[int, Tensor]:
    """One uint8 grid per condition, of its samples among the thumbnails (in sample order)."""
    grids = {}
    for c in range(evaluation_set.num_conditions):
        shown = [thumbnails[i] for i in evaluation_set.sample_indices(c) if i in thumbnails]
        if shown:
            grids[c] = make_grid(torch.stack(shown), nrow=min(GRID_COLUMNS, len(shown)))
    return grids


def _hwc(image: Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor -> (H, W, 3) uint8 array, the layout wandb.Image expects."""
    return image.permute(1, 2, 0).contiguous().cpu().numpy()


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
