"""Weights & Biases: the scalars and the media of an evaluation in one history row.

Every W&B log call makes a history row, so the scalars travel with the media in a single
``log_metrics`` call, at ``trainer/global_step`` as ``WandbLogger.log_image`` puts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from diversity_callbacks.media.render import SPECTRUM_CAPTION, Media

if TYPE_CHECKING:  # pragma: no cover
    from lightning.pytorch.loggers import WandbLogger


def log_to_wandb(
    logger: WandbLogger, scalars: Mapping[str, float], media: Media, step: int
) -> None:
    """Log ``{prefix}/samples`` (captioned grids), ``/table``, ``/spectrum``, the mode grids
    (``/modes``, ``/lost_modes``, ``/gained_modes``, captioned with their shares) or
    ``/mode_table`` with the scalars."""
    import wandb

    prefix = media.prefix
    row: dict[str, Any] = dict(scalars)
    images = {g.condition: wandb.Image(g.hwc(), caption=g.caption) for g in media.grids}
    if images:
        row[f"{prefix}/samples"] = list(images.values())
    if media.table is not None:
        kind, *scores = media.table.columns
        data = [
            [name, images.get(c), *values] for c, (name, *values) in enumerate(media.table.rows)
        ]
        row[f"{prefix}/table"] = wandb.Table(columns=[kind, "samples", *scores], data=data)
    if media.spectrum is not None:
        row[f"{prefix}/spectrum"] = wandb.Image(media.spectrum, caption=SPECTRUM_CAPTION)
    for panel in media.mode_panels:  # {prefix}/modes, /lost_modes, /gained_modes
        image = wandb.Image(panel.hwc(), caption=panel.caption)
        row.setdefault(f"{prefix}/{panel.group}", []).append(image)
    if media.mode_table is not None:
        row[f"{prefix}/mode_table"] = wandb.Table(
            columns=media.mode_table.columns, data=media.mode_table.rows
        )
    logger.log_metrics(row, step=step)
