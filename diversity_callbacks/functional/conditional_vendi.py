"""Conditional-Vendi and Information-Vendi (Jalali, Ospanov, Gohari & Farnia, arXiv 2411.02817).

Each sample i is a pair: its embedding ``x_i`` and its condition ``t_i`` (a prompt's text
embedding or a class label). With ``K_X`` the samples' kernel and ``K_T`` the conditions' kernel
(both with unit diagonal) the joint kernel is their Hadamard product ``K_X o K_T``, and with
``H_q`` the order-q Rényi entropy of the eigenvalues of ``K / n``:

- Conditional-Vendi ``exp(H_q(X | T)) = exp(H_q(K_X o K_T / n) - H_q(K_T / n))``: the diversity
  left once the prompt is known (how many different images a prompt gets);
- Information-Vendi ``exp(I_q(X; T)) = exp(H_q(K_X / n) + H_q(K_T / n) - H_q(K_X o K_T / n))``:
  how much of the diversity the prompts explain.

Since ``VS_q = exp(H_q)``, both are ratios of Vendi scores of the three kernels. Order 2 is the
Conditional-RKE, computed by its closed form ``VS_2(K) = tr(K)^2 / |K|_F^2`` (no eigenvalues).

Two paths, one definition:

- exact (default): the n x n float64 joint kernel and its eigenvalues; the marginal kernels use
  the smaller of their n x n and D x D forms where they have a finite feature map;
- streaming (``num_features`` given): every kernel through an explicit feature map, so each
  entropy comes from a D x D second moment. Gaussian kernels use seeded random Fourier features;
  a product of Gaussians on x and t is one Gaussian on ``[x / sigma, t / condition_sigma]``, so
  the joint's features are the random features of that concatenation. With class labels the
  joint's second moment is block-diagonal, one block per label. Otherwise the joint's features
  are the row-wise tensor products of the two maps (``D * D'`` of them), allowed while small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks._validation import check_features, check_paired
from diversity_callbacks.functional.kernels import ResolvedKernel, resolve_kernel, second_moment
from diversity_callbacks.functional.spectrum import (
    Order,
    check_tolerance,
    default_tolerance,
    order_key,
    parse_orders,
    symmetric_eigenvalues,
    vendi_from_spectrum,
)

UNIT_DIAGONAL_KERNELS: tuple[str, ...] = ("cosine", "gaussian")
"""Kernels the definition allows: ``k(x, x) = 1``, so the joint kernel's trace is n."""

MAX_TENSOR_FEATURES = 4096
"""Largest joint feature dimension ``D * D'`` of the streaming tensor-product path."""

LEGACY_MESSAGE = (
    "{name} computes the published Conditional-Vendi score (Jalali et al., arXiv 2411.02817) "
    "since 0.2 and {how}. The 0.1 {name} (the mean of each condition's own Vendi score) is now "
    "{new}."
)
"""The error of a 0.1 call: no 0.1 call may silently change meaning."""


@dataclass(frozen=True)
class _Gram:
    """PSD matrices with the nonzero eigenvalues of a kernel matrix: one (m, m) matrix, or a
    (C, m, m) batch of the diagonal blocks of a block-diagonal one."""

    matrix: Tensor

    def vendi(self, q: float, tolerance: float | None) -> Tensor:
        """Vendi score of order q of the kernel's normalised spectrum."""
        trace = self.matrix.diagonal(dim1=-2, dim2=-1).sum()
        if q == 2:  # the RKE closed form: 1 / |K / tr K|_F^2
            return trace * trace / (self.matrix * self.matrix).sum()
        matrix = self.matrix
        eigenvalues = symmetric_eigenvalues((matrix + matrix.mT) / 2).flatten()
        cutoff = default_tolerance(eigenvalues.numel()) if tolerance is None else tolerance
        kept = eigenvalues[eigenvalues > cutoff * eigenvalues.max()]
        return vendi_from_spectrum(kept / kept.sum(), q)


