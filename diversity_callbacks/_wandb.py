"""Weights & Biases media of one diversity evaluation: sample grids, a per-prompt table, a spectrum.

Only imported when a ``WandbLogger`` is attached, so wandb (and matplotlib, for the spectrum)
stay optional. Every image is handed to wandb as uint8: wandb >= 0.31 saves float images black.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diversity_callbacks.images import make_grid

GRID_COLUMNS = 8
"""Samples per row of a prompt's grid."""


def wandb_media(
    *,
    prefix: str,
    prompts: Sequence[str],
    samples_per_prompt: int,
    thumbnails: dict[int, Tensor],
    per_prompt: Tensor | None,
    per_prompt_keys: Sequence[str],
    spectrum: Tensor | None,
) -> dict[str, Any]:
    """The media entries of one history row, keyed ``{prefix}/samples``, ``/table``, ``/spectrum``.

    Args:
        prefix: first part of the keys.
        prompts: the evaluation prompts; prompt ``p`` owns samples ``p * samples_per_prompt``
            onwards.
        samples_per_prompt: samples drawn per prompt.
        thumbnails: uint8 ``(3, H, W)`` images by sample index (may cover only the first prompts).
        per_prompt: ``(P, K)`` per-prompt Vendi scores, or None.
        per_prompt_keys: the order names of its K columns (``"q1"``...).
        spectrum: normalised eigenvalues for the spectrum plot, or None.
    """
    import wandb

    media: dict[str, Any] = {}
    grids = _prompt_grids(prompts, samples_per_prompt, thumbnails)
    images = {p: wandb.Image(_hwc(grid), caption=prompts[p]) for p, grid in grids.items()}
    if images:
        media[f"{prefix}/samples"] = list(images.values())
    if images or per_prompt is not None:
        columns = ["prompt", "samples"] + [f"vendi_{key}" for key in per_prompt_keys]
        rows = []
        for p, prompt in enumerate(prompts):
            scores = [] if per_prompt is None else [float(v) for v in per_prompt[p]]
            rows.append([prompt, images.get(p), *scores])
        media[f"{prefix}/table"] = wandb.Table(columns=columns, data=rows)
    if spectrum is not None:
        media[f"{prefix}/spectrum"] = wandb.Image(
            spectrum_plot(spectrum), caption="eigenvalues of K/n"
        )
    return media


def _prompt_grids(
    prompts: Sequence[str], samples_per_prompt: int, thumbnails: dict[int, Tensor]
) -> dict[int, Tensor]:
    """One uint8 grid per prompt whose samples are all among the thumbnails."""
    grids = {}
    for p in range(len(prompts)):
        indices = range(p * samples_per_prompt, (p + 1) * samples_per_prompt)
        if all(i in thumbnails for i in indices):
            batch = torch.stack([thumbnails[i] for i in indices])
            grids[p] = make_grid(batch, nrow=min(GRID_COLUMNS, samples_per_prompt))
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
            "log_spectrum=True needs matplotlib: pip install 'diversity-callbacks[plot]'"
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
