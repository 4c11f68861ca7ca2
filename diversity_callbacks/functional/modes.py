"""The leading modes of a sample set: the top eigenvectors of its kernel covariance.

Each eigenvector ``v`` of the kernel covariance ``C = sum_i phi(x_i) phi(x_i)^T / trace`` is a
mode of the samples (FKEA, Ospanov et al. NeurIPS 2024; RKE mode counting, Jalali et al. NeurIPS
2023): its eigenvalue, an eigenvalue of ``K / n`` for a kernel with unit diagonal, is the mode's
share of the samples, and the samples with the largest loading ``phi(x_i) . v`` show what the
mode is. The eigenvalues are the ones whose entropy is the Vendi score, so the modes explain the
score: ``n`` equal shares give ``VS = n``.

Two routes, as for the Vendi score:

- a kernel with an explicit feature map (cosine, linear, random Fourier features): ``C`` is the
  D x D float64 second moment over its trace. It is a sum, so it streams and sums across ranks
  (:class:`KernelMoments`), and every rank computes the loadings of its own samples;
- a kernel function (the exact Gaussian): the n x n matrix ``K``, whose eigenvectors ``u`` give
  the same loadings as ``sqrt(lambda) u_i`` (``lambda`` the eigenvalue of ``K``).

A direction's sign is arbitrary; it is chosen so that the loadings sum to a positive number (the
mode is where the samples are, as FKEA does it), from the first moment ``sum_i phi(x_i)``, which
sums across ranks like the second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import KernelArgument, as_kernel
from diversity_callbacks.functional.kernels import second_moment as _second_moment
from diversity_callbacks.functional.spectrum import default_tolerance
from diversity_callbacks.utilities.checks import check_features, check_positive_int

DEFAULT_TOP = 16
"""Samples kept per mode: enough for a 4 x 4 grid."""


@dataclass(frozen=True)
class Mode:
    """One mode of a sample set.

    Attributes:
        share: the mode's eigenvalue: its share of the samples (an eigenvalue of ``K / n``), or
            for a novel mode (:mod:`~diversity_callbacks.functional.novelty`) its novel mass.
        samples: ``(top,)`` long: indices of the samples that load most on the mode, largest
            loading first (for an evaluation: indices into its evaluation set, so the seed and
            the condition of each are known).
        loadings: ``(top,)`` float64: those samples' loadings ``phi(x_i) . v``.
    """

    share: float
    samples: Tensor
    loadings: Tensor


@dataclass
class KernelMoments:
    """Sums over samples of ``phi phi^T`` (D x D) and ``phi`` (D), in float64.

    Sums, so they stream batch by batch and sum across DDP ranks (``+`` or an all-reduce of
    both tensors): the covariance of all samples is then ``second / trace(second)``.
    """

    second: Tensor
    first: Tensor

    @classmethod
    def of(cls, phi: Tensor) -> KernelMoments:
        """The moments of (N, D) kernel features."""
        phi = phi.to(torch.float64)
        return cls(_second_moment(phi), phi.sum(0))

    def __add__(self, other: KernelMoments) -> KernelMoments:
        return KernelMoments(self.second + other.second, self.first + other.first)

    @property
    def covariance(self) -> Tensor:
        """The (D, D) kernel covariance normalised to trace 1: its eigenvalues are shares."""
        trace = torch.trace(self.second)
        if not bool(trace > 0):
            raise ValueError(
                "the kernel covariance is zero (no samples, or all-zero kernel features): its "
                "modes are undefined"
            )
        return self.second / trace


def descending_eigh(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix, in float64."""
    matrix = matrix.to(torch.float64)
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return values.flip(0), vectors.flip(1)


RITZ_TOLERANCE = 1e-11
"""Largest residual ``|M v - lambda v|`` (relative to the largest ``|lambda|``) an eigenvector
from subspace iteration may keep; a larger one falls back to a full ``eigh``."""


def extreme_eigenvectors(
    matrix: Tensor, values: Tensor, largest: int, smallest: int = 0
) -> tuple[Tensor, Tensor]:
    """Eigenvectors of the ``largest`` and the ``smallest`` eigenvalues of a symmetric matrix.

    The spectrum alone (``eigvalsh``) is a third of a full ``eigh`` and the modes need only a
    few vectors, so they come from a seeded subspace iteration when ``values`` predict that it
    converges in fewer matrix products than the matrix has columns, checked afterwards (Ritz
    values equal to ``values``, residuals below :data:`RITZ_TOLERANCE`); otherwise, or when
    the check fails, from ``eigh``.

    Args:
        matrix: (D, D) symmetric, float64.
        values: (D,) its eigenvalues, descending.
        largest: how many vectors of the largest eigenvalues.
        smallest: how many of the smallest (most negative first).

    Returns:
        ``(D, largest)`` and ``(D, smallest)`` vectors (columns), unoriented.
    """
    matrix = (matrix + matrix.T) / 2
    found = _subspace_vectors(matrix, values, largest, smallest)
    if found is None:
        vectors = descending_eigh(matrix)[1]
        found = vectors[:, :largest], vectors.flip(1)[:, :smallest]
    return found