def conditional_vendi_score(
    features: Tensor,
    *legacy: Any,
    condition_features: Tensor | None = None,
    condition_ids: Tensor | None = None,
    q: Order | Sequence[Order] = 1.0,
    kernel: str = "cosine",
    sigma: float | None = None,
    condition_kernel: str = "cosine",
    condition_sigma: float | None = None,
    num_features: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
) -> Tensor | dict[str, Tensor]:
    """Conditional-Vendi score ``exp(H_q(K_X o K_T / n) - H_q(K_T / n))`` of paired samples.

    The effective number of different samples per condition: n samples that are copies of their
    prompt's one image give 1 whatever the prompts; with orthogonal prompts it is the
    sample-weighted geometric mean of each prompt's own Vendi score.

    Args:
        features: ``(N, D)`` embeddings of the samples.
        condition_features: ``(N, D')`` embeddings of each sample's condition (e.g. the text
            embedding of its prompt). Pass this or ``condition_ids``.
        condition_ids: ``(N,)`` integer label of each sample's condition; the label kernel is 1
            on equal labels and 0 otherwise.
        q: order >= 0, ``"inf"``, or a sequence of orders (order 2 is the Conditional-RKE).
        kernel: the samples' kernel, ``"cosine"`` or ``"gaussian"``.
        sigma: the samples' Gaussian bandwidth, ``k = exp(-|x - y|^2 / (2 sigma^2))``.
        condition_kernel: the conditions' kernel for ``condition_features``, ``"cosine"`` or
            ``"gaussian"``.
        condition_sigma: the conditions' Gaussian bandwidth.
        num_features: use the streaming path, with this many seeded random Fourier frequencies
            for each Gaussian kernel.
        seed: seed of the random Fourier frequencies.
        tolerance: relative eigenvalue tolerance (default ``size * eps(float64)``).

    Returns:
        A float64 scalar tensor, or a dict ``{"q1": ..., "q2": ...}`` when ``q`` is a sequence.

    Raises:
        TypeError: for the 0.1 call with condition ids as the second positional argument; that
            score is now :func:`~diversity_callbacks.functional.per_condition_vendi_score`.

    Examples:
        >>> import torch
        >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
        >>> labels = torch.tensor([0, 0, 1, 1])  # class 0: two images; class 1: one, twice
        >>> round(conditional_vendi_score(images, condition_ids=labels).item(), 6)
        1.414214
    """
    _refuse_legacy_call("conditional_vendi_score", legacy)
    grams, orders, as_dict = _grams(
        features, condition_features, condition_ids, q, kernel, sigma, condition_kernel,
        condition_sigma, num_features, seed, tolerance, need_image=False,
    )  # fmt: skip
    scores = {
        order_key(o): grams["joint"].vendi(o, tolerance) / grams["condition"].vendi(o, tolerance)
        for o in orders
    }
    return scores if as_dict else scores[order_key(orders[0])]


def information_vendi_score(
    features: Tensor,
    *,
    condition_features: Tensor | None = None,
    condition_ids: Tensor | None = None,
    q: Order | Sequence[Order] = 1.0,
    kernel: str = "cosine",
    sigma: float | None = None,
    condition_kernel: str = "cosine",
    condition_sigma: float | None = None,
    num_features: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
) -> Tensor | dict[str, Tensor]:
    """Information-Vendi score ``exp(H_q(K_X/n) + H_q(K_T/n) - H_q(K_X o K_T/n))``.

    How many distinct "modes" the conditions explain: 1 when the samples do not depend on the
    condition, the number of conditions when each condition gets its own distinct samples. The
    arguments are those of :func:`conditional_vendi_score`.

    Examples:
        >>> import torch
        >>> images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> labels = torch.tensor([0, 0, 1, 1])  # each class its own image
        >>> round(information_vendi_score(images, condition_ids=labels).item(), 6)
        2.0
    """
    grams, orders, as_dict = _grams(
        features, condition_features, condition_ids, q, kernel, sigma, condition_kernel,
        condition_sigma, num_features, seed, tolerance, need_image=True,
    )  # fmt: skip
    scores = {}
    for o in orders:
        image, condition = (
            grams["image"].vendi(o, tolerance),
            grams["condition"].vendi(o, tolerance),
        )
        scores[order_key(o)] = image * condition / grams["joint"].vendi(o, tolerance)
    return scores if as_dict else scores[order_key(orders[0])]


