"""Vendi score (Friedman & Dieng, TMLR 2023) and its order-q family ("Cousins of the Vendi Score").

``VS_q = exp(H_q(lambda))`` with ``lambda`` the eigenvalues of ``K / n`` for a similarity kernel
with unit diagonal. For kernels with an explicit feature map the eigenvalues come from the smaller
of the n x n Gram matrix and the D x D second moment: same numbers, less work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import (
    ROW_BLOCK,
    FeatureMap,
    KernelSpec,
    ResolvedKernel,
    resolve_kernel,
    second_moment,
)
from diversity_callbacks.functional.spectrum import (
    Order,
    check_tolerance,
    normalized_spectrum,
    parse_orders,
    vendi_orders,
)
from diversity_callbacks.utilities.checks import check_features


def vendi_score(
    features: Tensor,
    q: Order | Sequence[Order] = 1.0,
    kernel: KernelSpec | None = None,
    *,
    sigma: float | None = None,
    num_features: int | None = None,
    seed: int = 0,
    feature_map: FeatureMap | None = None,
    tolerance: float | None = None,
) -> Tensor | dict[str, Tensor]:
    """Vendi score of a set of samples given their (N, D) features.

    Args:
        features: (N, D) floating tensor, one row per sample.
        q: order >= 0, ``float("inf")`` or ``"inf"``; or a sequence of orders.
        kernel: ``"cosine"`` (default), ``"linear"``, ``"gaussian"`` or a kernel callable
            ``k(X, Y)``; see :func:`~diversity_callbacks.functional.kernels.resolve_kernel`.
        sigma: Gaussian bandwidth, ``k = exp(-|x - y|^2 / (2 sigma^2))``.
        num_features: with ``kernel="gaussian"``, approximate it with this many seeded random
            Fourier frequencies (2 * num_features features) instead of computing it exactly.
        seed: seed of the random Fourier frequencies.
        feature_map: explicit feature map ``phi(X)``; the kernel is then ``phi(x) . phi(y)``.
        tolerance: relative eigenvalue tolerance, see
            :func:`~diversity_callbacks.functional.spectrum.normalized_spectrum`.

    Returns:
        A float64 scalar tensor in [1, N], or a dict ``{"q1": ..., "qinf": ...}`` when ``q`` is a
        sequence.

    Examples:
        >>> import torch
        >>> from diversity_callbacks.functional import vendi_score
        >>> round(vendi_score(torch.eye(4)).item(), 6)  # four orthonormal samples
        4.0
        >>> scores = vendi_score(torch.ones(5, 3), q=[1, "inf"])  # five identical samples
        >>> {key: round(value.item(), 6) for key, value in scores.items()}
        {'q1': 1.0, 'qinf': 1.0}
    """
    orders, as_dict = parse_orders(q)
    check_tolerance(tolerance)
    check_features(features)
    if features.shape[0] == 0:
        raise ValueError("`features` must have at least one row, got shape (0, D)")
    resolved = resolve_kernel(
        kernel, sigma=sigma, num_features=num_features, seed=seed, feature_map=feature_map
    )
    spectrum = kernel_spectrum(features, resolved, tolerance=tolerance)
    return vendi_orders(spectrum, orders, as_dict)


def vendi_score_from_kernel(
    kernel_matrix: Tensor,
    q: Order | Sequence[Order] = 1.0,
    *,
    tolerance: float | None = None,
) -> Tensor | dict[str, Tensor]:
    """Vendi score of a precomputed (N, N) similarity matrix.

    The eigenvalues are those of ``K / tr(K)``, which is ``K / n`` for a kernel with unit
    diagonal, as the definition asks.

    Args:
        kernel_matrix: (N, N) symmetric positive semi-definite similarity matrix.
        q: order or sequence of orders, as in :func:`vendi_score`.
        tolerance: relative eigenvalue tolerance.

    Examples:
        >>> import torch
        >>> from diversity_callbacks.functional import vendi_score_from_kernel
        >>> round(vendi_score_from_kernel(torch.eye(3, dtype=torch.float64), q=2).item(), 6)
        3.0
    """
    orders, as_dict = parse_orders(q)
    if not isinstance(kernel_matrix, Tensor) or kernel_matrix.ndim != 2:
        raise ValueError(
            f"`kernel_matrix` must be a 2-D (N, N) tensor, got {type(kernel_matrix).__name__} "
            f"with shape {tuple(getattr(kernel_matrix, 'shape', ()))}"
        )
    if kernel_matrix.shape[0] != kernel_matrix.shape[1]:
        raise ValueError(f"`kernel_matrix` must be square, got shape {tuple(kernel_matrix.shape)}")
    if not bool(torch.isfinite(kernel_matrix).all()):
        raise ValueError("`kernel_matrix` must be finite, got NaN or Inf entries")
    spectrum = normalized_spectrum(kernel_matrix, tolerance=tolerance)
    return vendi_orders(spectrum, orders, as_dict)


def kernel_spectrum(
    features: Tensor, kernel: ResolvedKernel, *, tolerance: float | None = None
) -> Tensor:
    """Normalised eigenvalues of ``K / tr(K)`` for the samples' kernel matrix, descending.

    With a feature map and more than :data:`~diversity_callbacks.functional.kernels.ROW_BLOCK`
    rows, the D x D moment is accumulated block by block, one block of float64 features at a
    time (with more features than rows the Gram matrix would be the smaller eigenproblem, but
    it needs every row's features at once).
    """
    if kernel.kernel_function is not None:
        matrix = kernel.matrix(features)
        return normalized_spectrum(matrix, tolerance=tolerance, assume_symmetric=kernel.symmetric)
    if features.shape[0] <= ROW_BLOCK:
        return feature_spectrum(kernel.features(features), tolerance=tolerance)
    moment = kernel.moment(features)
    return normalized_spectrum(moment, tolerance=tolerance, assume_symmetric=True)


def feature_spectrum(phi: Tensor, *, tolerance: float | None = None) -> Tensor:
    """Spectrum of ``phi phi^T`` from the smaller of the Gram matrix and the second moment."""
    phi = phi.to(torch.float64)
    gram = second_moment(phi.T if phi.shape[0] <= phi.shape[1] else phi)
    return normalized_spectrum(gram, tolerance=tolerance, assume_symmetric=True)
