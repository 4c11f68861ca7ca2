"""Schur complement entropy (Ospanov, Jalali & Farnia, "Dissecting CLIP"; later "Scendi").

Given paired rows (text embedding ``t_i``, image embedding ``x_i`` of the same sample) and a
kernel feature map ``phi`` shared by both, the uncentred covariance blocks are::

    C_TT = Phi_T^T Phi_T / n,   C_TI = Phi_T^T Phi_I / n,   C_II = Phi_I^T Phi_I / n.

The image covariance splits into the part the prompts explain and the rest::

    text part   L_txt = C_TI^T (C_TT)^+ C_TI
    image part  L_img = C_II - L_txt          (the Schur complement: the model's own diversity)

and each part is scored as the method defines it (eigenvalues clamped at 1e-10, ``S`` their sum,
``exp(-sum l log(l / S))``). Everything here is float64. This module is the one place for the
maths: the functional API, :class:`~diversity_callbacks.SchurComplementEntropy` and
:class:`~diversity_callbacks.PromptRemover` all call it.

Regularisation: ``(C_TT)^+``, the pseudo-inverse with a relative eigenvalue cut-off set by the
precision of the text features, as the published float32 ``pinv`` does with its ``rcond``. A text
direction whose eigenvalue is at most ``tau = max(rtol * tr(C_TT), max(D_T, n) * eps64 * mu_max)``
is noise and explains nothing; one above it is explained in full. ``rtol`` defaults to
``eps^2``, with ``eps`` the machine epsilon of the coarsest arithmetic the text features may come
from: ``2^-7`` for bf16 (and float32/float64 tensors whose values are all bf16 numbers), ``2^-10``
for float16 and float32 (GPU encoders run float32 matmuls and convolutions in TF32, 10 mantissa
bits; the published float32 ``pinv`` cuts coarser still, at ``D * 2^-23`` of the largest
eigenvalue: 6e-5 at D = 512), ``2^-52`` for float64 values that are not float32 numbers. Why ``eps^2``: changing every
text row by less than ``eps`` relative (re-encoding a prompt in another batch, at another
precision) changes ``Phi_T`` by ``E`` with ``|E|_F^2 <= eps^2 |Phi_T|_F^2``, and the directions
it adds have eigenvalues at most ``|E|_2^2 / n <= eps^2 tr(C_TT)``: below the cut-off. Distinct
prompts lie far above it, where the result is exactly the pseudo-inverse's and does not depend on
``rtol`` (a Gaussian feature map amplifies input perturbations by about ``|x| / sigma``; pass a
larger ``rtol`` if the text embeddings vary more than their dtype says).

Scale: the block score was defined for kernels with ``k(x, x) = 1`` (cosine, Gaussian), where the
blocks' eigenvalues sum to at most 1. Both parts are therefore scored after dividing by
``tr(C_II)``, the images' mean ``k(x, x)``: exactly 1 for those kernels, and for the linear kernel
or a user's feature map it keeps the score from growing as ``exp(scale^2)`` (raw CLIP embeddings,
norm ~10, gave ``exp(100 H)``, infinite) and makes it independent of the features' scale.

Three exact ways to get the spectra, same numbers:

- primal: the D x D blocks (cost ``n D^2 + D^3``); the metric always uses it (it keeps the sums).
  With ``C_TT = V diag(mu) V^T``, ``L_txt = Y^T Y`` where ``Y = diag(mu_k^-1/2) V_k^T C_TI`` over
  the kept directions, so ``L_txt``'s spectrum is that of the small ``Y Y^T``;
- dual: n x n Gram matrices (cost ``n^2 D + n^3``) when there are fewer samples than features.
  With ``A = Phi_T / sqrt(n)``, ``B = Phi_I / sqrt(n)``, ``G_T = A A^T = U diag(g) U^T`` and
  ``G_I = B B^T``, the push-through identity gives ``L_txt = B^T H B`` and ``L_img = B^T (I - H) B``
  with ``H = U_k U_k^T`` the projector on the kept directions (``g > tau``). Their nonzero
  eigenvalues are those of ``U_k^T G_I U_k`` and of ``U_r^T G_I U_r`` (``U_r`` the other columns);
  the remaining ``D_I - n`` eigenvalues are zero and enter the score clamped, as in the primal.
- grouped: when the n rows hold only P distinct prompts (each generated with several seeds),
  ``A = E N^-1/2 A_P`` with ``E`` the n x P prompt indicator, ``N = E^T E`` the counts and
  ``A_P = N^1/2 Phi_P / sqrt(n)``; then ``L_txt = Z^T Z`` with ``G_P = A_P A_P^T = Q diag(g) Q^T``
  and ``Z = Q_k^T N^-1/2 E^T B``, the per-prompt image means in the prompts' kept eigenbasis. The
  text side costs ``P^2 D + P^3`` instead of ``n D^2 + D^3``, and ``L_txt``'s spectrum is that of
  the small ``Z Z^T``; only ``C_II`` needs all n rows.
"""

