"""TensorBoard: scalars, one image per condition's grid, the table as text, the spectrum image.

Tags: ``{prefix}/samples/00_a_red_apple`` (TensorBoard has no captions, so the tag names the
condition), ``{prefix}/table`` (a Markdown table in the Text tab), ``{prefix}/spectrum``, one
image per mode ``{prefix}/modes/mode_01``, ``{prefix}/lost_modes/lost_01``... with its caption
(the share) as a text of the same tag, and ``{prefix}/mode_table`` for text samples; with a
reference set ``{prefix}/copies`` (the side-by-side grid, its similarities under the same tag in
the Text tab) and the histogram ``{prefix}/nn_similarity``.

The images are written as the PNG bytes :mod:`~diversity_callbacks.media.render` encoded, in
the image summary ``SummaryWriter.add_image`` writes, rather than through ``add_image``, which
would encode them again with Pillow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
        _, height, width = grid.pixels.shape
        _add_png(writer, f"{prefix}/samples/{grid.name}", grid.png, height, width, step)
    if media.table is not None:
        writer.add_text(f"{prefix}/table", media.table.markdown(), step)
    if media.spectrum is not None:
        height, width, _ = media.spectrum.shape
        _add_png(writer, f"{prefix}/spectrum", media.spectrum_png or b"", height, width, step)
    if media.copies is not None:
        writer.add_histogram(f"{prefix}/nn_similarity", media.copies.similarities, step)
        if media.copies.pairs:
            _, height, width = media.copies.pixels.shape
            _add_png(writer, f"{prefix}/copies", media.copies.png, height, width, step)
            writer.add_text(f"{prefix}/copies", "\n\n".join(media.copies.captions), step)
    for panel in media.mode_panels:  # no captions in TensorBoard: the share goes in a text
        _, height, width = panel.pixels.shape
        tag = f"{prefix}/{panel.group}/{panel.name}"
        _add_png(writer, tag, panel.png, height, width, step)
        writer.add_text(tag, panel.caption, step)
    if media.mode_table is not None:
        writer.add_text(f"{prefix}/mode_table", media.mode_table.markdown(), step)


def _add_png(writer: Any, tag: str, png: bytes, height: int, width: int, step: int) -> None:
    """What ``add_image`` writes, from PNG bytes: an RGB image summary at ``step``."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
    # The file writer of torch's (and tensorboardX's) SummaryWriter, as add_image uses it.
    writer._get_file_writer().add_summary(
        Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )
