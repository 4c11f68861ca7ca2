"""Eigen-spectra of kernel matrices and the entropies built on them.

One place for: order parsing, the float64 eigendecomposition with its tolerance, the Vendi score
of a spectrum (Friedman & Dieng; order q "Cousins") and the block score of the Schur complement
decomposition (Ospanov, Jalali & Farnia). All in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy
import torch
from torch import Tensor

Order = float | int | str
"""An order q of the Rényi entropy: a number >= 0, ``float("inf")`` or the string ``"inf"``."""

SCHUR_EIGENVALUE_FLOOR = 1e-10
"""Eigenvalue clamp of the Schur complement block score, as in the published method."""


def parse_order(q: Order) -> float:
    """Validate an order and return it as a float (``math.inf`` for ``"inf"``)."""
    if isinstance(q, str):
        if q.strip().lower() in ("inf", "+inf", "infinity"):
            return math.inf
        raise ValueError(f'`q` must be a number >= 0 or "inf", got the string {q!r}')
    if isinstance(q, bool) or not isinstance(q, Real) or math.isnan(q) or q < 0:
        raise ValueError(f'`q` must be a number >= 0 or "inf", got {q!r}')
    return float(q) + 0.0  # -0.0 passes the check: + 0.0 makes it 0.0, named "q0"


def parse_orders(q: Order | Sequence[Order]) -> tuple[list[float], bool]:
    """Parse one order or a sequence of them; the flag says whether a sequence was given."""
    if isinstance(q, (str, Real)):
        return [parse_order(q)], False
    # bytes are a Sequence of ints: b"inf" would read as the orders 105, 110, 102.
    if not isinstance(q, Sequence) or isinstance(q, (bytes, bytearray)):
        raise ValueError(
            f'`q` must be an order (a number >= 0 or "inf") or a list or tuple of orders, got '
            f"{q!r} of type {type(q).__name__}"
        )
    orders = [parse_order(item) for item in q]
    if not orders:
        raise ValueError("`q` must be an order or a non-empty sequence of orders, got an empty one")
    if len(set(orders)) != len(orders):
        raise ValueError(f"`q` must not repeat an order, got {list(q)!r}")
    return orders, True


def order_key(q: float) -> str:
    """The name of an order in results and logs: ``q1``, ``q0.5``, ``q2``, ``qinf``.

    Distinct orders get distinct names: the short form is used only when it reads back as the
    same float, else the shortest exact one (``q2.0000001``, not a second ``q2``).
    """
    if math.isinf(q):
        return "qinf"
    short = f"{q:g}"
    return f"q{short}" if float(short) == q else f"q{q!r}"


def default_tolerance(size: int) -> float:
    """Relative eigenvalue tolerance ``size * eps(float64)``, as numpy's matrix_rank uses."""
    return max(size, 1) * torch.finfo(torch.float64).eps


def check_tolerance(tolerance: float | None) -> None:
    """Check a relative eigenvalue tolerance: ``None`` (the default) or a number in [0, 1)."""
    if tolerance is None:
        return
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 <= tolerance < 1:
        raise ValueError(f"`tolerance` must be None or a number in [0, 1), got {tolerance!r}")


# Up to this size, CPU float64 spectra come from NumPy's LAPACK (OpenBLAS) rather than torch's
# (MKL). Measured on the project's 2-core machine while idle, best of 3, NumPy's time over
# torch's: one thread 0.59 at 1000, 0.86 at 2000, 1.15 at 2500; two threads 0.53, 0.73, 1.00.
_NUMPY_EIGVALSH_LIMIT = 2048


def symmetric_eigenvalues(matrix: Tensor) -> Tensor:
    """Eigenvalues, ascending, of a symmetric matrix (or a batch), read from its lower triangle.

    Same as ``torch.linalg.eigvalsh(matrix)``, which larger ones go to. Small CPU float64
    matrices (the 512 x 512 moment of CLIP features) go to ``numpy.linalg.eigvalsh``, faster
    there. (Handing torch the transpose's upper triangle makes its working copy a plain memcpy,
    but LAPACK's upper-triangle path is slower by more: 1.79 s against 1.63 s at 3000 x 3000,
    docs/performance.md, "Implementation choices".)
    """
    if (
        matrix.device.type == "cpu"
        and matrix.dtype == torch.float64
        and matrix.shape[-1] <= _NUMPY_EIGVALSH_LIMIT
    ):
        return torch.from_numpy(numpy.linalg.eigvalsh(matrix.detach().resolve_neg().numpy()))
    return torch.linalg.eigvalsh(matrix)


