"""Memorization: how close each sample is to its nearest training sample, and what share copies.

A fine-tune on a handful of images (DreamBooth, LoRA) can learn to return its training images;
diversity scores do not see it, since twenty varied copies are as diverse as twenty varied new
images. What does see it is each sample's **nearest training neighbour** in the embedding
space. Every score here is a function of those neighbours:

- ``nn_similarity``: the cosine similarity of a sample to its nearest training sample; its mean
  and quantiles, and the **copy rate**, the share of samples above a similarity ``threshold``;
- the **L2-memorization** share (the calibrated l2 distance of Carlini et al., USENIX Security
  2023): a sample whose nearest training sample is much closer than its ``k`` nearest ones on
  average, ``d_1 / (alpha * mean(d_1..d_k)) < delta``, counts as memorized;
- **authenticity** (Alaa et al., ICML 2022, as dgm-eval computes it): a sample is authentic
  when it lies farther from its nearest training sample ``j`` than ``j`` lies from its own
  nearest other training sample; the share of authentic samples;
- **KEN novelty** against the training set (Zhang et al., ICML 2024): the positive part of
  ``C_gen - eta C_ref``, the samples' and the training set's cosine-kernel covariances (trace
  1): its mass is the share of the samples in directions the training set lacks (what the
  model draws that is not in the training data), its KEN score that mass times the entropy of
  the novel eigenvalues (:mod:`~diversity_callbacks.functional.novelty`).

Distances are Euclidean between unit-normalised rows (``d^2 = 2 - 2 cos``), so that one search
serves every score; for an embedder that already returns unit vectors (CLIP) they are the plain
Euclidean distances dgm-eval uses.

**Cost.** The search is a chunked matrix product: ``chunk_size`` samples at a time against the
whole reference, so memory is ``O(chunk_size * m + m * D)`` and never ``n * m``. It runs in the
reference's dtype (float32 by default: the speed of a bare ``matmul`` + ``max``) into one
block reused for every chunk. It only narrows the candidates: per row, the columns within the
search's rounding error of its ``k``-th largest similarity (found from segment maxima, not a
``topk`` over the block). Their similarities and distances are recomputed in float64 from the
pairs alone, so the neighbours are those of a float64 search (ties to the lower row) and do not
depend on how samples were chunked or split across ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from diversity_callbacks.utilities.checks import check_features, check_positive_int

SEARCH_BYTES = 1 << 28
"""Bytes of the similarity block of one search chunk (256 MiB): the default ``chunk_size`` is
the number of samples whose similarities to the whole reference fit in it."""

MEMORIZATION_KEYS = (
    "copy_rate",
    "nn_similarity_mean",
    "nn_similarity_q50",
    "nn_similarity_q90",
    "nn_similarity_q99",
    "l2_memorization",
    "authenticity",
    "novel_mass",
    "ken_novelty",
)
"""The keys :class:`~diversity_callbacks.MemorizationScore` logs at its default quantiles."""

PAIR_BYTES = 1 << 21
"""Bytes of the float64 rows gathered at once to recompute the chosen neighbours' values:
pieces that stay in a core's cache (5x faster at m = 100k than pieces of 32 MiB)."""

SEGMENT = 32
"""Columns of the similarity block per segment. A row's ``k``-th largest segment maximum is a
lower bound on its ``k``-th largest similarity, so only the segments that reach it (less the
search's rounding error) are searched further: an ``amax`` pass over the block instead of a
``topk`` over it (a fifth of the time at m = 100k)."""


@dataclass(frozen=True)
class NearestNeighbours:
    """Each sample's ``k`` nearest reference rows, nearest first.

    Attributes:
        similarities: ``(n, k)`` float64 cosine similarities.
        distances: ``(n, k)`` float64 Euclidean distances between the unit-normalised rows.
        indices: ``(n, k)`` long: row numbers in the reference.
    """

    similarities: Tensor
    distances: Tensor
    indices: Tensor


