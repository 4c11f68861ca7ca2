"""Novel modes of one sample set against another: KEN (Zhang, Jalali, Ospanov & Farnia, ICML 2024).

A mode of set A that set B lacks is a direction where A's kernel covariance exceeds B's: the
novel modes are the eigenvectors of ``C_A - eta C_B`` with positive eigenvalues (each covariance
normalised to trace 1), and those eigenvalues are how much of A lies there. Their sum is the
novel mass (0 when B covers A; at most 1), and the KEN score is that mass times the entropy of
the normalised positive eigenvalues (how many novel modes it is spread over). ``eta`` weighs B:
above 1 a mode counts as novel only where A holds more than ``eta`` times B's share.

Read both ways between two evaluations of one model: the novelty of an earlier evaluation
against the current one is the modes it *lost*, that of the current one against the earlier one
the modes it *gained*. Both covariances have trace 1, so ``C_A - C_B`` has trace 0 and (at
``eta = 1``) the lost and the gained mass are equal: when modes vanish, the survivors' shares
grow by the same total, which appears as gained mass spread over modes that were already there,
not as a new mode.

Two routes, as for the leading modes (:mod:`~diversity_callbacks.functional.modes`): with a
feature map, the D x D difference (B may be given as its covariance alone, e.g. a training set's
streamed moments); with a kernel function, the symmetric ``(n + m)`` matrix ``L S L`` where
``L`` is the square root of the joint kernel matrix of both sets (A weighted ``1 / n``, B
``eta / m``) and ``S = diag(+1 on A, -1 on B)``: its nonzero eigenvalues are those of
``C_A - eta C_B``, and ``L w`` gives every sample's loading on the mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import KernelArgument, ResolvedKernel, as_kernel
from diversity_callbacks.functional.modes import (
    DEFAULT_TOP,
    KernelMoments,
    Mode,
    as_modes,
    descending_eigh,
    descending_eigvalsh,
    extreme_eigenvectors,
    orient,
    sample_indices,
    top_samples,
)
from diversity_callbacks.functional.spectrum import default_tolerance
from diversity_callbacks.utilities.checks import check_features, check_positive, check_positive_int


@dataclass(frozen=True)
class Novelty:
    """How set A differs from set B: its novel modes.

    Attributes:
        mass: sum of the positive eigenvalues of ``C_A - eta C_B``: the share of A in modes B
            lacks (in [0, 1]).
        score: the KEN score, ``mass`` times the entropy (natural log) of the normalised
            positive eigenvalues; 0 when nothing is novel.
        modes: the largest novel modes, :class:`~diversity_callbacks.functional.modes.Mode`
            objects whose ``share`` is the mode's novel mass and whose ``samples`` index set A.
        eigenvalues: every positive eigenvalue, descending.
    """

    mass: float
    score: float
    modes: list[Mode] = field(default_factory=list)
    eigenvalues: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))


def check_eta(eta: object) -> float:
    """Check KEN's weight of the second set: a finite number > 0."""
    return check_positive(eta, "eta")


def ken_score(eigenvalues: Tensor) -> tuple[float, float]:
    """``(mass, score)`` of the positive eigenvalues of ``C_A - eta C_B``."""
    mass = float(eigenvalues.sum())
    if mass <= 0:
        return 0.0, 0.0
    weights = eigenvalues / mass
    entropy = float(-torch.special.xlogy(weights, weights).sum())
    return mass, mass * entropy


def positive_part(
    difference: Tensor, num_modes: int, first: Tensor | None, floor: float
) -> tuple[Tensor, Tensor]:
    """Eigenvalues above ``floor`` (all of them, descending) and the top ``num_modes``
    eigenvectors (columns, oriented by ``first`` as in
    :func:`~diversity_callbacks.functional.modes.orient`)."""
    check_positive_int(num_modes, "num_modes")
    values = descending_eigvalsh(difference)
    positive = values[values > floor]
    keep = min(num_modes, positive.numel())
    return positive, orient(extreme_eigenvectors(difference, values, keep)[0], first)


