"""Media of a diversity evaluation for every logger: grids, the per-condition table, the spectrum.

The data path: :func:`~diversity_callbacks.media.render.render_media` turns an
:class:`~diversity_callbacks.EvaluationResult` into a :class:`Media` (uint8 grids, a table, a
spectrum image; no logging library imported), then :func:`publish` hands it to one writer per
logger (:data:`~diversity_callbacks.media.loggers.WRITERS`: W&B, TensorBoard, MLflow) and to
``media_dir`` as files. A logger without a writer gets the scalars alone.
"""

from __future__ import annotations

from diversity_callbacks.media.folder import write_media_folder
from diversity_callbacks.media.loggers import (
    WRITERS,
    MediaWriter,
    publish,
    register_writer,
    wants_media,
    writer_for,
)
from diversity_callbacks.media.render import Grid, Media, Table, render_media

__all__ = [
    "WRITERS",
    "Grid",
    "Media",
    "MediaWriter",
    "Table",
    "publish",
    "register_writer",
    "render_media",
    "wants_media",
    "write_media_folder",
    "writer_for",
]
