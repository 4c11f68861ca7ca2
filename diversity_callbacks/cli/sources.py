"""This process's batches of one run: its share of a folder's images, decoded in DataLoader
workers, or of an embeddings file's rows, with the embedder that reads them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from diversity_callbacks.cli.discovery import Run
from diversity_callbacks.cli.errors import InputError
from diversity_callbacks.cli.options import EmbedderOptions, ScaleOptions, decoding_workers


@dataclass
class Source:
    """This rank's batches of one run, and how the evaluator reads them.

    Attributes:
        run: the run (for an embeddings file, with the file's prompts).
        batches: ``(samples, condition_ids)`` pairs, this rank's share.
        embedder: what embeds the samples (the image embedder, or a pass-through one).
        value_range: ``"uint8"`` for images, None for embeddings.
        rows: samples in the whole run, every rank's.
        total: this rank's batches, for the progress bar.
        skipped: images left out so far, with the reason (the run's, then those that failed
            to decode).
        current: image files of the batch last read (to name a batch that fails to embed).
    """

    run: Run
    batches: Iterator[Any]
    embedder: Any
    value_range: str | None
    rows: int
    total: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    current: list[str] = field(default_factory=list)


def read_source(
    run: Run, image_embedder: Any, options: EmbedderOptions, scale: ScaleOptions
) -> Source:
    """This rank's batches of ``run`` (an image folder or an embeddings file)."""
    if run.is_embeddings:
        return embedding_source(run, options.batch_size)
    return image_source(run, image_embedder, options, scale)


def share(total: int) -> range:
    """This rank's contiguous share of ``total`` items, split as the evaluator splits a
    sampling plan (:func:`~diversity_callbacks.evaluation.conditions.share_of`)."""
    from diversity_callbacks.evaluation.conditions import share_of
    from diversity_callbacks.utilities import distributed

    return share_of(total, *distributed.rank_and_world_size())


def image_source(run: Run, embedder: Any, options: EmbedderOptions, scale: ScaleOptions) -> Source:
    """This rank's share of a folder's images, decoded in DataLoader workers."""
    from diversity_callbacks.cli.loading import image_batches

    mine = share(len(run.files))
    ids = run.condition_ids or [0] * len(run.files)
    source = Source(run, iter(()), embedder, "uint8", len(run.files), 0, list(run.skipped))
    source.batches = image_batches(
        run.files[mine.start : mine.stop],
        ids[mine.start : mine.stop],
        batch_size=options.batch_size,
        workers=decoding_workers(options.workers, len(mine)),
        skip=scale.skip,
        skipped=source.skipped,
        conditional=bool(run.prompts),
        run=run.name,
        current=source.current,
    )
    source.total = math.ceil(len(mine) / options.batch_size)  # one more per extra image size
    return source


def embedding_source(run: Run, batch_size: int) -> Source:
    """This rank's share of an embeddings file, and the run with the file's prompts."""
    from diversity_callbacks.cli.loading import load_embeddings

    data = load_embeddings(run.path)
    embeddings = data.embeddings
    if data.prompts is not None:
        numbers: dict[str, int] = {}
        ids = [numbers.setdefault(p, len(numbers)) for p in data.prompts]
        run = dataclasses.replace(run, prompts=list(numbers), condition_ids=ids)
    mine = share(embeddings.shape[0])
    ids_tensor = torch.tensor(run.condition_ids, dtype=torch.long) if run.condition_ids else None

    def batches() -> Iterator[Any]:
        for start in range(mine.start, mine.stop, batch_size):
            stop = min(start + batch_size, mine.stop)
            yield embeddings[start:stop], None if ids_tensor is None else ids_tensor[start:stop]

    total = math.ceil(len(mine) / batch_size)
    embedder = _precomputed_embedder(run, data)
    return Source(run, batches(), embedder, None, embeddings.shape[0], total, list(run.skipped))


def _precomputed_embedder(run: Run, data: Any) -> Any:
    """The pass-through embedder of a file's rows, embedding prompts from the file's
    ``text_embeddings`` when it has them."""
    from diversity_callbacks.embedders.precomputed import (
        PrecomputedEmbedder,
        PrecomputedTextEmbedder,
    )

    if data.text_embeddings is None:
        return PrecomputedEmbedder()
    where = f"embeddings file {str(run.path)!r} key 'text_embeddings'"
    try:
        return PrecomputedTextEmbedder(data.prompts, data.text_embeddings, where)
    except ValueError as error:  # rows of one prompt that disagree: the file's fault
        raise InputError(str(error)) from None