def covariance_novelty(
    covariance_a: Tensor, covariance_b: Tensor, eta: float, num_modes: int, first_a: Tensor
) -> tuple[Tensor, Tensor]:
    """Positive eigenvalues of ``C_A - eta C_B`` (trace-1 covariances) and the top novel
    directions, each oriented so that A's loadings sum to >= 0 (``first_a``: the sum of A's
    kernel features)."""
    if covariance_a.shape != covariance_b.shape:
        raise ValueError(
            "the two kernel covariances must have one shape (the same kernel features), got "
            f"{tuple(covariance_a.shape)} and {tuple(covariance_b.shape)}"
        )
    floor = default_tolerance(covariance_a.shape[0]) * max(1.0, eta)
    difference = covariance_a.to(torch.float64) - eta * covariance_b.to(torch.float64)
    return positive_part(difference, num_modes, first_a, floor)


def covariance_novelty_both_ways(
    covariance_a: Tensor,
    covariance_b: Tensor,
    eta: float,
    num_modes: int,
    first_a: Tensor,
    first_b: Tensor,
    threshold: float = 0.0,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """:func:`covariance_novelty` of A against B and of B against A.

    At ``eta = 1`` the second difference is the first negated: one eigendecomposition gives
    both (B's novel modes are the first's negative eigenpairs), half the work of two calls.
    Directions are returned only for novel masses of at least ``threshold`` (all positive
    eigenvalues are returned).
    """
    if eta != 1.0:
        return (
            covariance_novelty(covariance_a, covariance_b, eta, num_modes, first_a),
            covariance_novelty(covariance_b, covariance_a, eta, num_modes, first_b),
        )
    check_positive_int(num_modes, "num_modes")
    floor = default_tolerance(covariance_a.shape[0])
    difference = covariance_a.to(torch.float64) - covariance_b.to(torch.float64)
    values = descending_eigvalsh(difference)
    a_positive = values[values > floor]
    b_positive = -values.flip(0)[-values.flip(0) > floor]
    a_keep = min(num_modes, int((a_positive >= threshold).sum()))
    b_keep = min(num_modes, int((b_positive >= threshold).sum()))
    a_vectors, b_vectors = extreme_eigenvectors(difference, values, a_keep, b_keep)
    return (a_positive, orient(a_vectors, first_a)), (b_positive, orient(b_vectors, first_b))


def kernel_novelty(
    kernel_aa: Tensor, kernel_ab: Tensor, kernel_bb: Tensor, eta: float, num_modes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Novelty from kernel matrices (n x n, n x m, m x m), for kernels without a feature map.

    Returns:
        ``(positive eigenvalues, loadings of A (n, k), loadings of B (m, k))``; a loading is
        ``phi(x) . v``, as on the feature-map route.
    """
    n, m = kernel_ab.shape
    weight_a = 1.0 / math.sqrt(float(torch.trace(kernel_aa)))
    weight_b = math.sqrt(eta / float(torch.trace(kernel_bb)))
    joint = torch.cat(
        [
            torch.cat([kernel_aa * weight_a**2, kernel_ab * (weight_a * weight_b)], 1),
            torch.cat([kernel_ab.T * (weight_a * weight_b), kernel_bb * weight_b**2], 1),
        ]
    ).to(torch.float64)
    values, vectors = descending_eigh(joint)
    root = (vectors * values.clamp_min(0).sqrt()) @ vectors.T  # L = K^(1/2), symmetric
    signs = torch.cat([root.new_ones(n), -root.new_ones(m)])
    floor = default_tolerance(n + m) * max(1.0, eta)
    positive, directions = positive_part(root * signs @ root, num_modes, None, floor)
    loadings = root @ directions  # row r: g_r . v, g_r the weighted feature of sample r
    a_side = loadings[:n] / weight_a
    flip = torch.where(a_side.sum(0) < 0, -1.0, 1.0).to(loadings)
    return positive, a_side * flip, loadings[n:] * flip / weight_b


def novelty(
    features_a: Tensor,
    features_b: Tensor | None = None,
    *,
    covariance_b: Tensor | None = None,
    eta: float = 1.0,
    num_modes: int = 8,
    top: int = DEFAULT_TOP,
    indices: Tensor | Sequence[int] | None = None,
    kernel: KernelArgument = None,
    **deprecated: Any,
) -> Novelty:
    """The modes of set A that set B lacks (KEN), with A's samples that show them.

    Args:
        features_a: (N, d) features of set A (e.g. generated samples).
        features_b: (M, d) features of set B (e.g. an earlier evaluation, the training set).
        covariance_b: instead of ``features_b``, B's (D, D) kernel covariance over the kernel
            features (any positive multiple: it is normalised to trace 1 here, so a sum
            ``sum phi phi^T`` streamed over a large set will do); feature-map kernels only.
        eta: weight of B (KEN's eta): a direction is novel where A's share exceeds eta times B's.
        num_modes: how many novel modes to return.
        top: A's samples kept per mode, largest loading first.
        indices: (N,) what to call A's samples; default ``0..N-1``.
        kernel: the :class:`~diversity_callbacks.functional.Kernel` of both sets, its text
            (``"cosine"``, the default) or a kernel callable.
        deprecated: the 0.1 kernel arguments, with a ``FutureWarning``.

    Returns:
        A :class:`Novelty` (mass, KEN score, modes).

    Examples:
        >>> e = torch.eye(3, dtype=torch.float64)
        >>> a, b = e[[0, 0, 1, 1, 2, 2]], e[[0, 0, 1, 1]]  # b lacks the third mode
        >>> found = novelty(a, b, num_modes=1, top=2)
        >>> round(found.mass, 3), found.modes[0].samples.tolist()
        (0.333, [4, 5])
    """
    check_features(features_a, "features_a")
    eta, top = check_eta(eta), check_positive_int(top, "top")
    indices = sample_indices(indices, features_a.shape[0])
    resolved = as_kernel(kernel, deprecated, "novelty").resolve()
    _check_set_b(features_a, features_b, covariance_b)
    if resolved.feature_map is None:
        return _kernel_route(resolved, features_a, features_b, eta, num_modes, top, indices)
    phi = resolved.features(features_a, "features_a")
    moments = KernelMoments.of(phi)
    if covariance_b is None:
        covariance_b = KernelMoments.of(resolved.features(features_b, "features_b")).covariance
    else:
        covariance_b = _checked_covariance(covariance_b, phi.shape[1])
    positive, directions = covariance_novelty(
        moments.covariance, covariance_b, eta, num_modes, moments.first
    )
    return novelty_result(positive, *top_samples(phi @ directions, indices, top))


def _check_set_b(
    features_a: Tensor, features_b: Tensor | None, covariance_b: Tensor | None
) -> None:
    """Set B is given once: as (M, d) features like A's, or as its covariance."""
    if (features_b is None) == (covariance_b is None):
        raise ValueError(
            "give exactly one of `features_b` and `covariance_b`, got "
            f"{'both' if features_b is not None else 'neither'}"
        )
    if features_b is not None:
        check_features(features_b, "features_b", dim=features_a.shape[1])


def novelty_result(positive: Tensor, samples: Tensor, loadings: Tensor) -> Novelty:
    """A :class:`Novelty` from the positive eigenvalues and the top samples of its modes."""
    mass, score = ken_score(positive)
    return Novelty(mass, score, as_modes(positive, samples, loadings), positive.cpu())


def _kernel_route(
    resolved: ResolvedKernel,
    features_a: Tensor,
    features_b: Tensor | None,
    eta: float,
    num_modes: int,
    top: int,
    indices: Tensor,
) -> Novelty:
    if features_b is None:
        raise ValueError(
            f"`covariance_b` needs a kernel with a feature map; {resolved.label} has none (the "
            "exact Gaussian: pass `num_features` for random features, or give `features_b`)"
        )
    positive, loadings, _ = kernel_novelty(
        resolved.matrix(features_a, name="features_a"),
        resolved.matrix(features_a, features_b, name="features_b"),
        resolved.matrix(features_b, name="features_b"),
        eta,
        num_modes,
    )
    return novelty_result(positive, *top_samples(loadings, indices, top))


def _checked_covariance(covariance: Tensor, dim: int) -> Tensor:
    """A (dim, dim) finite symmetric matrix with positive trace, normalised to trace 1."""
    if not isinstance(covariance, Tensor) or tuple(covariance.shape) != (dim, dim):
        raise ValueError(
            f"`covariance_b` must be a ({dim}, {dim}) tensor over the kernel features of "
            f"`features_a`, got {type(covariance).__name__} "
            f"{tuple(getattr(covariance, 'shape', ()))}"
        )
    covariance = covariance.to(torch.float64)
    trace = torch.trace(covariance)
    if not bool(torch.isfinite(covariance).all()) or not bool(trace > 0):
        raise ValueError(
            f"`covariance_b` must be finite with a positive trace, got trace {float(trace)}"
        )
    return covariance / trace


__all__ = [
    "Novelty",
    "check_eta",
    "covariance_novelty",
    "covariance_novelty_both_ways",
    "ken_score",
    "kernel_novelty",
    "novelty",
    "novelty_result",
    "positive_part",
]