from __future__ import annotations

import math
import warnings
from numbers import Real
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import (
    Kernel,
    KernelArgument,
    RandomFourierFeatures,
    ResolvedKernel,
    as_kernel,
    check_columns,
    second_moment,
)
from diversity_callbacks.functional.spectrum import (
    normalized_spectrum,
    schur_score,
    symmetric_eigenvalues,
    vendi_from_spectrum,
)
from diversity_callbacks.utilities.checks import check_features, check_paired

_SchurPath = Literal["auto", "primal", "dual", "grouped"]
_SCHUR_PATHS: tuple[str, ...] = ("auto", "primal", "dual", "grouped")
_BFLOAT16_EPS = 2.0**-7
_FLOAT32_EPS = 2.0**-10
"""float32 features are trusted to TF32's machine epsilon (see the module docstring)."""
_FLOAT64_EPS = torch.finfo(torch.float64).eps


class SchurComplementResult(NamedTuple):
    """Scores of the Schur complement decomposition of the image kernel covariance.

    Attributes:
        sce: Schur complement entropy, the score of ``L_img = C_II - L_txt``: the diversity of the
            images that the prompts do not explain (the model's intrinsic diversity). Near 1 when
            every image is a function of its prompt.
        text_part: the score of ``L_txt``: the image diversity that the prompts explain. Near 1
            when the images ignore their prompts.
        image_vendi: the Vendi score (order 1) of the images alone under the same kernel,
            ``exp(H(eigenvalues of C_II / tr C_II))``.
    """

    sce: Tensor
    text_part: Tensor
    image_vendi: Tensor


class DegenerateSchurComplementWarning(UserWarning):
    """The text features span as many directions as there are samples: SCE carries no signal."""


def resolve_explicit(kernel: Kernel, owner: str) -> ResolvedKernel:
    """The one feature map of text and images: the method is defined through explicit kernel
    features, so ``"gaussian"`` is always its random features (by default the published
    :data:`~diversity_callbacks.functional.kernels.EXPLICIT_NUM_FEATURES` frequencies)."""
    return kernel.explicit(owner).resolve()


class SchurBatch(NamedTuple):
    """A batch of pairs as the Schur complement needs it: its distinct prompts featurised once.

    Attributes:
        prompts: (P, d_T) the distinct text rows.
        phi_prompts: (P, D_T) float64 kernel features of the prompts.
        prompt_index: (n,) the prompt of each pair (a row of ``prompts``).
        phi_image: (n, D_I) float64 kernel features of the images.
        text_eps: machine epsilon of the prompts' precision (which sets the cut-off).
    """

    prompts: Tensor
    phi_prompts: Tensor
    prompt_index: Tensor
    phi_image: Tensor
    text_eps: float


