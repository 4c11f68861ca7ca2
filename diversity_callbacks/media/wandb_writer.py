"""Weights & Biases: the scalars and the media of an evaluation in one history row.

Every W&B log call makes a history row, so the scalars travel with the media in a single
``log_metrics`` call, at ``trainer/global_step`` as ``WandbLogger.log_image`` puts them. The
images go to W&B as the PNG files :mod:`~diversity_callbacks.media.render` encoded: W&B copies a
file it is given by path, where an array would be encoded again by Pillow, 8x slower.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diversity_callbacks.media.render import SPECTRUM_CAPTION, Media

if TYPE_CHECKING:  # pragma: no cover
    from lightning.pytorch.loggers import WandbLogger


def log_to_wandb(
    logger: WandbLogger, scalars: Mapping[str, float], media: Media, step: int
) -> None:
    """Log ``{prefix}/samples`` (captioned grids), ``/table``, ``/spectrum``, the mode grids
    (``/modes``, ``/lost_modes``, ``/gained_modes``, captioned with their shares) or
    ``/mode_table``, and with a reference set ``/copies`` (one captioned image per
    sample-training pair) and the histogram ``/nn_similarity``, with the scalars."""
    import wandb

    prefix = media.prefix
    row: dict[str, Any] = dict(scalars)
    # W&B copies the files into the run (and the table's artifact) while logging: after
    # log_metrics returns, the folder may go.
    with tempfile.TemporaryDirectory() as folder:

        def image(name: str, png: bytes, caption: str) -> Any:
            path = Path(folder) / f"{name}.png"
            path.write_bytes(png)
            return wandb.Image(str(path), caption=caption)

        images = {g.condition: image(g.name, g.png, g.caption) for g in media.grids}
        if images:
            row[f"{prefix}/samples"] = list(images.values())
        if media.table is not None:
            kind, *scores = media.table.columns
            data = [
                [name, images.get(c), *values] for c, (name, *values) in enumerate(media.table.rows)
            ]
            row[f"{prefix}/table"] = wandb.Table(columns=[kind, "samples", *scores], data=data)
        if media.spectrum_png is not None:
            row[f"{prefix}/spectrum"] = image("spectrum", media.spectrum_png, SPECTRUM_CAPTION)
        if media.copies is not None:
            row[f"{prefix}/nn_similarity"] = wandb.Histogram(media.copies.similarities)
            if media.copies.pairs:
                row[f"{prefix}/copies"] = [
                    wandb.Image(pair.permute(1, 2, 0).numpy(), caption=caption)
                    for pair, caption in zip(media.copies.pairs, media.copies.captions, strict=True)
                ]
        for panel in media.mode_panels:  # {prefix}/modes, /lost_modes, /gained_modes
            shown = image(f"{panel.group}_{panel.name}", panel.png, panel.caption)
            row.setdefault(f"{prefix}/{panel.group}", []).append(shown)
        if media.mode_table is not None:
            row[f"{prefix}/mode_table"] = wandb.Table(
                columns=media.mode_table.columns, data=media.mode_table.rows
            )
        logger.log_metrics(row, step=step)
