"""Memorization against a training set as a torchmetrics metric: copy rate, L2-memorization,
authenticity and the nearest-neighbour similarities, streamed batch by batch, exact under DDP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from diversity_callbacks.functional.memorization import (
    ken_novelty,
    memorization_scores,
    nearest_neighbours,
    unit_moment,
    unit_rows,
)
from diversity_callbacks.functional.novelty import check_eta
from diversity_callbacks.utilities.checks import check_positive, check_positive_int

DEFAULT_COPY_THRESHOLD = 0.95
"""Nearest-neighbour cosine similarity from which a sample counts as a copy (measured in
docs/metrics.md, "Memorization against the training set")."""

_STATES = {  # name -> (dtype, trailing shape given k)
    "similarity": (torch.float64, lambda k: ()),
    "distances": (torch.float64, lambda k: (k,)),
    "index": (torch.long, lambda k: ()),
    "reference_distance": (torch.float64, lambda k: ()),
}


class MemorizationScore(Metric):
    r"""How close the samples come to a training set: copy rate, L2-memorization, authenticity.

    Each ``update`` finds every sample's nearest training samples (chunked cosine search, see
    :mod:`~diversity_callbacks.functional.memorization`) and keeps, per sample, its nearest
    neighbour's similarity and index, its ``k`` nearest distances and its neighbour's own
    nearest-other-neighbour distance (computed once per training row, when first needed: never
    the full ``m x m`` matrix). The per-sample rows are gathered across DDP ranks in rank order,
    so every rank computes the same scores as one process would.

    Args:
        reference: ``(m, D)`` embeddings of the training samples (in the samples' space).
        threshold: nearest-neighbour cosine similarity from which a sample is a copy.
        quantiles: of the nearest-neighbour similarities, in ``[0, 1]``.
        k: training neighbours of the calibrated l2 distance (at most ``m``; fewer training
            samples use them all).
        alpha: calibration constant of the calibrated l2 distance.
        delta: a sample whose calibrated l2 distance is below it counts as memorized.
        chunk_size: samples per similarity block (memory ``chunk_size x m``); default fits
            256 MiB.
        novelty_eta: KEN's weight of the training set in ``C_gen - eta C_ref``.
        search_dtype: dtype of the search (float32: the speed of a bare ``matmul``).
        kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> reference = torch.eye(4)
        >>> metric = MemorizationScore(reference, k=2)
        >>> metric.update(torch.tensor([[1.0, 0, 0, 0], [-1.0, -0.5, -1.0, -1.0]]))
        >>> scores = metric.compute()
        >>> float(scores["copy_rate"]), float(scores["authenticity"])
        (0.5, 0.5)
        >>> metric.nearest_indices  # a copy of row 0; a sample far from all, nearest row 1
        tensor([0, 1])
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        reference: Tensor,
        *,
        threshold: float = DEFAULT_COPY_THRESHOLD,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        k: int = 50,
        alpha: float = 0.5,
        delta: float = 1 / 3,
        chunk_size: int | None = None,
        search_dtype: torch.dtype = torch.float32,
        novelty_eta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
            raise ValueError(
                f"`threshold` must be a cosine similarity in [-1, 1], got {threshold!r}"
            )
        self.threshold = float(threshold)
        self.quantiles = tuple(float(q) for q in quantiles)
        if not self.quantiles or not all(0 <= q <= 1 for q in self.quantiles):
            raise ValueError(
                f"`quantiles` must be a non-empty sequence in [0, 1], got {quantiles!r}"
            )
        self.alpha = check_positive(alpha, "alpha")
        self.delta = check_positive(delta, "delta")
        self.chunk_size = (
            None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        )
        unit = unit_rows(reference, "reference", search_dtype)
        self.k = min(check_positive_int(k, "k"), unit.shape[0])
        self.register_buffer("reference", unit, persistent=False)
        # Each training row's distance to its nearest other row, filled as rows become some
        # sample's neighbour; kept across resets (the reference does not change).
        nan = torch.full((unit.shape[0],), float("nan"), dtype=torch.float64)
        self.register_buffer("reference_nn_distance", nan, persistent=False)
        self.novelty_eta = check_eta(novelty_eta)
        # KEN novelty: the training set's cosine covariance once; the samples' as a float64 sum,
        # summed across ranks (exact whatever the split).
        self.register_buffer("reference_moment", unit_moment(reference), persistent=False)
        dim = unit.shape[1]
        moment = torch.zeros(dim, dim, dtype=torch.float64)
        self.add_state("sample_moment", default=moment, dist_reduce_fx="sum")
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._add_empty_rows()
        self.nearest_similarities: Tensor | None = None
        """``(n,)`` float64: each sample's nearest-neighbour similarity, after ``compute``
        (every rank's samples, in rank order)."""
        self.nearest_indices: Tensor | None = None
        """``(n,)`` long: each sample's nearest training row, after ``compute``."""

    def _add_empty_rows(self) -> None:
        # A rank that saw no sample still gathers a (0, ...) tensor of the right dtype and
        # shape: an empty list state crashes torchmetrics' gather (see NOTES).
        for name, (dtype, shape) in _STATES.items():
            getattr(self, name).append(
                torch.zeros((0, *shape(self.k)), dtype=dtype, device=self.device)
            )

    def reset(self) -> None:
        super().reset()
        self._add_empty_rows()

    def update(self, embeddings: Tensor) -> None:
        """Add ``(B, D)`` sample embeddings."""
        found = nearest_neighbours(
            embeddings.to(self.reference.device), self.reference, self.k, chunk_size=self.chunk_size
        )
        nearest = found.indices[:, 0]
        self.sample_moment += unit_moment(embeddings.to(self.reference.device))
        self.similarity.append(found.similarities[:, 0])
        self.distances.append(found.distances)
        self.index.append(nearest)
        self.reference_distance.append(self._reference_distances(nearest))

    def _reference_distances(self, rows: Tensor) -> Tensor:
        """Distance of each training row in ``rows`` to its nearest other training row."""
        cache = self.reference_nn_distance
        missing = torch.unique(rows[torch.isnan(cache[rows])])
        if missing.numel() and self.reference.shape[0] == 1:
            cache[missing] = float("inf")  # no other row: no sample can be closer than it
        elif missing.numel():
            found = nearest_neighbours(
                self.reference[missing],
                self.reference,
                1,
                chunk_size=self.chunk_size,
                exclude=missing,
            )
            cache[missing] = found.distances[:, 0]
        return cache[rows]

    def compute(self) -> dict[str, Tensor]:
        """The scores over every rank's samples (a collective: call it on all ranks).

        Returns:
            float64 scalars: ``copy_rate``, ``nn_similarity_mean``, ``nn_similarity_q50``...,
            ``l2_memorization``, ``authenticity``, and the KEN novelty against the training set
            (``novel_mass``, ``ken_novelty``).
        """
        similarity = dim_zero_cat(self.similarity)
        if similarity.numel() == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update() with sample embeddings first"
            )
        self.nearest_similarities = similarity.cpu()
        self.nearest_indices = dim_zero_cat(self.index).cpu()
        scores = memorization_scores(
            similarity,
            dim_zero_cat(self.distances),
            dim_zero_cat(self.reference_distance),
            threshold=self.threshold,
            quantiles=self.quantiles,
            alpha=self.alpha,
            delta=self.delta,
        )
        mass, score = ken_novelty(self.sample_moment, self.reference_moment, self.novelty_eta)
        scores["novel_mass"] = torch.tensor(mass, dtype=torch.float64)
        scores["ken_novelty"] = torch.tensor(score, dtype=torch.float64)
        return scores