def _schur_check_inputs(
    image_features: Tensor,
    text_features: Tensor,
    kernel: ResolvedKernel,
    *,
    image_dim: int | None = None,
    text_dim: int | None = None,
    nonempty: bool = False,
) -> None:
    """Check paired (n, d_I) image and (n, d_T) text features for ``kernel`` (the dimensions
    ``image_dim`` and ``text_dim`` when given; with ``nonempty``, n >= 1 and d >= 1)."""
    check_features(image_features, "image_features", dim=image_dim)
    check_features(text_features, "text_features", dim=text_dim)
    check_paired(image_features, text_features, "image_features", "text_features")
    if nonempty and image_features.shape[0] == 0:
        raise ValueError("`image_features` must have at least one row, got shape (0, D)")
    if nonempty:
        check_columns(image_features, "image_features")
        check_columns(text_features, "text_features")
    _check_shared_map(kernel, image_features, text_features)


def _schur_update(
    image_features: Tensor, text_features: Tensor, kernel: ResolvedKernel
) -> SchurBatch:
    """Featurise a checked batch of pairs: each distinct prompt once (with P prompts of many
    images each, featurising all n text rows would cost as much as the images)."""
    first, prompt_index = group_rows(text_features)
    prompts = text_features[first]
    return SchurBatch(
        prompts,
        kernel.features(prompts, "text_features"),
        prompt_index,
        kernel.features(image_features, "image_features"),
        _text_precision(prompts),
    )