def unit_rows(features: Tensor, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """Check ``features`` (``(N, D)``, finite, no zero row) and divide each row by its norm.

    Args:
        features: the rows.
        name: the argument's name in error messages.
        dtype: of the result; default that of ``features``.
    """
    check_features(features, name)
    norms = torch.linalg.vector_norm(features.to(torch.float64), dim=1, keepdim=True)
    if bool((norms == 0).any()):
        row = int(torch.nonzero(norms.flatten() == 0)[0])
        raise ValueError(f"`{name}` must have no zero row (its cosine is undefined), row {row} is")
    return (features.to(torch.float64) / norms).to(dtype or features.dtype)


def default_chunk_size(num_reference: int, element_bytes: int = 4) -> int:
    """Samples per search chunk: as many as keep the ``chunk x m`` block within SEARCH_BYTES."""
    return max(1, SEARCH_BYTES // (element_bytes * max(1, num_reference)))


def search_error(dim: int, dtype: torch.dtype) -> float:
    """A bound on ``|searched - float64 cosine|`` of a unit query and a unit reference row.

    The search rounds the query to ``dtype`` (relative error ``u`` a component) and sums
    ``dim`` products (at most ``dim * u`` of ``sum |q_i r_i| <= 1`` in any order, with or
    without FMA: Higham's gamma). Doubled for the slack of rows normalised in ``dtype`` (norms
    1 within a few ``u``) and of the float64 recomputation. A half-precision search of many
    dimensions gets 2: every column stays a candidate.

    Examples:
        >>> f"{search_error(512, torch.float32):.2e}"
        '6.13e-05'
    """
    terms = (dim + 2) * torch.finfo(dtype).eps / 2
    return 2.0 if terms >= 0.5 else 2 * terms / (1 - terms)


@contextmanager
def _full_precision_products() -> Iterator[None]:
    """float32 products at full precision (no TF32 or bfloat16), which ``search_error``
    assumes; the caller's setting is restored (left alone when it is already "highest")."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def nearest_neighbours(
    samples: Tensor,
    reference: Tensor,
    k: int = 1,
    *,
    chunk_size: int | None = None,
    exclude: Tensor | None = None,
) -> NearestNeighbours:
    """The ``k`` nearest reference rows of every sample by cosine similarity, chunked.

    Exact in float64: the neighbours, their order and their values are those of a float64
    search of every pair (ties go to the lower reference row), whatever the search's dtype.
    The search's block only narrows the candidates to those within its rounding error
    (:func:`search_error`) of each row's ``k``-th largest, which are then recomputed in
    float64 from the pairs.

    Args:
        samples: ``(n, D)`` embeddings (normalised here).
        reference: ``(m, D)`` unit rows (see :func:`unit_rows`); the search runs in its dtype.
        k: neighbours per sample, at most ``m`` (``m - 1`` with ``exclude``).
        chunk_size: samples per similarity block; default :func:`default_chunk_size`.
        exclude: ``(n,)`` long: a reference row that sample ``i`` may not take (its own row,
            when the samples are reference rows: a training sample's nearest *other* one).

    Returns:
        The :class:`NearestNeighbours`, values recomputed in float64 from the pairs.

    Examples:
        >>> reference = unit_rows(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), "r")
        >>> found = nearest_neighbours(torch.tensor([[2.0, 0.1]]), reference, k=2)
        >>> found.indices
        tensor([[0, 2]])
        >>> found.similarities.round(decimals=4)
        tensor([[0.9988, 0.7415]], dtype=torch.float64)
    """
    check_features(samples, "samples", dim=reference.shape[1])
    k = check_positive_int(k, "k")
    available = reference.shape[0] - (exclude is not None)
    if k > available:
        raise ValueError(
            f"`k` must be at most the number of reference rows to choose from ({available}), "
            f"got {k}"
        )
    if exclude is not None and exclude.shape != (samples.shape[0],):
        raise ValueError(
            f"`exclude` must be ({samples.shape[0]},), got shape {tuple(exclude.shape)}"
        )
    size = chunk_size or default_chunk_size(reference.shape[0], reference.element_size())
    size = check_positive_int(size, "chunk_size")
    queries = unit_rows(samples, "samples", torch.float64).to(reference.device)
    search = _Search(reference, k, min(size, queries.shape[0]))
    parts = [search.neighbours(queries, start, exclude) for start in range(0, len(queries), size)]
    if not parts:
        empty = queries.new_zeros((0, k))
        return NearestNeighbours(empty, empty, empty.long())
    return NearestNeighbours(*(torch.cat(values) for values in zip(*parts, strict=True)))


class _Search:
    """One search's reused similarity block and its candidate selection, chunk by chunk."""

    def __init__(self, reference: Tensor, k: int, rows: int) -> None:
        self.reference, self.k = reference, k
        m = reference.shape[0]
        # At least k whole segments, so that k segment maxima exist (one excluded column
        # empties a segment only when segments are single columns, and then m - 1 >= k).
        self.width = max(1, min(SEGMENT, m // k))
        padded = -(-m // self.width) * self.width
        # One block for every chunk (no page faults of a fresh block per chunk); the padding
        # columns stay -inf, so that the block reshapes into whole segments.
        self.block = reference.new_empty((rows, padded))
        self.block[:, m:] = float("-inf")
        self.margin = 2 * search_error(reference.shape[1], reference.dtype)

    def neighbours(
        self, queries: Tensor, start: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """float64 similarities, distances and indices of the ``k`` nearest rows of the chunk
        of ``queries`` (and of ``exclude``) from ``start``."""
        queries = queries[start : start + self.block.shape[0]]
        if exclude is not None:
            exclude = exclude[start : start + self.block.shape[0]].to(queries.device)
        valid, columns = self._candidates(queries, exclude)
        similarities, distances = _pair_values(queries, self.reference, columns)
        # Padding slots rank last; a stable sort of candidates kept in column order gives
        # tied rows the lower index first.
        similarities.masked_fill_(~valid, float("-inf"))
        order = similarities.argsort(dim=1, descending=True, stable=True)[:, : self.k]
        return similarities.gather(1, order), distances.gather(1, order), columns.gather(1, order)

    def _candidates(self, queries: Tensor, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(rows, c)`` slots of the columns that can be among a row's ``k`` nearest in
        float64, in column order, padded (``False`` in the mask) to the longest row."""
        n, m = queries.shape[0], self.reference.shape[0]
        block = self.block[:n]
        with _full_precision_products():
            torch.mm(queries.to(self.reference.dtype), self.reference.T, out=block[:, :m])
        if exclude is not None:
            block[torch.arange(n, device=block.device), exclude] = float("-inf")
        tops = block.view(n, -1, self.width).amax(dim=2)
        # k searched values reach the k-th segment maximum, so the k-th float64 one is at
        # least that less the error, and any of the k nearest is searched within 2 errors.
        floor = tops.topk(self.k, dim=1).values[:, -1:] - self.margin
        row, segment = torch.nonzero(tops >= floor, as_tuple=True)
        offsets = torch.arange(self.width, device=block.device)
        columns = segment[:, None] * self.width + offsets
        hits = block[row[:, None], columns] >= floor[row]
        row, columns = row[:, None].expand_as(hits)[hits], columns[hits]
        counts = torch.bincount(row, minlength=n)
        slot = torch.arange(row.shape[0], device=row.device) - (counts.cumsum(0) - counts)[row]
        longest = int(counts.max())
        padded = columns.new_zeros((n, longest))
        padded[row, slot] = columns
        valid = torch.zeros((n, longest), dtype=torch.bool, device=row.device)
        valid[row, slot] = True
        return valid, padded


def _pair_values(queries: Tensor, reference: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """float64 cosine and Euclidean distance of each (query, chosen reference row) pair."""
    n, k = indices.shape
    rows = max(1, PAIR_BYTES // (8 * max(1, k) * reference.shape[1]))
    similarities, distances = [], []
    for start in range(0, n, rows):
        part = indices[start : start + rows]
        chosen = reference.index_select(0, part.flatten()).to(torch.float64)
        chosen = chosen.view(*part.shape, -1)  # (rows, k, D)
        query = queries[start : start + rows, None, :]
        # Clamped: rows normalised in the search's dtype give cosines a few ulps past 1.
        similarities.append((chosen * query).sum(dim=2).clamp_(-1.0, 1.0))
        # Differences, not sqrt(2 - 2 cos): a copy's distance (~1e-8) keeps its digits.
        distances.append(torch.linalg.vector_norm(chosen.sub_(query), dim=2))
    empty = queries.new_zeros((0, k))
    return torch.cat(similarities or [empty]), torch.cat(distances or [empty])


def copy_rate(similarities: Tensor, threshold: float) -> Tensor:
    """Share of samples whose nearest-neighbour similarity is at least ``threshold`` (float64).

    Examples:
        >>> copy_rate(torch.tensor([1.0, 0.99, 0.5, 0.2]), threshold=0.95)
        tensor(0.5000, dtype=torch.float64)
    """
    return (similarities >= threshold).to(torch.float64).mean()


def calibrated_l2(distances: Tensor, alpha: float = 0.5) -> Tensor:
    """Carlini et al.'s calibrated l2 distance ``d_1 / (alpha * mean(d_1..d_k))`` per sample.

    Args:
        distances: ``(n, k)`` float64 distances to the ``k`` nearest reference rows, nearest
            first.
        alpha: the calibration constant.

    Returns:
        ``(n,)`` float64; an exact copy gives 0. Where all ``k`` distances are 0 (a copy of a
        row repeated ``k`` times) it is 0 too.
    """
    mean = distances.mean(dim=1)
    return torch.where(mean > 0, distances[:, 0] / (alpha * mean.clamp(min=1e-300)), 0.0)


def l2_memorization(distances: Tensor, alpha: float = 0.5, delta: float = 1 / 3) -> Tensor:
    """Share of samples whose calibrated l2 distance (:func:`calibrated_l2`) is below ``delta``.

    Examples:
        >>> d = torch.tensor([[0.0, 1.0, 1.0], [0.9, 1.0, 1.1]], dtype=torch.float64)
        >>> l2_memorization(d)  # the copy (0 < 1/3); not the second (0.9 / (0.5 * 1) = 1.8)
        tensor(0.5000, dtype=torch.float64)
    """
    return (calibrated_l2(distances, alpha) < delta).to(torch.float64).mean()


def authenticity(distances: Tensor, reference_distances: Tensor) -> Tensor:
    """Share of authentic samples: farther from their nearest training sample ``j`` than ``j``
    is from its own nearest other training sample (Alaa et al. 2022, as dgm-eval decides it).

    Args:
        distances: ``(n,)`` each sample's distance to its nearest reference row ``j``.
        reference_distances: ``(n,)`` the distance of that ``j`` to its nearest other row.

    Examples:
        >>> authenticity(torch.tensor([0.0, 0.5, 0.3]), torch.tensor([0.2, 0.2, 0.4]))
        tensor(0.3333, dtype=torch.float64)
    """
    return (reference_distances < distances).to(torch.float64).mean()


def unit_moment(rows: Tensor, chunk_rows: int = 4096) -> Tensor:
    """``sum x x^T`` (float64, ``(D, D)``) of the unit-normalised rows, chunk by chunk: the
    cosine kernel's covariance up to its trace (the number of rows)."""
    moment = rows.new_zeros((rows.shape[1], rows.shape[1]), dtype=torch.float64)
    for start in range(0, rows.shape[0], chunk_rows):
        unit = unit_rows(rows[start : start + chunk_rows], "rows", torch.float64)
        moment += unit.T @ unit
    return moment


def ken_novelty(
    sample_moment: Tensor, reference_moment: Tensor, eta: float = 1.0
) -> tuple[float, float]:
    """KEN novelty of the samples against the training set: ``(mass, score)`` of the positive
    part of ``C_gen - eta C_ref`` (each moment normalised to trace 1 here).

    Args:
        sample_moment: ``(D, D)`` ``sum x x^T`` of the samples' unit rows (:func:`unit_moment`).
        reference_moment: the same of the training set.
        eta: weight of the training set: a direction is novel where the samples' share exceeds
            ``eta`` times the training set's.

    Examples:
        >>> e = torch.eye(4, dtype=torch.float64)
        >>> samples, train = unit_moment(e), unit_moment(e[[0, 1]])
        >>> [round(v, 4) for v in ken_novelty(samples, train)]  # half off it, in 2 modes: ln 2 / 2
        [0.5, 0.3466]
    """
    from diversity_callbacks.functional.novelty import covariance_novelty, ken_score

    a = sample_moment / sample_moment.trace()
    b = reference_moment / reference_moment.trace()
    positive, _ = covariance_novelty(a, b, eta, 1, None)
    return ken_score(positive)


def quantile_key(q: float) -> str:
    """``nn_similarity_q50`` for 0.5, ``..._q99`` for 0.99, ``..._q999`` for 0.999."""
    digits = f"{q:.6f}".split(".")[1].rstrip("0") or "0"
    return f"nn_similarity_q{digits.ljust(2, '0')}"


def memorization_scores(
    similarities: Tensor,
    distances: Tensor,
    reference_distances: Tensor,
    *,
    threshold: float,
    quantiles: Sequence[float] = (0.5, 0.9, 0.99),
    alpha: float = 0.5,
    delta: float = 1 / 3,
) -> dict[str, Tensor]:
    """Every memorization score of a set of samples, from their nearest neighbours.

    Args:
        similarities: ``(n,)`` float64 nearest-neighbour cosine similarities.
        distances: ``(n, k)`` float64 distances to the ``k`` nearest reference rows.
        reference_distances: ``(n,)`` each nearest row's distance to its own nearest other row.
        threshold: the copy rate's similarity threshold.
        quantiles: of the similarities, each logged as ``nn_similarity_q50``...
        alpha: calibration constant of the L2-memorization share.
        delta: threshold of the calibrated l2 distance.

    Returns:
        float64 scalars: ``copy_rate``, ``nn_similarity_mean``, one ``nn_similarity_q..`` per
        quantile, ``l2_memorization`` and ``authenticity`` (shares in [0, 1]).
    """
    if similarities.numel() == 0:
        raise ValueError("memorization scores need at least one sample, got none")
    values = torch.quantile(
        similarities, torch.tensor(quantiles, dtype=torch.float64).to(similarities.device)
    )
    return {
        "copy_rate": copy_rate(similarities, threshold),
        "nn_similarity_mean": similarities.mean(),
        **{quantile_key(q): value for q, value in zip(quantiles, values, strict=True)},
        "l2_memorization": l2_memorization(distances, alpha, delta),
        "authenticity": authenticity(distances[:, 0], reference_distances),
    }