def _block_size(values: Tensor, largest: int, smallest: int) -> tuple[int, int] | None:
    """``(block, iterations)`` of the cheapest subspace iteration that resolves the wanted
    eigenvectors to round-off, or None when it would cost more than ``eigh``."""
    dim = values.shape[0]
    magnitudes = values.abs()
    wanted = torch.cat([torch.arange(largest), dim - 1 - torch.arange(smallest)])
    order = torch.argsort(magnitudes, descending=True, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(dim)
    need = int(position[wanted].max()) + 1  # the block reaches the smallest wanted |value|
    weakest = float(magnitudes[wanted].min())
    ranked = magnitudes[order]
    best: tuple[int, int] | None = None
    for block in range(need, min(dim, need + 32)):
        ratio = float(ranked[block]) / weakest  # convergence factor per product
        if ratio >= 1:
            continue
        iterations = 2 + (1 if ratio == 0 else math.ceil(math.log(1e-13) / math.log(ratio)))
        if iterations * block <= dim and (best is None or iterations * block < best[0] * best[1]):
            best = (block, iterations)
    return best


def _subspace_vectors(
    matrix: Tensor, values: Tensor, largest: int, smallest: int
) -> tuple[Tensor, Tensor] | None:
    """The wanted eigenvectors by seeded subspace iteration and Rayleigh-Ritz, None when the
    spectrum says it would be slow or the result misses :data:`RITZ_TOLERANCE`."""
    if largest + smallest == 0:
        return matrix[:, :0], matrix[:, :0]
    plan = _block_size(values, largest, smallest)
    if plan is None:
        return None
    block, iterations = plan
    generator = torch.Generator(device=matrix.device).manual_seed(0)
    start = torch.randn(
        matrix.shape[0], block, generator=generator, dtype=matrix.dtype, device=matrix.device
    )
    basis = torch.linalg.qr(start).Q
    for _ in range(iterations):
        basis = torch.linalg.qr(matrix @ basis).Q
    ritz, rotation = torch.linalg.eigh(basis.T @ matrix @ basis)
    vectors = basis @ rotation  # ascending Ritz values
    top = vectors.flip(1)[:, :largest]
    bottom = vectors[:, :smallest]
    chosen = torch.cat([top, bottom], 1)
    expected = torch.cat([values[:largest], values.flip(0)[:smallest]])
    got = torch.cat([ritz.flip(0)[:largest], ritz[:smallest]])
    scale = float(values.abs().max())
    residual = (matrix @ chosen - chosen * expected).norm(dim=0)
    if bool((residual > RITZ_TOLERANCE * scale).any()) or bool(
        ((got - expected).abs() > RITZ_TOLERANCE * scale).any()
    ):
        return None
    return top, bottom


def descending_eigvalsh(matrix: Tensor) -> Tensor:
    """Eigenvalues (descending) of a symmetric matrix, in float64."""
    matrix = matrix.to(torch.float64)
    return torch.linalg.eigvalsh((matrix + matrix.T) / 2).flip(0)


def leading_directions(
    matrix: Tensor, num_modes: int, first: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The largest eigenvalues of a symmetric PSD matrix and their eigenvectors, oriented.

    Args:
        matrix: (D, D) symmetric PSD: a trace-1 kernel covariance (or kernel matrix).
        num_modes: keep at most this many.
        first: (D,) first moment, as for :func:`keep_leading`.

    Returns:
        ``(values (k,), vectors (D, k))``, largest value first, ``k <= num_modes``.
    """
    return keep_leading(matrix, descending_eigvalsh(matrix), num_modes, first)


def keep_leading(
    matrix: Tensor,
    values: Tensor,
    num_modes: int,
    first: Tensor | None = None,
    threshold: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The first ``num_modes`` eigenpairs of a PSD matrix with descending eigenvalues
    ``values``, oriented.

    Eigenvalues at or below ``D * eps`` times the largest (round-off of zero) are dropped, as
    for the Vendi score's spectrum, and so are those below ``threshold`` (modes nobody is shown
    need no vector). ``first``: (D,) first moment: each eigenvector's sign is chosen so that
    ``first . v >= 0`` (the loadings of the set sum to >= 0); ``None``: its largest entry is
    positive.
    """
    check_positive_int(num_modes, "num_modes")
    floor = default_tolerance(values.shape[0]) * float(values[0])
    keep = min(num_modes, int(((values > floor) & (values >= threshold)).sum()))
    vectors = extreme_eigenvectors(matrix.to(torch.float64), values, keep)[0]
    return values[:keep], orient(vectors, first)


def orient(vectors: Tensor, first: Tensor | None) -> Tensor:
    """Flip each column ``v`` so that ``first . v >= 0`` (or its largest entry is > 0)."""
    if first is not None:
        sums = first.to(vectors) @ vectors
    else:
        sums = vectors.gather(0, vectors.abs().argmax(0, keepdim=True)).flatten()
    return vectors * torch.where(sums < 0, -1.0, 1.0).to(vectors)


def top_samples(loadings: Tensor, indices: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """The ``top`` samples of each mode by loading, largest first (ties: lower index first).

    Args:
        loadings: (N, k) loadings of N samples on k modes.
        indices: (N,) the samples' indices.
        top: samples kept per mode (fewer when N is smaller).

    Returns:
        ``(indices (k, t), loadings (k, t))`` with ``t = min(top, N)``. Taking the top of the
        tops of several ranks gives the top of all their samples.
    """
    indices = indices.to(loadings.device, torch.long)
    keep = min(top, loadings.shape[0])
    # A stable sort of the indices, then of the loadings: equal loadings stay in index order.
    by_index = torch.argsort(indices, stable=True)
    columns = loadings[by_index].T
    order = torch.argsort(columns, dim=1, descending=True, stable=True)[:, :keep]
    return indices[by_index][order], columns.gather(1, order)


def as_modes(shares: Tensor, samples: Tensor, loadings: Tensor) -> list[Mode]:
    """:class:`Mode` objects from the shares (the first k are used) and the top samples and
    loadings (k, t) of k modes."""
    return [
        Mode(float(shares[row]), samples[row].cpu(), loadings[row].cpu())
        for row in range(samples.shape[0])
    ]


def kernel_modes(kernel_matrix: Tensor, num_modes: int) -> tuple[Tensor, Tensor]:
    """Shares and loadings of the leading modes from an (n, n) kernel matrix.

    Returns:
        ``(shares (k,), loadings (n, k))``: the eigenvalues of ``K / trace(K)`` and each
        sample's loading ``sqrt(lambda) u_i`` (``lambda``, ``u`` of ``K``), which equals
        ``phi(x_i) . v`` for any feature map of the kernel.
    """
    trace = torch.trace(kernel_matrix)
    ones = kernel_matrix.new_ones(kernel_matrix.shape[0])
    values, vectors = leading_directions(kernel_matrix / trace, num_modes, ones)
    return values, vectors * (values * trace).sqrt()


def leading_modes(
    features: Tensor,
    num_modes: int = 8,
    *,
    top: int = DEFAULT_TOP,
    indices: Tensor | Sequence[int] | None = None,
    kernel: KernelArgument = None,
    **deprecated: Any,
) -> list[Mode]:
    """The leading modes of a sample set, largest share first.

    Args:
        features: (N, d) features (embeddings), one row per sample.
        num_modes: how many modes (fewer when the kernel's rank is smaller).
        top: samples kept per mode.
        indices: (N,) what to call the samples in :attr:`Mode.samples`; default ``0..N-1``.
        kernel: a :class:`~diversity_callbacks.functional.Kernel`, its text (``"cosine"``, the
            default) or a kernel callable.
        deprecated: the 0.1 kernel arguments, with a ``FutureWarning``.

    Returns:
        A list of :class:`Mode`; the shares are eigenvalues of ``K / n`` (they sum to 1 over
        all modes, and their entropy is ``log VS_1``).

    Examples:
        >>> x = torch.eye(3, dtype=torch.float64)[[0, 0, 0, 1, 2, 2]]
        >>> [(round(m.share, 3), m.samples[:2].tolist()) for m in leading_modes(x, 2, top=2)]
        [(0.5, [0, 1]), (0.333, [4, 5])]
    """
    check_features(features)
    check_positive_int(top, "top")
    indices = sample_indices(indices, features.shape[0])
    resolved = as_kernel(kernel, deprecated, "leading_modes").resolve()
    if resolved.feature_map is None:
        shares, loadings = kernel_modes(resolved.matrix(features), num_modes)
    else:
        phi = resolved.features(features)
        moments = KernelMoments.of(phi)
        shares, vectors = leading_directions(moments.covariance, num_modes, moments.first)
        loadings = phi @ vectors
    return as_modes(shares, *top_samples(loadings, indices, top))


def sample_indices(indices: Tensor | Sequence[int] | None, rows: int) -> Tensor:
    """The samples' names: ``0..rows-1`` by default, else ``rows`` integers."""
    if indices is None:
        return torch.arange(rows)
    indices = torch.as_tensor(indices)
    if indices.shape != (rows,) or indices.is_floating_point():
        raise ValueError(
            f"`indices` must be {rows} integers (one per row of the features), got "
            f"{indices.dtype} of shape {tuple(indices.shape)}"
        )
    return indices.long()


__all__ = [
    "DEFAULT_TOP",
    "KernelMoments",
    "Mode",
    "as_modes",
    "descending_eigh",
    "keep_leading",
    "kernel_modes",
    "leading_directions",
    "leading_modes",
    "orient",
    "sample_indices",
    "top_samples",
]