def _schur_pairs_compute(
    image_features: Tensor,
    text_features: Tensor,
    kernel: ResolvedKernel,
    *,
    rtol: float | None,
    text_eps: float,
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """The functional form's scores of checked pairs (the n x n dual while n < D_I), with the
    cut-off of a caller that has seen text features as coarse as ``text_eps`` (a metric whose
    pairs were all held back from its states; ``rtol`` is its checked cut-off, or None)."""
    batch = _schur_update(image_features, text_features, kernel)
    return _schur_from_features(
        *batch[1:4], rtol=_effective_rtol(rtol, text_eps), compute_image_vendi=compute_image_vendi
    )


def _schur_compute(
    phi_prompts: Tensor,
    counts: Tensor,
    image_sums: Tensor,
    image_image: Tensor,
    num_samples: int,
    *,
    rtol: float | None,
    text_eps: float,
    compute_image_vendi: bool = True,
    folded: tuple[Tensor, Tensor] | None = None,
) -> SchurComplementResult:
    """Scores from P prompt groups (features, counts, image sums) and ``sum phi_i phi_i^T``.

    The grouped path unless ``folded``, the sums ``(sum phi_t phi_t^T, sum phi_t phi_i^T)`` of
    groups already folded away, is given and nonzero or the groups are too many
    (:func:`prefers_grouped`); then the groups are added to those sums and the D x D blocks
    used. The states are read, never written. ``rtol`` is the caller's cut-off (None:
    ``eps^2`` of ``text_eps``, the coarsest precision of the prompts).
    """
    rtol = _effective_rtol(rtol, text_eps)
    if folded is None or (
        prefers_grouped(phi_prompts.shape[0], phi_prompts.shape[1]) and not bool(folded[0].any())
    ):
        return _schur_from_groups(
            phi_prompts,
            counts,
            image_sums,
            image_image.clone(),
            num_samples,
            rtol=rtol,
            compute_image_vendi=compute_image_vendi,
        )
    text_text, text_image = folded
    return _schur_from_moments(
        second_moment(phi_prompts * counts.sqrt()[:, None], out=text_text.clone()),
        torch.addmm(text_image, phi_prompts.T, image_sums),
        image_image,
        num_samples,
        rtol=rtol,
        compute_image_vendi=compute_image_vendi,
    )


def _check_shared_map(
    resolved: ResolvedKernel, image_features: Tensor, text_features: Tensor
) -> None:
    """Random features draw one frequency matrix per input size: text and images must share it."""
    if (
        isinstance(resolved.feature_map, RandomFourierFeatures)
        and image_features.shape[1] != text_features.shape[1]
    ):
        raise ValueError(
            "kernel='gaussian' shares one frequency matrix between text and images, so "
            "`image_features` and `text_features` must have the same dimension, got "
            f"{image_features.shape[1]} and {text_features.shape[1]}"
        )


def _text_precision(text_features: Tensor) -> float:
    """Machine epsilon of the coarsest arithmetic the text features may come from.

    bf16 for bf16 tensors and for wider tensors holding only bf16 numbers (a bf16 encoder's
    output cast up); TF32's for float16, float32 and float64 holding float32 numbers; float64's
    otherwise. See the module docstring for why float32 is trusted only to TF32's precision.
    """
    if _holds_only(text_features, torch.bfloat16):
        return _BFLOAT16_EPS
    if _holds_only(text_features, torch.float32):
        return _FLOAT32_EPS
    return _FLOAT64_EPS


def _holds_only(features: Tensor, dtype: torch.dtype) -> bool:
    """Whether every value of ``features`` is a number of ``dtype``."""
    if features.dtype == dtype:
        return True
    return torch.equal(features.to(dtype).to(features.dtype), features)


def check_rtol(rtol: object) -> float | None:
    """Validate the relative cut-off: ``None`` (from the text features' precision) or in [0, 1)."""
    if rtol is None:
        return None
    if isinstance(rtol, bool) or not isinstance(rtol, Real) or not 0 <= rtol < 1:
        raise ValueError(
            "`rtol` must be None (set from the precision of the text features) or a number in "
            f"[0, 1), got {rtol!r}"
        )
    return float(rtol)


def fitted_rtol(rtol: float | None, text_features: Tensor) -> float:
    """The cut-off relative to ``tr(C_TT)`` for ``text_features``: ``rtol``, or ``eps^2`` of
    their precision (see the module docstring)."""
    return _effective_rtol(rtol, _text_precision(text_features))


def _effective_rtol(rtol: float | None, text_eps: float) -> float:
    """The cut-off relative to ``tr(C_TT)``: the caller's, or ``eps^2`` of the text features."""
    return text_eps * text_eps if rtol is None else rtol


def group_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Group identical rows: ``(first, inverse)`` with ``rows[first][inverse]`` equal to ``rows``.

    ``first`` holds the index of each group's first row, ``inverse`` each row's group. The key is
    a hash of the rows' float64 bytes (integer arithmetic, so equal rows hash alike wherever they
    sit), then verified: a collision falls back to sorting the rows, so the grouping is exact.
    Hashing is a fraction of what ``torch.unique(rows, dim=0)`` costs (a lexicographic sort of
    the rows); two groups may hold rows that compare equal but differ in bytes (``0.0`` and
    ``-0.0``), which the grouped path accepts (see :func:`_schur_from_groups`).
    """
    bits = rows.to(torch.float64).contiguous().view(torch.int64)
    weights = torch.randint(
        -(2**62), 2**62, (rows.shape[1],), generator=torch.Generator().manual_seed(0)
    ).to(rows.device)
    _, inverse = torch.unique((bits * weights).sum(1), return_inverse=True)
    first = _first_members(inverse)
    if not torch.equal(rows[first][inverse], rows):
        _, inverse = torch.unique(rows, dim=0, return_inverse=True)
        first = _first_members(inverse)
    return first, inverse


def _first_members(inverse: Tensor) -> Tensor:
    """Index of the first row of each group, from each row's group."""
    rows = torch.arange(inverse.numel(), device=inverse.device)
    first = torch.full((int(inverse.max()) + 1,), inverse.numel(), device=inverse.device)
    return first.scatter_reduce_(0, inverse, rows, "amin")


def prefers_grouped(num_prompts: int, text_dim: int) -> bool:
    """Whether the grouped path (P x P on the text side) beats the D_T x D_T blocks."""
    return 2 * num_prompts <= text_dim


