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

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import (
    FRESH,
    Kernel,
    KernelArgument,
    ResolvedKernel,
    ScratchBuffers,
    fourier_features,
    random_fourier_frequencies,
    second_moment,
)
from diversity_callbacks.functional.spectrum import (
    Order,
    check_tolerance,
    default_tolerance,
    order_key,
    parse_orders,
    symmetric_eigenvalues,
    vendi_from_spectrum,
)
from diversity_callbacks.utilities.checks import check_features, check_paired

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
class LowerTriangle:
    """A symmetric (n, n) matrix of which only the lower triangle, diagonal included, is read.

    What :func:`~diversity_callbacks.functional.kernels.gaussian_kernel_triangle` builds, and
    ``eigvalsh`` reads: the n x n kernel is never mirrored into a full copy. The entries above
    the diagonal are not the matrix's (whatever they hold, they are never read).
    """

    matrix: Tensor


@dataclass(frozen=True)
class _Gram:
    """PSD matrices with the nonzero eigenvalues of a kernel matrix: one (m, m) matrix (or its
    :class:`LowerTriangle`), or the diagonal blocks of a block-diagonal one (a sequence, or a
    (C, m, m) batch)."""

    matrix: Tensor | Sequence[Tensor] | LowerTriangle

    def vendi(self, orders: Sequence[float], tolerance: float | None) -> dict[float, Tensor]:
        """Vendi scores of the kernel's normalised spectrum, one eigendecomposition for all."""
        blocks = self._blocks()
        scores, spectrum = {}, None
        for q in orders:
            if q == 2:  # the RKE closed form: 1 / |K / tr K|_F^2, no n x n temporary
                trace = sum(block.diagonal().sum() for block in blocks)
                scores[q] = trace * trace / self._squares(blocks)
                continue
            if spectrum is None:
                # eigvalsh reads one triangle: no symmetrised copy (the products are symmetric
                # to round-off, far below the 1e-9 the scores are checked at).
                eigenvalues = _eigenvalues(blocks)
                cutoff = default_tolerance(eigenvalues.numel()) if tolerance is None else tolerance
                kept = eigenvalues[eigenvalues > cutoff * eigenvalues.max()]
                spectrum = kept / kept.sum()
            scores[q] = vendi_from_spectrum(spectrum, q)
        return scores

    def _blocks(self) -> list[Tensor]:
        """The matrices whose eigenvalues together are the kernel's."""
        matrix = self.matrix.matrix if isinstance(self.matrix, LowerTriangle) else self.matrix
        return [matrix] if isinstance(matrix, Tensor) and matrix.ndim == 2 else list(matrix)

    def _squares(self, blocks: Sequence[Tensor]) -> Tensor:
        """``|K|_F^2``: of a lower triangle, twice its squares less the diagonal's, since the
        entries above its diagonal are not the matrix's."""
        if not isinstance(self.matrix, LowerTriangle):
            return sum(torch.dot(block.reshape(-1), block.reshape(-1)) for block in blocks)
        (matrix,) = blocks
        diagonal = matrix.diagonal()
        return 2.0 * _lower_squares(matrix) - torch.dot(diagonal, diagonal)


# Columns per block of the passes over a lower triangle, and rows per gathered block of the
# conditions' kernel: a (128, n) float64 temporary (10 MiB at n = 10k) that stays in cache.
_TRIANGLE_BLOCK = 128


def _lower_squares(matrix: Tensor) -> Tensor:
    """Sum of the squares of a square matrix's lower triangle, diagonal included.

    By blocks of columns: below its diagonal block a block is a plain rectangle, read in place
    (a row block of a column-major triangle's buffer); only the small diagonal block is masked.
    """
    size = matrix.shape[0]
    total = matrix.new_zeros(())
    for first in range(0, size, _TRIANGLE_BLOCK):
        last = min(first + _TRIANGLE_BLOCK, size)
        total += torch.linalg.vector_norm(matrix[last:, first:last]).square()
        total += torch.linalg.vector_norm(matrix[first:last, first:last].tril()).square()
    return total