def _refuse_legacy_call(name: str, legacy: tuple[Any, ...]) -> None:
    """The 0.1 call, with condition ids as the second positional argument, is refused."""
    if legacy:
        message = LEGACY_MESSAGE.format(
            name=name,
            how="takes its conditions as keywords: condition_features= (e.g. text embeddings) "
            "or condition_ids= (class labels)",
            new="per_condition_vendi_score (class PerConditionVendiScore)",
        )
        raise TypeError(f"{message} Got {len(legacy)} extra positional argument(s).")


def _grams(
    features: Tensor,
    condition_features: Tensor | None,
    condition_ids: Tensor | None,
    q: Order | Sequence[Order],
    kernel: str,
    sigma: float | None,
    condition_kernel: str,
    condition_sigma: float | None,
    num_features: int | None,
    seed: int,
    tolerance: float | None,
    *,
    need_image: bool,
) -> tuple[dict[str, _Gram], list[float], bool]:
    """Check the inputs; return the kernels' Gram forms ("image", "condition", "joint")."""
    orders, as_dict = parse_orders(q)
    check_tolerance(tolerance)
    conditions = check_conditions(features, condition_features, condition_ids)
    if features.shape[0] == 0:
        raise ValueError("`features` must have at least one row, got shape (0, D)")
    image = _resolve(kernel, sigma, num_features, seed, "kernel", "sigma")
    if condition_ids is not None:
        _check_label_options(condition_kernel, condition_sigma)
        condition = ResolvedKernel(one_hot_labels, None, "the label kernel")
    else:
        condition = _resolve(
            condition_kernel, condition_sigma, num_features, seed, "condition_kernel",
            "condition_sigma",
        )  # fmt: skip
    grams = {"condition": _marginal(condition, conditions)}
    if need_image:
        grams["image"] = _marginal(image, features)
    if num_features is None:
        joint = _matrix(image, features) * _matrix(condition, conditions)
        grams["joint"] = _Gram(joint)
    else:
        grams["joint"] = _streaming_joint(
            features, conditions, image, condition, condition_ids is not None,
            (sigma, condition_sigma, num_features, seed),
        )  # fmt: skip
    return grams, orders, as_dict


def check_conditions(
    features: Tensor, condition_features: Tensor | None, condition_ids: Tensor | None
) -> Tensor:
    """Check the samples and exactly one kind of condition; return the conditions as given."""
    check_features(features, "features")
    if (condition_features is None) == (condition_ids is None):
        raise ValueError(
            "pass exactly one of `condition_features` ((N, D') embeddings of each sample's "
            "condition, e.g. its prompt's text embedding) and `condition_ids` ((N,) integer "
            f"labels), got {'both' if condition_features is not None else 'neither'}"
        )
    if condition_features is not None:
        check_features(condition_features, "condition_features")
        check_paired(features, condition_features, "features", "condition_features")
        return condition_features
    if not isinstance(condition_ids, Tensor) or condition_ids.is_floating_point():
        raise TypeError(
            f"`condition_ids` must be an integer torch.Tensor of shape ({features.shape[0]},), "
            f"got {getattr(condition_ids, 'dtype', type(condition_ids).__name__)}"
        )
    if condition_ids.shape != (features.shape[0],):
        raise ValueError(
            f"`condition_ids` must have shape ({features.shape[0]},), one label per row of "
            f"`features`, got {tuple(condition_ids.shape)}"
        )
    return condition_ids


def one_hot_labels(labels: Tensor) -> Tensor:
    """The label kernel's feature map: one float64 indicator column per distinct label."""
    _, index = torch.unique(labels, return_inverse=True)
    return torch.nn.functional.one_hot(index.flatten()).to(torch.float64)


def _check_label_options(condition_kernel: str, condition_sigma: float | None) -> None:
    if condition_sigma is not None or condition_kernel != "cosine":
        raise ValueError(
            "`condition_kernel` and `condition_sigma` apply to `condition_features`; with "
            "`condition_ids` the label kernel (1 on equal labels, 0 otherwise) is used, got "
            f"condition_kernel={condition_kernel!r}, condition_sigma={condition_sigma!r}"
        )