def _kept_directions(gram: Tensor, rtol: float, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenvalues and eigenvectors of ``C_TT`` (or a Gram matrix with its nonzero eigenvalues)
    and the mask of the directions above the cut-off ``tau``.

    ``tau = max(rtol * trace, size * eps64 * largest)``: the second term is the round-off of a
    float64 eigendecomposition (numpy's ``matrix_rank`` tolerance), with ``size = max(D_T, n)``
    on every path so that all paths keep the same directions.
    """
    eigenvalues, basis = torch.linalg.eigh(gram.mT, UPLO="U")  # one triangle, no copy
    largest = float(eigenvalues[-1]) if eigenvalues.numel() else 0.0
    if not largest > 0:
        raise ValueError(
            "`text_features` map to all-zero kernel features (C_TT = 0): the prompts explain "
            "nothing and the Schur complement is undefined"
        )
    trace = float(eigenvalues.clamp_min(0.0).sum())
    cutoff = max(rtol * trace, size * _FLOAT64_EPS * largest)
    return eigenvalues, basis, eigenvalues > cutoff


def _explained_factor(
    text_text: Tensor, text_image: Tensor, rtol: float, num_samples: int
) -> tuple[Tensor, Tensor]:
    """``(W, Y)`` with ``W = V_k diag(mu_k^-1/2)`` over the kept text directions, ``Y = W^T C_TI``.

    ``C_TT^+ = W W^T`` (the cut pseudo-inverse) and ``L_txt = Y^T Y``.
    """
    size = max(text_text.shape[0], num_samples)
    eigenvalues, basis, kept = _kept_directions(text_text, rtol, size)
    whitening = basis[:, kept] * eigenvalues[kept].rsqrt()
    return whitening, whitening.T @ text_image


def regression_map(
    text_text: Tensor, text_image: Tensor, *, rtol: float, num_samples: int
) -> Tensor:
    """``Gamma = C_TT^+ C_TI``: the least-squares map from text to image features.

    ``t Gamma`` is the part of an image feature that its prompt predicts (regression without
    intercept on the uncentred blocks, text directions below the cut-off left out), so
    ``L_txt = C_TI^T Gamma``. Sums or means give the same map.
    """
    whitening, whitened = _explained_factor(
        text_text.to(torch.float64), text_image.to(torch.float64), rtol, num_samples
    )
    return whitening @ whitened


def schur_complement(
    text_text: Tensor, text_image: Tensor, image_image: Tensor, *, rtol: float, num_samples: int
) -> tuple[Tensor, Tensor]:
    """The image part ``L_img`` and the factor ``Y`` of the text part ``L_txt = Y^T Y``.

    Args:
        text_text: (D_T, D_T) ``C_TT``.
        text_image: (D_T, D_I) ``C_TI``.
        image_image: (D_I, D_I) ``C_II``. Any common scale (sums or means) carries over.
        rtol: cut-off relative to ``tr(C_TT)``, see the module docstring.
        num_samples: n, for the round-off floor of the cut-off.

    Returns:
        ``(L_img, Y)``: (D_I, D_I) symmetric and (r, D_I) for the r kept text directions, float64.
    """
    _, whitened = _explained_factor(
        text_text.to(torch.float64), text_image.to(torch.float64), rtol, num_samples
    )
    image_part = second_moment(whitened, out=image_image.to(torch.float64, copy=True), alpha=-1.0)
    return image_part, whitened


def _schur_from_moments(
    text_text: Tensor,
    text_image: Tensor,
    image_image: Tensor,
    num_samples: int,
    *,
    rtol: float,
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """Scores from the summed blocks ``sum phi_t phi_t^T``, ``sum phi_t phi_i^T``, ``sum phi_i phi_i^T``.

    The primal path: D x D blocks, used by the metric and by the functional API when there are at
    least as many samples as image features.
    """
    scale = 1.0 / num_samples
    text_text, text_image, image_image = (
        block.to(torch.float64) * scale for block in (text_text, text_image, image_image)
    )
    image_part, whitened = schur_complement(
        text_text, text_image, image_image, rtol=rtol, num_samples=num_samples
    )
    return _result(
        symmetric_eigenvalues(image_part),
        symmetric_eigenvalues(whitened @ whitened.T),  # L_txt's nonzero spectrum, r x r
        _image_vendi(image_image, compute_image_vendi),
        float(torch.trace(image_image)),
        image_image.shape[0],
        degenerate=_is_degenerate(whitened.shape[0], num_samples),
    )


def _schur_from_features(
    phi_prompts: Tensor,
    prompt_index: Tensor,
    phi_image: Tensor,
    *,
    rtol: float,
    path: _SchurPath = "auto",
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """Scores from the kernel features of P distinct prompts and of n images.

    Args:
        phi_prompts: (P, D_T) kernel features of the distinct prompts.
        prompt_index: (n,) row of ``phi_prompts`` that image i was generated from.
        phi_image: (n, D_I) kernel features of the images.
        rtol: cut-off on ``C_TT`` relative to its trace.
        path: ``"primal"`` (D x D blocks), ``"dual"`` (n x n Gram matrices), ``"grouped"`` (the
            text side over the P distinct prompts, the image side as D_I x D_I) or ``"auto"``:
            the dual when n < D_I, else grouped when P <= D_T / 2, else primal. Same numbers
            every way; see the module docstring.
        compute_image_vendi: ``False`` skips the images' spectrum (one D_I x D_I
            eigendecomposition, a third of the cost at large D); ``image_vendi`` is then NaN.
    """
    if path not in _SCHUR_PATHS:
        raise ValueError(f"`path` must be one of {_SCHUR_PATHS}, got {path!r}")
    phi_prompts, phi_image = phi_prompts.to(torch.float64), phi_image.to(torch.float64)
    num_samples, image_dim = phi_image.shape
    if path == "auto":
        if num_samples < image_dim:
            path = "dual"
        elif prefers_grouped(*phi_prompts.shape):
            path = "grouped"
        else:
            path = "primal"
    if path == "grouped":
        return _schur_grouped(phi_prompts, prompt_index, phi_image, rtol, compute_image_vendi)
    phi_text = phi_prompts[prompt_index]
    if path == "dual":
        return _schur_dual(phi_text, phi_image, rtol, compute_image_vendi)
    return _schur_from_moments(
        second_moment(phi_text),
        phi_text.T @ phi_image,
        second_moment(phi_image),
        num_samples,
        rtol=rtol,
        compute_image_vendi=compute_image_vendi,
    )


def _schur_grouped(
    phi_prompts: Tensor,
    prompt_index: Tensor,
    phi_image: Tensor,
    rtol: float,
    compute_image_vendi: bool,
) -> SchurComplementResult:
    """The path over P distinct prompts, from the rows: per-prompt counts and image sums."""
    num_prompts = phi_prompts.shape[0]
    counts = torch.bincount(prompt_index, minlength=num_prompts).to(torch.float64)
    sums = phi_image.new_zeros(num_prompts, phi_image.shape[1]).index_add_(
        0, prompt_index, phi_image
    )
    return _schur_from_groups(
        phi_prompts,
        counts,
        sums,
        second_moment(phi_image),
        phi_image.shape[0],
        rtol=rtol,
        compute_image_vendi=compute_image_vendi,
    )


def _schur_from_groups(
    phi_prompts: Tensor,
    counts: Tensor,
    image_sums: Tensor,
    image_image: Tensor,
    num_samples: int,
    *,
    rtol: float,
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """Scores from P prompt groups; see the module docstring ("grouped") for the derivation.

    The text side never forms a D_T x D_T matrix: its kept directions come from the P x P Gram
    matrix of the prompts weighted by their counts, so only ``C_II`` is D_I x D_I.

    Args:
        phi_prompts: (P, D_T) kernel features of the prompts. Two groups may hold the same
            prompt: the derivation only needs one prompt per group (the duplicate direction has
            eigenvalue zero and is cut).
        counts: (P,) float64 number of samples of each group.
        image_sums: (P, D_I) float64 sums of the image features of each group.
        image_image: (D_I, D_I) float64 ``sum phi_i phi_i^T`` over all n samples; overwritten
            (with ``n L_img``), so that the largest matrix is never copied.
        num_samples: n.
        rtol: cut-off on ``C_TT`` relative to its trace.
        compute_image_vendi: ``False`` skips the images' spectrum; ``image_vendi`` is then NaN.
    """
    image_dim = image_image.shape[0]
    text_dim = phi_prompts.shape[1]
    weighted = phi_prompts * torch.sqrt(counts / num_samples)[:, None]
    prompt_gram = weighted @ weighted.T  # same nonzero eigenvalues as C_TT
    _, basis, kept = _kept_directions(prompt_gram, rtol, max(text_dim, num_samples))
    # rows of Z: the images' mean features per prompt, in the prompts' kept eigenbasis
    means = image_sums / torch.sqrt(counts * num_samples)[:, None]
    whitened = basis[:, kept].T @ means
    image_image = image_image.div_(num_samples)
    image_trace = float(torch.trace(image_image))
    # The images' spectrum first: L_img = C_II - Z^T Z then reuses C_II's 8 D^2 bytes.
    image_vendi = _image_vendi(image_image, compute_image_vendi)
    image_part = second_moment(whitened, out=image_image, alpha=-1.0)
    return _result(
        symmetric_eigenvalues(image_part),  # reads one triangle: no need to symmetrise
        symmetric_eigenvalues(whitened @ whitened.T),
        image_vendi,
        image_trace,
        image_dim,
        degenerate=_is_degenerate(int(kept.sum()), num_samples),
    )


def _schur_dual(
    phi_text: Tensor, phi_image: Tensor, rtol: float, compute_image_vendi: bool
) -> SchurComplementResult:
    """The n x n path; see the module docstring for the derivation."""
    num_samples = phi_text.shape[0]
    text_gram = second_moment(phi_text.T).div_(num_samples)
    image_gram = second_moment(phi_image.T).div_(num_samples)
    size = max(phi_text.shape[1], num_samples)
    _, basis, kept = _kept_directions(text_gram, rtol, size)
    rotated = basis.T @ image_gram @ basis
    rotated = (rotated + rotated.T) / 2
    return _result(
        symmetric_eigenvalues(rotated[~kept][:, ~kept]),
        symmetric_eigenvalues(rotated[kept][:, kept]),
        _image_vendi(image_gram, compute_image_vendi),
        float(torch.trace(image_gram)),
        phi_image.shape[1],
        degenerate=_is_degenerate(int(kept.sum()), num_samples),
    )


def _image_vendi(image_moment: Tensor, compute: bool) -> Tensor:
    """The images' Vendi score (order 1) from ``C_II`` or their Gram matrix; NaN if not asked."""
    if not compute:
        return torch.tensor(math.nan, dtype=torch.float64, device=image_moment.device)
    # a second moment, symmetric by construction: no averaged copy (200 MB at D_I = 5000)
    return vendi_from_spectrum(normalized_spectrum(image_moment, assume_symmetric=True), 1.0)


def _result(
    image_eigenvalues: Tensor,
    text_eigenvalues: Tensor,
    image_vendi: Tensor,
    image_trace: float,
    image_dim: int,
    *,
    degenerate: bool,
) -> SchurComplementResult:
    """Score both parts over the D_I-dimensional blocks divided by ``tr(C_II)``.

    In the degenerate regime both parts are NaN: a number near 1 there would read as "no
    intrinsic diversity" while it only reflects the sample design.
    """
    if not image_trace > 0:
        raise ValueError(
            "`image_features` map to all-zero kernel features (tr(C_II) = 0): there is no image "
            "diversity to split"
        )
    if degenerate:
        nan = torch.full_like(image_vendi, math.nan)
        return SchurComplementResult(sce=nan, text_part=nan.clone(), image_vendi=image_vendi)
    return SchurComplementResult(
        sce=schur_score(image_eigenvalues / image_trace, image_dim),
        text_part=schur_score(text_eigenvalues / image_trace, image_dim),
        image_vendi=image_vendi,
    )


def _is_degenerate(rank: int, num_samples: int) -> bool:
    """Warn and return True when the text features span (above the cut-off) n directions."""
    if rank >= num_samples:
        warnings.warn(
            f"SchurComplementEntropy is degenerate here: the text features span {rank} directions "
            f"for {num_samples} samples (counting those above their precision), so the prompts "
            "'explain' every image and the image part is empty (SCE = 1 whatever the model does); sce and "
            "text_part are NaN. This happens when every sample has its own prompt and n <= the "
            "feature dimension. Repeat each prompt with several seeds (a few prompts, many "
            "images each), or use fewer kernel features.",
            DegenerateSchurComplementWarning,
            stacklevel=4,
        )
    return rank >= num_samples


def schur_complement_entropy(
    image_features: Tensor,
    text_features: Tensor,
    kernel: KernelArgument = None,
    *,
    rtol: float | None = None,
    path: _SchurPath = "auto",
    compute_image_vendi: bool = True,
    **deprecated: Any,
) -> SchurComplementResult:
    """Schur complement entropy of images given their prompts, with its text part.

    Row i of ``image_features`` and of ``text_features`` is one sample: an image and the prompt
    it was generated from. ``sce`` measures the diversity the prompts do not explain (the
    model's own), ``text_part`` the diversity they do, ``image_vendi`` the images' Vendi score.

    Args:
        image_features: (n, d_I) image embeddings.
        text_features: (n, d_T) text embeddings; ``d_T == d_I`` for ``"gaussian"``.
        kernel: the one feature map of text and images, a
            :class:`~diversity_callbacks.functional.Kernel` or its text: ``"cosine"`` (default),
            ``"gaussian:sigma=3.5"`` (random Fourier features, 2500 unless told, as published),
            ``"linear"`` or ``Kernel(feature_map=phi)``; see docs/metrics.md, "Kernel defaults".
        rtol: eigenvalue cut-off on ``C_TT`` relative to its trace: text directions at or below
            it explain nothing. Default ``eps^2`` of the text features' precision (bf16
            ``2^-14``, float32 ``2^-20``, float64 ``2^-104``); see the module docstring.
        path: ``"auto"`` (the n x n dual when n < the image feature dimension D_I, else the
            grouped path when the P distinct prompts number at most D_T / 2, else the D x D
            blocks), ``"primal"``, ``"dual"`` or ``"grouped"``: same numbers, different cost.
        compute_image_vendi: ``False`` skips the images' own spectrum; ``image_vendi`` is NaN.
        deprecated: the 0.1 kernel arguments (``sigma``, ``num_features``, ``seed``,
            ``frequencies``, ``feature_map``), with a ``FutureWarning``.

    Returns:
        :class:`SchurComplementResult` ``(sce, text_part, image_vendi)`` of float64 scalars.

    Warns:
        DegenerateSchurComplementWarning: when the text features span, above the cut-off, as
            many directions as there are samples; ``sce`` and ``text_part`` are then NaN.

    Examples:
        >>> import torch
        >>> from diversity_callbacks.functional import schur_complement_entropy
        >>> prompts = torch.eye(3).repeat_interleave(4, dim=0)  # 3 prompts x 4 images
        >>> images = prompts.clone()  # every image is its prompt: no intrinsic diversity
        >>> result = schur_complement_entropy(images, prompts)
        >>> [round(value.item(), 4) for value in result]
        [1.0, 3.0, 3.0]
    """
    value = as_kernel(kernel, deprecated, "schur_complement_entropy")
    resolved = resolve_explicit(value, "the Schur complement entropy")
    _schur_check_inputs(image_features, text_features, resolved, nonempty=True)
    rtol = check_rtol(rtol)
    batch = _schur_update(image_features, text_features, resolved)
    rtol = _effective_rtol(rtol, batch.text_eps)
    return _schur_from_features(
        *batch[1:4], rtol=rtol, path=path, compute_image_vendi=compute_image_vendi
    )