def _eigenvalues(blocks: Sequence[Tensor]) -> Tensor:
    """Eigenvalues of a symmetric matrix, or of the blocks of a block-diagonal one.

    Blocks (one per label) are decomposed one by one, each at its own size: a zero-padded batch
    of them costs 1.5x the blocks themselves.
    """
    return torch.cat([symmetric_eigenvalues(block) for block in blocks])


def conditional_vendi_score(
    features: Tensor,
    *legacy: Any,
    condition_features: Tensor | None = None,
    condition_ids: Tensor | None = None,
    q: Order | Sequence[Order] = 1.0,
    kernel: KernelArgument = "cosine",
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
        kernel: the samples' kernel, ``"cosine"`` or ``"gaussian"``, or a
            :class:`~diversity_callbacks.functional.Kernel` of either (or its text), which then
            also gives ``sigma``, ``num_features`` and ``seed``.
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
    scores = paired_scores(grams, orders, tolerance)
    return scores if as_dict else scores[order_key(orders[0])]


def information_vendi_score(
    features: Tensor,
    *,
    condition_features: Tensor | None = None,
    condition_ids: Tensor | None = None,
    q: Order | Sequence[Order] = 1.0,
    kernel: KernelArgument = "cosine",
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
    scores = paired_scores(grams, orders, tolerance)
    return scores if as_dict else scores[order_key(orders[0])]


def paired_scores(
    grams: Mapping[str, Tensor | Sequence[Tensor] | LowerTriangle],
    orders: Sequence[float],
    tolerance: float | None,
) -> dict[str, Tensor]:
    """Conditional-Vendi (no ``"image"`` entry) or Information-Vendi from the kernels' Gram forms.

    Args:
        grams: ``"condition"``, ``"joint"`` and, for Information-Vendi, ``"image"``: PSD matrices
            (or the diagonal blocks of a block-diagonal one: a sequence or a ``(C, m, m)``
            batch) with the nonzero eigenvalues of each kernel matrix: the n x n matrix itself
            (or its :class:`LowerTriangle`) or a second moment of its features.
        orders: parsed orders.
        tolerance: relative eigenvalue tolerance.

    Returns:
        The score per order, keyed by ``order_key``.
    """
    vendi = {name: _Gram(matrix).vendi(orders, tolerance) for name, matrix in grams.items()}
    joint, condition = vendi["joint"], vendi["condition"]
    if "image" in vendi:
        return {order_key(o): vendi["image"][o] * condition[o] / joint[o] for o in orders}
    return {order_key(o): joint[o] / condition[o] for o in orders}


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
    kernel: KernelArgument,
    sigma: float | None,
    condition_kernel: str,
    condition_sigma: float | None,
    num_features: int | None,
    seed: int,
    tolerance: float | None,
    *,
    need_image: bool,
) -> tuple[dict[str, Any], list[float], bool]:
    """Check the inputs; return the kernels' Gram forms ("image", "condition", "joint")."""
    kernel, sigma, num_features, seed = unpack_kernel(kernel, sigma, num_features, seed)
    orders, as_dict = parse_orders(q)
    check_tolerance(tolerance)
    conditions = check_conditions(features, condition_features, condition_ids)
    if features.shape[0] == 0:
        raise ValueError("`features` must have at least one row, got shape (0, D)")
    kernels = paired_kernels(
        kernel, sigma, condition_kernel, condition_sigma, num_features, seed,
        labelled=condition_ids is not None,
    )  # fmt: skip
    if condition_ids is not None:
        grams = _label_grams(features, condition_ids, kernels.image, need_image)
    elif num_features is None:
        grams = _exact_grams(features, conditions, kernels, need_image)
    else:
        paired = kernels.features(features, conditions, need_image=need_image)
        grams = {"condition": _smaller_moment(paired.condition)}
        grams["joint"] = _smaller_moment(paired.joint)
        if need_image:
            grams["image"] = _smaller_moment(paired.image)
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


@dataclass(frozen=True)
class PairedFeatures:
    """Explicit features of paired samples: every kernel's Gram form is a second moment."""

    image: Tensor | None
    """(N, D) features of the samples (None when not asked for)."""
    condition: Tensor
    """(U, D') rows whose second moment is the conditions' kernel's: the features of each
    distinct condition times the square root of its count."""
    joint: Tensor
    """(N, D_joint) features of the pairs, whose kernel is the product of the two."""


@dataclass(frozen=True)
class PairedKernels:
    """The samples' and the conditions' kernels, resolved once (and cached with their draws).

    ``condition`` is None for the label kernel. ``scales`` holds ``(sigma, condition_sigma)``
    when both are Gaussians with random features: their product is one Gaussian on
    ``[x / sigma, t / condition_sigma]``, whose frequencies also give both marginals' features.
    """

    image: ResolvedKernel
    condition: ResolvedKernel | None
    scales: tuple[float, float] | None
    num_features: int | None
    seed: int

    def features(
        self,
        features: Tensor,
        conditions: Tensor,
        *,
        need_image: bool,
        scratch: ScratchBuffers = FRESH,
    ) -> PairedFeatures:
        """The streaming path's features of ``(N, D)`` samples and ``(N, D')`` conditions; with
        a kept ``scratch`` the Gaussian pair's may live in its buffers (until its next use)."""
        if self.scales is not None:
            return self._gaussian_pair(features, conditions, need_image, scratch)
        phi = self.image.features(features)
        psi = self.condition.features(conditions, "condition_features")
        size = phi.shape[1] * psi.shape[1]
        if size > MAX_TENSOR_FEATURES:
            raise ValueError(
                "the streaming path of this kernel pair needs the tensor product of the two "
                f"feature maps, {phi.shape[1]} x {psi.shape[1]} = {size} features (at most "
                f"{MAX_TENSOR_FEATURES}); use kernel='gaussian' and condition_kernel='gaussian' "
                "(one Gaussian on the concatenation), condition_ids, or the exact path "
                "(num_features=None)"
            )
        joint = (phi.unsqueeze(2) * psi.unsqueeze(1)).reshape(phi.shape[0], size)
        return PairedFeatures(phi if need_image else None, psi, joint)

    def _gaussian_pair(
        self, x: Tensor, t: Tensor, need_image: bool, scratch: ScratchBuffers
    ) -> PairedFeatures:
        """One projection of the samples and one of the distinct conditions (prompts repeat
        over seeds) give all three feature maps: the joint's phases are their sum."""
        distinct, inverse, counts = distinct_rows(scratch.float64("conditions", t), scratch)
        image_frequencies, condition_frequencies = _pair_frequencies(
            x.shape[1], t.shape[1], self.num_features, self.seed, self.scales, x.device
        )
        x = scratch.float64("features", x)
        condition_phases = distinct @ condition_frequencies
        condition = fourier_features(condition_phases).mul_(counts.sqrt_()[:, None])
        rows, size = x.shape[0], 2 * self.num_features
        phases = scratch.get("phases", rows, self.num_features, x.device)
        torch.index_select(condition_phases, 0, inverse, out=phases)
        image = None
        if need_image:
            image_phases = torch.mm(
                x, image_frequencies, out=scratch.get("x_phases", *phases.shape, x.device)
            )
            image = fourier_features(image_phases, scratch.get("image", rows, size, x.device))
            phases.add_(image_phases)
        else:  # the joint's phases in one GEMM that adds the projection to the gathered ones
            phases.addmm_(x, image_frequencies)
        joint = fourier_features(phases, scratch.get("joint", rows, size, x.device))
        return PairedFeatures(image, condition, joint)


def distinct_rows(rows: Tensor, scratch: ScratchBuffers = FRESH) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct rows of a float64 matrix, each row's index among them, and their float64
    counts; as ``torch.unique(rows, dim=0)`` but grouped by one random projection of the rows
    (then checked row by row, in ``scratch``), several times faster than a row-wise sort."""
    direction = torch.randn(
        rows.shape[1], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).to(rows.device)
    _, first, inverse, counts = unique_with_first(rows @ direction)
    distinct = rows[first]
    gathered = scratch.get("distinct_rows", *rows.shape, rows.device)
    if not torch.equal(torch.index_select(distinct, 0, inverse, out=gathered), rows):
        # two rows projected alike: sort them instead
        distinct, inverse, counts = torch.unique(
            rows, dim=0, return_inverse=True, return_counts=True
        )
    return distinct, inverse, counts.to(torch.float64)


def unique_with_first(values: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``torch.unique`` of an (N, 1) column with the index of one row of each value."""
    unique, inverse, counts = torch.unique(
        values.flatten(), return_inverse=True, return_counts=True
    )
    first = torch.empty_like(unique, dtype=torch.long).scatter_(
        0, inverse, torch.arange(values.shape[0], device=values.device)
    )
    return unique, first, inverse, counts


def paired_kernels(
    kernel: str,
    sigma: float | None,
    condition_kernel: str,
    condition_sigma: float | None,
    num_features: int | None,
    seed: int,
    *,
    labelled: bool,
) -> PairedKernels:
    """Check and resolve the kernel options of Conditional- and Information-Vendi."""
    image = _resolve(kernel, sigma, num_features, seed, "kernel", "sigma")
    if labelled:
        _check_label_options(condition_kernel, condition_sigma)
        return PairedKernels(image, None, None, num_features, seed)
    condition = _resolve(
        condition_kernel, condition_sigma, num_features, seed, "condition_kernel",
        "condition_sigma",
    )  # fmt: skip
    both_random = num_features is not None and sigma is not None and condition_sigma is not None
    scales = (sigma, condition_sigma) if both_random else None
    return PairedKernels(image, condition, scales, num_features, seed)


@functools.lru_cache(maxsize=8)
def _pair_frequencies(
    dim: int,
    condition_dim: int,
    num_features: int,
    seed: int,
    scales: tuple[float, float],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The joint Gaussian's seeded frequencies on ``[x / sigma, t / condition_sigma]``, split
    into the samples' and the conditions' rows, each divided by its bandwidth (drawn once)."""
    frequencies = random_fourier_frequencies(
        dim + condition_dim, num_features, sigma=1.0, seed=seed
    )
    sigma, condition_sigma = scales
    return (
        (frequencies[:dim] / sigma).to(device),
        (frequencies[dim:] / condition_sigma).to(device),
    )


def _check_label_options(condition_kernel: str, condition_sigma: float | None) -> None:
    if condition_sigma is not None or condition_kernel != "cosine":
        raise ValueError(
            "`condition_kernel` and `condition_sigma` apply to `condition_features`; with "
            "`condition_ids` the label kernel (1 on equal labels, 0 otherwise) is used, got "
            f"condition_kernel={condition_kernel!r}, condition_sigma={condition_sigma!r}"
        )


@functools.lru_cache(maxsize=32)  # the frequency draws are cached with the kernel
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
    return Kernel(
        kernel,
        sigma=sigma if gaussian else None,
        num_features=num_features if gaussian else None,
        seed=seed,
    ).resolve()


def unpack_kernel(
    kernel: KernelArgument, sigma: float | None, num_features: int | None, seed: int
) -> tuple[Any, float | None, int | None, int]:
    """``(name, sigma, num_features, seed)`` of the samples' kernel given as a
    :class:`~diversity_callbacks.functional.Kernel` (or its text): the options these scores
    share with the conditions' kernel (``num_features``, ``seed``). Names pass through."""
    if isinstance(kernel, str) and ":" in kernel:
        kernel = Kernel.parse(kernel)
    if not isinstance(kernel, Kernel):
        return kernel, sigma, num_features, seed
    if (sigma, num_features, seed) != (None, None, 0):
        raise TypeError(
            "give the samples' kernel settings in the Kernel, not also as `sigma`, "
            f"`num_features` or `seed`, got kernel={kernel!r}"
        )
    if kernel.feature_map is not None or kernel.frequencies is not None:
        raise ValueError(
            f"`kernel` must be a cosine or Gaussian kernel by name and settings (k(x, x) = 1), "
            f"got {kernel!r}"
        )
    return kernel.name, kernel.sigma, kernel.num_features, kernel.seed


def _label_grams(
    features: Tensor, labels: Tensor, image: ResolvedKernel, need_image: bool
) -> dict[str, Tensor | list[Tensor]]:
    """With the label kernel the joint kernel is block-diagonal, one block per label: its
    eigenvalues are those of the blocks (exact). The rows are grouped by label once; each block
    is the smaller of its Gram and second moment."""
    _, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sizes = counts.tolist()
    rows = features[torch.argsort(index.flatten(), stable=True)]
    # the label kernel's feature map is one indicator column per label: its moment diag(counts)
    grams = {"condition": torch.diag(counts.to(torch.float64))}
    if image.kernel_function is not None:
        blocks = [image.matrix(block) for block in rows.split(sizes)]
        if need_image:
            grams["image"] = image.matrix(features)
    else:
        phi = image.features(rows)
        blocks = [_smaller_moment(block) for block in phi.split(sizes)]
        if need_image:
            grams["image"] = _smaller_moment(phi)
    grams["joint"] = blocks
    return grams


def _exact_grams(
    features: Tensor, conditions: Tensor, kernels: PairedKernels, need_image: bool
) -> dict[str, Tensor | LowerTriangle]:
    """The n x n joint kernel; the marginals in their smaller forms."""
    # prompts repeat over samples: the conditions' kernel of the distinct ones, gathered, and
    # its Gram form weighted by their counts (the nonzero eigenvalues of K_T are those of
    # diag(sqrt c) K_distinct diag(sqrt c)): one small eigendecomposition instead of n x n
    distinct, inverse, counts = distinct_rows(conditions.to(torch.float64))
    condition, condition_gram = _matrix_and_gram(
        kernels.condition, distinct, True, "condition_features", weights=counts.sqrt_()
    )
    grams: dict[str, Tensor | LowerTriangle] = {"condition": condition_gram}
    if kernels.image.triangle is not None:
        grams.update(_triangle_grams(features, condition, inverse, kernels.image, need_image))
        return grams
    image, image_gram = _matrix_and_gram(kernels.image, features, need_image, "features")
    condition = condition[inverse[:, None], inverse]
    # in place unless the image kernel's matrix is also its marginal's Gram form
    grams["joint"] = image * condition if image_gram is not None else image.mul_(condition)
    if need_image:
        grams["image"] = image_gram
    return grams


def _triangle_grams(
    features: Tensor, condition: Tensor, inverse: Tensor, image: ResolvedKernel, need_image: bool
) -> dict[str, LowerTriangle]:
    """The joint kernel (and the samples' kernel) as lower triangles only.

    The samples' kernel is the Vendi path's triangle (only what eigvalsh reads is built), and
    the distinct conditions' (P, P) kernel is gathered into it one row block of its buffer at a
    time, in place: one n x n matrix for Conditional-Vendi instead of the full kernel, the
    gathered n x n condition kernel and their product.
    """
    triangle, _ = image.self_matrix(features, "features")
    # row i of the row-major buffer is column i of the triangle: its entries j >= i are read
    buffer = triangle.T.clone() if need_image else triangle.T
    for first in range(0, buffer.shape[0], _TRIANGLE_BLOCK):
        rows = inverse[first : first + _TRIANGLE_BLOCK]
        gathered = condition.index_select(0, rows).index_select(1, inverse[first:])
        buffer[first : first + rows.shape[0], first:].mul_(gathered)
    grams = {"joint": LowerTriangle(buffer.T)}
    if need_image:
        grams["image"] = LowerTriangle(triangle)
    return grams


def _matrix_and_gram(
    kernel: ResolvedKernel,
    rows: Tensor,
    need_gram: bool,
    name: str,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The float64 kernel matrix of ``rows`` and (if asked) the kernel's smaller Gram form,
    of the rows each repeated ``weights ** 2`` times when weights are given."""
    if kernel.kernel_function is not None:
        matrix = kernel.matrix(rows, name=name)
        if not need_gram:
            return matrix, None
        return matrix, matrix if weights is None else matrix * weights[:, None] * weights
    phi = kernel.features(rows, name)
    if not need_gram:
        return phi @ phi.T, None
    weighted = phi if weights is None else phi * weights[:, None]
    return phi @ phi.T, _smaller_moment(weighted)


def _smaller_moment(phi: Tensor) -> Tensor:
    """``phi phi^T`` or ``phi^T phi``, whichever is smaller: the same nonzero eigenvalues."""
    return second_moment(phi.T if phi.shape[0] <= phi.shape[1] else phi)
