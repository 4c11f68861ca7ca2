"""The memorization scores as an evaluator plug-in, with the most-copied samples to show.

Besides the scores of :class:`~diversity_callbacks.metrics.memorization.MemorizationScore`, an
evaluation keeps, on each rank, small thumbnails of the ``shown`` samples closest to a training
sample so far (a running top list, so that no rank holds every sample's image); at ``compute``
rank 0 gathers them, keeps the overall top ``shown`` and puts each beside its nearest training
sample: :class:`CopiedSamples`, which the media turn into a side-by-side grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.metrics import EmbeddedBatch, EvaluationMetric, MetricValues
from diversity_callbacks.evaluation.reference import ReferenceSet, shrink_to_uint8
from diversity_callbacks.evaluation.samples import SampleEmbedder
from diversity_callbacks.functional.memorization import MEMORIZATION_KEYS
from diversity_callbacks.metrics.memorization import MemorizationScore
from diversity_callbacks.utilities import distributed


@dataclass
class CopiedSample:
    """One generated sample beside its nearest training sample.

    Attributes:
        similarity: their cosine similarity.
        reference_index: the training sample's row in the reference set.
        sample: uint8 ``(3, h, w)`` thumbnail of the generated sample.
        reference: uint8 thumbnail of the training sample; None for an embeddings reference.
    """

    similarity: float
    reference_index: int
    sample: Tensor
    reference: Tensor | None = None


@dataclass
class CopiedSamples:
    """What one evaluation found against the reference set (on rank 0 for ``shown``).

    Attributes:
        similarities: ``(n,)`` float64: every sample's nearest-neighbour similarity, by sample.
        nearest: ``(n,)`` long: every sample's nearest training row.
        threshold: the copy rate's threshold.
        shown: the most-copied samples, most similar first (images only).
    """

    similarities: Tensor
    nearest: Tensor
    threshold: float
    shown: list[CopiedSample] = field(default_factory=list)


class MemorizationPlugin(EvaluationMetric):
    """The memorization scores against ``reference`` and the most-copied samples.

    Args:
        reference: the reference set, embedded already.
        embeddings: its ``(m, D)`` embeddings.
        images: whether the samples are images (thumbnails are then kept).
        value_range: of the reference's samples, for their thumbnails.
        shown: how many most-copied samples to keep for the grid.
        thumbnail_size: longest side of a thumbnail.
        options: keyword arguments of :class:`MemorizationScore`.
    """

    def __init__(
        self,
        reference: ReferenceSet,
        embeddings: Tensor,
        *,
        images: bool,
        value_range: str | None,
        shown: int = 16,
        thumbnail_size: int = 64,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        inputs = ("embeddings", "samples") if images else ("embeddings",)
        metric = MemorizationScore(embeddings, **dict(options or {}))
        super().__init__(metric, inputs=inputs, logs=MEMORIZATION_KEYS)
        self.reference = reference
        self.value_range = value_range
        self.shown = shown
        self.thumbnail_size = thumbnail_size
        self._top: list[tuple[float, int, Tensor]] = []  # (similarity, nearest row, thumbnail)

    def update(self, batch: EmbeddedBatch) -> None:
        self.metric.update(batch.embeddings)
        if batch.samples is None or not self.shown:
            return
        similarities = self.metric.similarity[-1].tolist()
        nearest = self.metric.index[-1].tolist()
        # Only rows that enter the running top list get a thumbnail.
        floor = self._top[-1][0] if len(self._top) >= self.shown else -float("inf")
        rows = [i for i, s in enumerate(similarities) if s > floor]
        rows = sorted(rows, key=lambda i: -similarities[i])[: self.shown]
        if rows:
            thumbnails = shrink_to_uint8(batch.samples[rows], self.thumbnail_size)
            new = [(similarities[i], nearest[i], thumbnails[n]) for n, i in enumerate(rows)]
            self._top = sorted(self._top + new, key=lambda row: -row[0])[: self.shown]

    def compute(self, name: str) -> MetricValues:
        scores = self.metric.compute()
        values = MetricValues(scalars={key: float(value) for key, value in scores.items()})
        values.copies = CopiedSamples(
            self.metric.nearest_similarities, self.metric.nearest_indices, self.metric.threshold
        )
        if "samples" in self.inputs:  # the same on every rank: the gather is collective
            rank, _ = distributed.rank_and_world_size()
            gathered = distributed.gather_to_rank_zero({rank: self._top})
            if rank == 0:
                every = [row for part in sorted(gathered) for row in gathered[part]]
                top = sorted(every, key=lambda row: -row[0])[: self.shown]
                values.copies.shown = [
                    CopiedSample(
                        s,
                        j,
                        thumbnail,
                        self.reference.thumbnail(j, self.value_range, self.thumbnail_size),
                    )
                    for s, j, thumbnail in top
                ]
        return values

    def reset(self) -> None:
        super().reset()
        self._top = []

    def to(self, device: torch.device) -> None:
        self.metric.to(device)


@dataclass
class MemorizationSetup:
    """An evaluator's memorization scores before the reference set is embedded.

    Attributes:
        reference: the training samples (embedded at the first ``plugin``).
        options: keyword arguments of :class:`MemorizationScore`.
        shown: how many most-copied samples to keep for the grid.
        thumbnail_size: longest side of their thumbnails.
    """

    reference: ReferenceSet
    options: dict[str, Any]
    shown: int = 16
    thumbnail_size: int = 64

    def plugin(
        self, sample_embedder: SampleEmbedder, device: torch.device, progress: bool
    ) -> MemorizationPlugin:
        """The memorization scores against the reference, embedded here by ``sample_embedder``
        (once, then cached), on ``device``."""
        value_range = sample_embedder.value_range
        with torch.inference_mode(False), torch.no_grad():
            embeddings = self.reference.embeddings(sample_embedder, device, progress)
        plugin = MemorizationPlugin(
            self.reference,
            embeddings,
            images=value_range is not None,
            value_range=value_range,
            shown=self.shown,
            thumbnail_size=self.thumbnail_size,
            options=self.options,
        )
        plugin.to(device)
        return plugin
