"""Vendi score (Friedman & Dieng, TMLR 2023) and its order-q family ("Cousins of the Vendi Score").

``VS_q = exp(H_q(lambda))`` with ``lambda`` the eigenvalues of ``K / n`` for a similarity kernel
with unit diagonal. For kernels with an explicit feature map the eigenvalues come from the smaller
of the n x n Gram matrix and the D x D second moment: same numbers, less work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import (
    ROW_BLOCK,
    KernelArgument,
    ResolvedKernel,
    as_kernel,
    check_columns,
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
    kernel: KernelArgument = None,
    *,
    tolerance: float | None = None,
    **deprecated: Any,
) -> Tensor | dict[str, Tensor]:
    """Vendi score of a set of samples given their (N, D) features.

    Args:
        features: (N, D) floating tensor, one row per sample.
        q: order >= 0, ``float("inf")`` or ``"inf"``; or a sequence of orders.
        kernel: a :class:`~diversity_callbacks.functional.Kernel`, its text (``"cosine"``, the
            default; ``"linear"``; ``"gaussian:sigma=3.5,features=2048"``) or a kernel callable
            ``k(X, Y)``.
        tolerance: relative eigenvalue tolerance, see
            :func:`~diversity_callbacks.functional.spectrum.normalized_spectrum`.
        deprecated: the 0.1 kernel arguments ``sigma``, ``num_features``, ``seed``,
            ``feature_map`` (a ``FutureWarning``; settings of the ``Kernel`` now).

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
    _vendi_check_inputs(features)
    if features.shape[0] == 0:
        raise ValueError("`features` must have at least one row, got shape (0, D)")
    resolved = as_kernel(kernel, deprecated, "vendi_score").resolve()
    spectrum = kernel_spectrum(features, resolved, tolerance=tolerance)
    return vendi_orders(spectrum, orders, as_dict)


def _vendi_check_inputs(features: Tensor, dim: int | None = None) -> None:
    """Check a batch of (N, D) features (D = ``dim`` when given): the Vendi score's inputs."""
    check_features(features, "features", dim=dim)


def _vendi_update(features: Tensor, kernel: ResolvedKernel, moment: Tensor | None = None) -> Tensor:
    """What a batch of (N, d) features adds to the Vendi score's state.

    With a feature map, the float64 D x D second moment ``phi^T phi`` (added into ``moment`` in
    place when given); with a kernel function, which needs all rows at once, a float64 copy of the
    rows (a copy even when already float64: the caller may reuse the batch's buffer).
    """
    if kernel.feature_map is not None:
        return kernel.moment(features, out=moment)
    return check_columns(features).to(torch.float64, copy=True)


def _vendi_compute(state: Tensor, kernel: ResolvedKernel, *, tolerance: float | None) -> Tensor:
    """The normalised spectrum (descending) of the state :func:`_vendi_update` builds: the
    summed D x D moment of a feature map, or every row for a kernel function."""
    if kernel.kernel_function is not None:
        matrix, symmetric = kernel.self_matrix(state)
        return normalized_spectrum(matrix, tolerance=tolerance, assume_symmetric=symmetric)
    return normalized_spectrum(state, tolerance=tolerance, assume_symmetric=True)


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
        return _vendi_compute(features, kernel, tolerance=tolerance)
    if features.shape[0] <= ROW_BLOCK:
        return feature_spectrum(kernel.features(features), tolerance=tolerance)
    return _vendi_compute(_vendi_update(features, kernel), kernel, tolerance=tolerance)


def feature_spectrum(phi: Tensor, *, tolerance: float | None = None) -> Tensor:
    """Spectrum of ``phi phi^T`` from the smaller of the Gram matrix and the second moment."""
    phi = phi.to(torch.float64)
    gram = second_moment(phi.T if phi.shape[0] <= phi.shape[1] else phi)
    return normalized_spectrum(gram, tolerance=tolerance, assume_symmetric=True)
