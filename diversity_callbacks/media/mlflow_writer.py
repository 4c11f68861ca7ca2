"""MLflow: scalars as metrics, the media as artifacts under ``{prefix}/step_000120/``.

The artifacts are the files of :func:`~diversity_callbacks.media.folder.write_media_folder`
(PNG grids, ``table.csv``, ``spectrum.png``), uploaded in one ``log_artifacts`` call: MLflow's
UI previews PNG and CSV, and neither PIL nor pandas is needed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from diversity_callbacks.media.folder import step_folder, write_media_folder
from diversity_callbacks.media.render import Media

if TYPE_CHECKING:  # pragma: no cover
    from lightning.pytorch.loggers import MLFlowLogger


def log_to_mlflow(
    logger: MLFlowLogger, scalars: Mapping[str, float], media: Media, step: int
) -> None:
    """Log the scalars at ``step``, then upload the media folder of this step to the run."""
    logger.log_metrics(dict(scalars), step=step)
    with tempfile.TemporaryDirectory() as folder:
        if write_media_folder(Path(folder), media):
            artifact_path = f"{media.prefix}/{step_folder(step)}"
            logger.experiment.log_artifacts(logger.run_id, folder, artifact_path=artifact_path)