def normalized_spectrum(
    matrix: Tensor, *, tolerance: float | None = None, assume_symmetric: bool = False
) -> Tensor:
    """Eigenvalues of a symmetric PSD matrix divided by their sum, round-off dropped.

    The matrix is a kernel matrix K (n x n) or a second moment ``Phi^T Phi`` (D x D); both have
    the same nonzero eigenvalues. Dividing by the trace gives the spectrum of ``K / n`` for a
    kernel with unit diagonal, and makes other kernels (linear on raw features) comparable.

    Args:
        matrix: (m, m) symmetric positive semi-definite matrix.
        tolerance: eigenvalues ``<= tolerance * max eigenvalue`` are dropped as round-off.
            Default ``m * eps(float64)``: q = 0 then gives the numerical rank, and q < 1 does
            not count round-off.
        assume_symmetric: the matrix is symmetric by construction (a second moment, the
            built-in Gaussian kernel): its lower triangle is read as it is. By default the two
            triangles are averaged first, in a new matrix, so that a user's slightly asymmetric
            kernel is used as the symmetric matrix nearest to it.

    Returns:
        1-D float64 tensor of the kept eigenvalues in descending order, summing to 1.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
    if matrix.shape[0] == 0:
        raise ValueError("the spectrum of an empty matrix is undefined: no samples were given")
    tolerance = default_tolerance(matrix.shape[0]) if tolerance is None else tolerance
    check_tolerance(tolerance)
    matrix = matrix.to(torch.float64)
    if not assume_symmetric:
        matrix = (matrix + matrix.T).mul_(0.5)  # one new matrix, halved in place
    eigenvalues = symmetric_eigenvalues(matrix).flip(0)
    top = eigenvalues[0]
    if not bool(top > 0):
        raise ValueError("the kernel matrix is zero: every sample has zero similarity to itself")
    kept = eigenvalues[eigenvalues > tolerance * top]
    return kept / kept.sum()


def vendi_from_spectrum(spectrum: Tensor, q: float) -> Tensor:
    """Vendi score ``exp(H_q(p))`` of a probability vector ``p`` of eigenvalues.

    ``H_1 = -sum p log p``; ``H_q = log(sum p^q) / (1 - q)``; q = 0 gives the count, q = inf
    gives ``1 / max p``. The score lies in [1, number of nonzero p] and does not increase with q.
    ``spectrum`` may be a batch ``(..., m)`` of vectors, zero-padded (zeros are dropped
    eigenvalues, as :func:`normalized_spectra` returns): the result then has shape ``(...)``.
    """
    if q == 1:
        return torch.exp(-torch.special.xlogy(spectrum, spectrum).sum(dim=-1))
    if q == 0:
        return (spectrum > 0).sum(dim=-1).to(torch.float64)
    if math.isinf(q):
        return 1.0 / spectrum.amax(dim=-1)
    # log(sum p^q) as a logsumexp: p^q underflows to 0 for large q (p <= 1/n ... 1), log would
    # then give -inf and the score inf instead of a value near 1 / max p. Padded zeros give
    # log 0 = -inf, which the logsumexp ignores.
    return torch.exp(torch.logsumexp(q * torch.log(spectrum), dim=-1) / (1.0 - q))


def vendi_orders(
    spectrum: Tensor, orders: Sequence[float], as_dict: bool
) -> Tensor | dict[str, Tensor]:
    """Vendi scores of one spectrum for several orders: a tensor, or a dict keyed by order_key."""
    scores = {order_key(q): vendi_from_spectrum(spectrum, q) for q in orders}
    return scores if as_dict else scores[order_key(orders[0])]


def normalized_spectra(matrices: Tensor, *, tolerance: float | None = None) -> Tensor:
    """:func:`normalized_spectrum` of a batch ``(G, m, m)`` of matrices in one eigendecomposition.

    Returns:
        ``(G, m)`` float64: each matrix's eigenvalues in descending order divided by the sum of
        the kept ones, the dropped ones (round-off, as in :func:`normalized_spectrum`) set to 0.
    """
    size = matrices.shape[-1]
    tolerance = default_tolerance(size) if tolerance is None else tolerance
    check_tolerance(tolerance)
    matrices = matrices.to(torch.float64)
    eigenvalues = symmetric_eigenvalues((matrices + matrices.mT) / 2).flip(-1)
    top = eigenvalues[:, :1]
    if not bool((top > 0).all()):
        raise ValueError("the kernel matrix is zero: every sample has zero similarity to itself")
    kept = eigenvalues.where(eigenvalues > tolerance * top, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def schur_score(eigenvalues: Tensor, size: int | None = None) -> Tensor:
    """The block score ``exp(-sum l log(l / S))`` of the method from a block's eigenvalues.

    Eigenvalues are clamped at 1e-10 and ``S`` is their sum; weights are not normalised, so this
    is ``exp(S * H(l / S))``. ``size`` is the block's dimension: the eigenvalues are padded with
    zeros up to it (the dual path computes only n of them), or only the largest ``size`` are
    kept. Same as :func:`schur_block_score` of the block itself.
    """
    eigenvalues = eigenvalues.to(torch.float64)
    if size is not None and size < eigenvalues.numel():
        # the dual's n eigenvalues when n > D: all but the D largest are round-off of zero.
        eigenvalues = torch.topk(eigenvalues, size).values
    elif size is not None and size > eigenvalues.numel():
        padding = eigenvalues.new_zeros(size - eigenvalues.numel())
        eigenvalues = torch.cat([eigenvalues, padding])
    clamped = eigenvalues.clamp_min(SCHUR_EIGENVALUE_FLOOR)
    return torch.exp(-(clamped * torch.log(clamped / clamped.sum())).sum())


def schur_block_score(matrix: Tensor) -> Tensor:
    """Score of one block of the Schur complement decomposition, as the method defines it.

    With ``l`` the eigenvalues of the symmetric block clamped at 1e-10 and ``S = sum l``, the
    score is ``exp(-sum l log(l / S))``. The weights are not normalised, so this equals
    ``exp(S * H(l / S))``, not the Vendi score of ``matrix / S``; S is the share of the kernel's
    trace that the block holds.
    """
    matrix = matrix.to(torch.float64)
    return schur_score(symmetric_eigenvalues((matrix + matrix.T) / 2))
