"""Send one evaluation to the trainer's loggers: the one place that maps a logger to its writer.

A writer logs the scalars *and* the media of one evaluation to one logger (W&B needs both in one
call). A logger without a writer (``CSVLogger``, say) gets the scalars alone; ``media_dir`` writes
the media as files for any logger. Adding a logger type is one function and one entry in
:data:`WRITERS` (or one :func:`register_writer` call from user code).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.media.folder import step_folder, write_media_folder
from diversity_callbacks.media.mlflow_writer import log_to_mlflow
from diversity_callbacks.media.render import Media, render_media
from diversity_callbacks.media.tensorboard_writer import log_to_tensorboard
from diversity_callbacks.media.wandb_writer import log_to_wandb

MediaWriter = Callable[[Logger, Mapping[str, float], Media, int], None]
"""``writer(logger, scalars, media, step)``: log one evaluation's scalars and media at ``step``."""

WRITERS: dict[type[Logger], MediaWriter] = {
    WandbLogger: log_to_wandb,
    TensorBoardLogger: log_to_tensorboard,
    MLFlowLogger: log_to_mlflow,
}
"""Logger class -> its media writer; subclasses of a listed class use its writer."""


def register_writer(logger_type: type[Logger], writer: MediaWriter) -> None:
    """Send the media of every evaluation to loggers of ``logger_type`` through ``writer``.

    Args:
        logger_type: a Lightning ``Logger`` subclass (its own subclasses are included).
        writer: ``writer(logger, scalars, media, step)``; it logs the scalars too.
    """
    if not (isinstance(logger_type, type) and issubclass(logger_type, Logger)):
        raise TypeError(f"`logger_type` must be a Logger subclass, got {logger_type!r}")
    if not callable(writer):
        raise TypeError(f"`writer` must be callable, got {type(writer).__name__}")
    WRITERS[logger_type] = writer


def writer_for(logger: Logger) -> MediaWriter | None:
    """The writer of the closest registered class of ``logger``, or None."""
    return next((WRITERS[cls] for cls in type(logger).__mro__ if cls in WRITERS), None)


def wants_media(loggers: Sequence[Logger], media_dir: str | os.PathLike | None) -> bool:
    """Whether some logger has a media writer or files are written: then thumbnails are worth
    gathering. Depends only on the logger types, so every rank agrees (the gather is collective)."""
    return media_dir is not None or any(writer_for(logger) is not None for logger in loggers)


def publish(
    loggers: Sequence[Logger],
    evaluator: DiversityEvaluator,
    result: EvaluationResult,
    step: int,
    *,
    media_dir: str | os.PathLike | None = None,
) -> None:
    """Log an evaluation's scalars and media to every logger at ``step``; call it on rank 0 only.

    Args:
        loggers: the trainer's loggers.
        evaluator: the evaluator that produced ``result`` (its conditions and prefix).
        result: the evaluation, with its thumbnails when :func:`wants_media` said so.
        step: the x-axis value of every logger.
        media_dir: also write the media under ``media_dir/step_{step:06d}/``.
    """
    writers = [writer_for(logger) for logger in loggers]
    media = None
    if media_dir is not None or any(writers):
        media = render_media(evaluator, result)  # once, whatever the number of loggers
    for logger, writer in zip(loggers, writers, strict=True):
        if writer is None or media is None:
            logger.log_metrics(dict(result.scalars), step=step)
        else:
            writer(logger, result.scalars, media, step)
        logger.save()
    if media_dir is not None and media is not None:
        write_media_folder(Path(media_dir) / step_folder(step), media)
