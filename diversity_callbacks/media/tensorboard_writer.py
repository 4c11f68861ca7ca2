"""TensorBoard: scalars, one image per condition's grid, the table as text, the spectrum image.

Tags: ``{prefix}/samples/00_a_red_apple`` (TensorBoard has no captions, so the tag names the
condition), ``{prefix}/table`` (a Markdown table in the Text tab), ``{prefix}/spectrum``, one
image per mode ``{prefix}/modes/mode_01``, ``{prefix}/lost_modes/lost_01``... with its caption
(the share) as a text of the same tag, and ``{prefix}/mode_table`` for text samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from diversity_callbacks.media.render import Media

if TYPE_CHECKING:  # pragma: no cover
    from lightning.pytorch.loggers import TensorBoardLogger


def log_to_tensorboard(
    logger: TensorBoardLogger, scalars: Mapping[str, float], media: Media, step: int
) -> None:
    """Log the scalars, then the media, at ``step`` through the logger's ``SummaryWriter``."""
    logger.log_metrics(dict(scalars), step=step)
    writer, prefix = logger.experiment, media.prefix
    for grid in media.grids:
        writer.add_image(f"{prefix}/samples/{grid.name}", grid.pixels, step, dataformats="CHW")
    if media.table is not None:
        writer.add_text(f"{prefix}/table", media.table.markdown(), step)
    if media.spectrum is not None:
        writer.add_image(f"{prefix}/spectrum", media.spectrum, step, dataformats="HWC")
    for panel in media.mode_panels:  # no captions in TensorBoard: the share goes in a text
        writer.add_image(
            f"{prefix}/{panel.group}/{panel.name}", panel.pixels, step, dataformats="CHW"
        )
        writer.add_text(f"{prefix}/{panel.group}/{panel.name}", panel.caption, step)
    if media.mode_table is not None:
        writer.add_text(f"{prefix}/mode_table", media.mode_table.markdown(), step)