def _resolve(
    kernel: str,
    sigma: float | None,
    num_features: int | None,
    seed: int,
    name: str,
    sigma_name: str,
) -> ResolvedKernel:
    """A unit-diagonal kernel by name; random features only for a Gaussian on the streaming path."""
    if kernel not in UNIT_DIAGONAL_KERNELS:
        raise ValueError(
            f"`{name}` must be one of {UNIT_DIAGONAL_KERNELS} (kernels with k(x, x) = 1, as the "
            f"definition needs), got {kernel!r}"
        )
    if kernel == "gaussian" and sigma is None:
        raise ValueError(f"{name}='gaussian' needs a bandwidth `{sigma_name}` > 0, got None")
    if kernel == "cosine" and sigma is not None:
        raise ValueError(f"`{sigma_name}` only applies to {name}='gaussian', got {name}='cosine'")
    gaussian = kernel == "gaussian"
    return resolve_kernel(
        kernel,
        sigma=sigma if gaussian else None,
        num_features=num_features if gaussian else None,
        seed=seed,
    )


def _matrix(kernel: ResolvedKernel, rows: Tensor) -> Tensor:
    """The n x n float64 kernel matrix."""
    if kernel.kernel_function is not None:
        return kernel.matrix(rows)
    phi = kernel.features(rows)
    return phi @ phi.T


def _marginal(kernel: ResolvedKernel, rows: Tensor) -> _Gram:
    """A marginal kernel in its smaller form: n x n Gram or D x D second moment."""
    if kernel.kernel_function is not None:
        return _Gram(kernel.matrix(rows))
    return _Gram(_smaller_moment(kernel.features(rows)))


def _label_blocks(phi: Tensor, labels: Tensor) -> Tensor:
    """The diagonal blocks of the joint kernel with the label kernel, one per label, batched.

    The rows are grouped by label once and zero-padded to the largest group (a padded row adds
    a zero eigenvalue only); each block is the smaller of its Gram and its second moment.
    """
    _, index = torch.unique(labels, return_inverse=True)
    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index)
    padded = phi.new_zeros(counts.numel(), int(counts.max()), phi.shape[1])
    slot = (
        torch.arange(phi.shape[0], device=phi.device)
        - (torch.cumsum(counts, 0) - counts)[index[order]]
    )
    padded[index[order], slot] = phi[order]
    if padded.shape[1] <= padded.shape[2]:
        return padded @ padded.mT
    return padded.mT @ padded


def _smaller_moment(phi: Tensor) -> Tensor:
    """``phi phi^T`` or ``phi^T phi``, whichever is smaller: the same nonzero eigenvalues."""
    return second_moment(phi.T if phi.shape[0] <= phi.shape[1] else phi)


def _streaming_joint(
    features: Tensor,
    conditions: Tensor,
    image: ResolvedKernel,
    condition: ResolvedKernel,
    labelled: bool,
    gaussian: tuple[float | None, float | None, int, int],
) -> _Gram:
    """The joint kernel's D x D second moment(s) from an explicit feature map."""
    if labelled:  # block-diagonal: the image features of each label's samples on their own
        return _Gram(_label_blocks(image.features(features), conditions))
    sigma, condition_sigma, num_features, seed = gaussian
    if sigma is not None and condition_sigma is not None:
        scaled = torch.cat(
            [features.to(torch.float64) / sigma, conditions.to(torch.float64) / condition_sigma],
            dim=1,
        )
        joint = resolve_kernel("gaussian", sigma=1.0, num_features=num_features, seed=seed)
        return _Gram(_smaller_moment(joint.features(scaled)))
    phi, psi = image.features(features), condition.features(conditions, "condition_features")
    size = phi.shape[1] * psi.shape[1]
    if size > MAX_TENSOR_FEATURES:
        raise ValueError(
            "the streaming path of this kernel pair needs the tensor product of the two feature "
            f"maps, {phi.shape[1]} x {psi.shape[1]} = {size} features (at most "
            f"{MAX_TENSOR_FEATURES}); use kernel='gaussian' and condition_kernel='gaussian' "
            "(one Gaussian on the concatenation), condition_ids, or the exact path "
            "(num_features=None)"
        )
    tensor = (phi.unsqueeze(2) * psi.unsqueeze(1)).reshape(phi.shape[0], size)
    return _Gram(_smaller_moment(tensor))
