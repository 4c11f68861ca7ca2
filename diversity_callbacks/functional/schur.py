"""Schur complement entropy (Ospanov, Jalali & Farnia, "Dissecting CLIP"; later "Scendi").

Given paired rows (text embedding ``t_i``, image embedding ``x_i`` of the same sample) and a
kernel feature map ``phi`` shared by both, the uncentred covariance blocks are::

    C_TT = Phi_T^T Phi_T / n,   C_TI = Phi_T^T Phi_I / n,   C_II = Phi_I^T Phi_I / n.

The image covariance splits into the part the prompts explain and the rest::

    text part   L_txt = C_TI^T (C_TT + delta I)^-1 C_TI
    image part  L_img = C_II - L_txt          (the Schur complement: the model's own diversity)

and each part is scored as the method defines it (eigenvalues clamped at 1e-10, ``S`` their sum,
``exp(-sum l log(l / S))``). Everything here is float64. This module is the one place for the
maths: the functional API, :class:`~diversity_callbacks.SchurComplementEntropy` and
:class:`~diversity_callbacks.PromptRemover` all call it.

Regularisation: ``delta = ridge * tr(C_TT) / D_T`` (``ridge`` times the mean eigenvalue of
``C_TT``) instead of a pseudo-inverse cut-off. ``C_TI`` lies in the range of ``C_TT``, so each text
direction with eigenvalue ``mu`` is scaled by ``mu / (mu + delta)``: directions well above
``delta`` are explained in full, directions below it not at all, and when the text features
span far fewer directions than there are samples the result does not depend on ``ridge``.

Three exact ways to get the spectra, same numbers:

- primal: the D x D blocks (cost ``n D^2 + D^3``); the metric always uses it (it keeps the sums);
- dual: n x n Gram matrices (cost ``n^2 D + n^3``) when there are fewer samples than features.
  With ``A = Phi_T / sqrt(n)``, ``B = Phi_I / sqrt(n)``, ``G_T = A A^T = U diag(g) U^T`` and
  ``G_I = B B^T``, the push-through identity gives ``L_txt = B^T H B`` and ``L_img = B^T (I - H) B``
  with ``H = G_T (G_T + delta)^-1``. Their nonzero eigenvalues are those of
  ``diag(w) U^T G_I U diag(w)`` with ``w = sqrt(g / (g + delta))`` and ``sqrt(delta / (g + delta))``;
  the remaining ``D_I - n`` eigenvalues are zero and enter the score clamped, as in the primal.
- grouped: when the n rows hold only P distinct prompts (each generated with several seeds),
  ``A = E N^-1/2 A_P`` with ``E`` the n x P prompt indicator, ``N = E^T E`` the counts and
  ``A_P = N^1/2 Phi_P / sqrt(n)``; then ``L_txt = Z^T Z`` with ``G_P = A_P A_P^T = Q diag(g) Q^T``
  and ``Z = diag(sqrt(g / (g + delta))) Q^T N^-1/2 E^T B``, the per-prompt image means in the
  prompts' eigenbasis. The text side costs ``P^2 D + P^3`` instead of ``n D^2 + D^3``, and
  ``L_txt``'s spectrum is that of the P x P ``Z Z^T``; only ``C_II`` needs all n rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from diversity_callbacks._validation import (
    check_features,
    check_paired,
    check_positive,
)
from diversity_callbacks.functional.kernels import (
    RandomFourierFeatures,
    resolve_kernel,
    second_moment,
)
from diversity_callbacks.functional.spectrum import (
    default_tolerance,
    normalized_spectrum,
    schur_score,
    symmetric_eigenvalues,
    vendi_from_spectrum,
)

SchurKernel = Literal["gaussian", "cosine", "linear"]
SCHUR_KERNELS: tuple[str, ...] = ("gaussian", "cosine", "linear")
SchurPath = Literal["auto", "primal", "dual", "grouped"]
SCHUR_PATHS: tuple[str, ...] = ("auto", "primal", "dual", "grouped")
DEFAULT_RIDGE = 1e-8
"""Default ridge on ``C_TT``, relative to its mean eigenvalue ``tr(C_TT) / D_T``."""
DEFAULT_NUM_FEATURES = 2500
"""Random Fourier frequencies of the published method (2 x 2500 = 5000 features)."""


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


def schur_feature_map(
    kernel: str = "gaussian",
    *,
    sigma: float | None = None,
    num_features: int = DEFAULT_NUM_FEATURES,
    seed: int = 0,
    frequencies: Tensor | None = None,
) -> Callable[[Tensor], Tensor]:
    """The feature map shared by text and images for the Schur complement decomposition.

    Args:
        kernel: ``"gaussian"`` (random Fourier features ``[cos(xW), sin(xW)] / sqrt(m)`` with one
            ``W`` for text and images), ``"cosine"`` (rows L2-normalised) or ``"linear"`` (raw
            rows).
        sigma: Gaussian bandwidth, ``k = exp(-|x - y|^2 / (2 sigma^2))``; not needed when
            ``frequencies`` is given.
        num_features: number of random frequencies m (2m features).
        seed: seed of the frequency draw (the same on every rank and every run).
        frequencies: a (d, m) frequency matrix already divided by ``sigma``, to reproduce a
            published draw exactly.
    """
    if kernel not in SCHUR_KERNELS:
        raise ValueError(f"`kernel` must be one of {SCHUR_KERNELS}, got {kernel!r}")
    if kernel != "gaussian":
        if sigma is not None or frequencies is not None:
            raise ValueError(
                f"`sigma` and `frequencies` only apply to kernel='gaussian', got kernel={kernel!r}"
            )
        return resolve_kernel(kernel).feature_map
    if frequencies is not None:
        return RandomFourierFeatures(sigma=sigma, frequencies=frequencies, seed=seed)
    if sigma is None:
        raise ValueError(
            "kernel='gaussian' needs a bandwidth `sigma` > 0 (or a `frequencies` matrix), got None; "
            "the published method uses 3.5 on raw CLIP ViT-B/32 embeddings"
        )
    return resolve_kernel(kernel, sigma=sigma, num_features=num_features, seed=seed).feature_map


def check_ridge(ridge: float) -> float:
    """Validate the relative ridge: a finite number > 0."""
    return check_positive(ridge, "ridge")


def ridge_shift(text_trace: float, text_dim: int, ridge: float) -> float:
    """The absolute shift ``delta = ridge * tr(C_TT) / D_T`` added to ``C_TT``'s diagonal."""
    if not text_trace > 0:
        raise ValueError(
            "the text features are all zero (tr(C_TT) = 0): the prompts explain nothing and the "
            "ridge relative to tr(C_TT) is undefined"
        )
    return ridge * text_trace / text_dim


def _regularized_cholesky(text_text: Tensor, ridge: float) -> tuple[Tensor, float]:
    """Lower Cholesky factor of ``C_TT + delta I`` and ``delta``."""
    delta = ridge_shift(float(torch.trace(text_text)), text_text.shape[0], ridge)
    shifted = (text_text + text_text.T) / 2
    shifted = shifted + delta * torch.eye(
        text_text.shape[0], dtype=text_text.dtype, device=text_text.device
    )
    return torch.linalg.cholesky(shifted), delta


def regression_map(
    text_text: Tensor, text_image: Tensor, *, ridge: float = DEFAULT_RIDGE
) -> Tensor:
    """``Gamma = (C_TT + delta I)^-1 C_TI``: the least-squares map from text to image features.

    ``t Gamma`` is the part of an image feature that its prompt predicts (ridge regression
    without intercept on the uncentred blocks), so ``L_txt = C_TI^T Gamma``.
    """
    factor, _ = _regularized_cholesky(text_text.to(torch.float64), ridge)
    return torch.cholesky_solve(text_image.to(torch.float64), factor)


def schur_complement(
    text_text: Tensor, text_image: Tensor, image_image: Tensor, *, ridge: float = DEFAULT_RIDGE
) -> tuple[Tensor, Tensor]:
    """The image part ``L_img`` and text part ``L_txt`` of the image covariance ``C_II``.

    Args:
        text_text: (D_T, D_T) ``C_TT``.
        text_image: (D_T, D_I) ``C_TI``.
        image_image: (D_I, D_I) ``C_II``. Any common scale (sums or means) carries over.
        ridge: relative ridge on ``C_TT``, see the module docstring.

    Returns:
        ``(L_img, L_txt)``, both (D_I, D_I) float64 and symmetric, summing to ``C_II``.
    """
    factor, _ = _regularized_cholesky(text_text.to(torch.float64), ridge)
    # L_txt = C_TI^T (R R^T)^-1 C_TI = Y^T Y with Y = R^-1 C_TI: symmetric PSD by construction.
    whitened = torch.linalg.solve_triangular(factor, text_image.to(torch.float64), upper=False)
    text_part = whitened.T @ whitened
    image_part = image_image.to(torch.float64) - text_part
    return (image_part + image_part.T) / 2, text_part


def schur_from_moments(
    text_text: Tensor,
    text_image: Tensor,
    image_image: Tensor,
    num_samples: int,
    *,
    ridge: float = DEFAULT_RIDGE,
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
    image_part, text_part = schur_complement(text_text, text_image, image_image, ridge=ridge)
    degenerate = False
    if num_samples <= text_text.shape[0]:
        # rank(C_TT) can only reach n when n <= D_T; only then is the check worth a D_T^3 eigh.
        delta = ridge_shift(float(torch.trace(text_text)), text_text.shape[0], ridge)
        degenerate = _is_degenerate(symmetric_eigenvalues(text_text), delta, num_samples)
    return _result(
        symmetric_eigenvalues(image_part),
        symmetric_eigenvalues(text_part),
        _image_vendi(image_image, compute_image_vendi),
        image_image.shape[0],
        degenerate=degenerate,
    )


def schur_from_features(
    phi_prompts: Tensor,
    prompt_index: Tensor,
    phi_image: Tensor,
    *,
    ridge: float = DEFAULT_RIDGE,
    path: SchurPath = "auto",
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """Scores from the kernel features of P distinct prompts and of n images.

    Args:
        phi_prompts: (P, D_T) kernel features of the distinct prompts.
        prompt_index: (n,) row of ``phi_prompts`` that image i was generated from.
        phi_image: (n, D_I) kernel features of the images.
        ridge: relative ridge on ``C_TT``.
        path: ``"primal"`` (D x D blocks), ``"dual"`` (n x n Gram matrices), ``"grouped"`` (the
            text side over the P distinct prompts, the image side as D_I x D_I) or ``"auto"``:
            the dual when n < D_I, else grouped when P <= D_T / 2, else primal. Same numbers
            every way; see the module docstring.
        compute_image_vendi: ``False`` skips the images' spectrum (one D_I x D_I
            eigendecomposition, a third of the cost at large D); ``image_vendi`` is then NaN.
    """
    if path not in SCHUR_PATHS:
        raise ValueError(f"`path` must be one of {SCHUR_PATHS}, got {path!r}")
    phi_prompts, phi_image = phi_prompts.to(torch.float64), phi_image.to(torch.float64)
    num_samples, image_dim = phi_image.shape
    if path == "auto":
        if num_samples < image_dim:
            path = "dual"
        elif 2 * phi_prompts.shape[0] <= phi_prompts.shape[1]:
            path = "grouped"
        else:
            path = "primal"
    if path == "grouped":
        return _schur_grouped(phi_prompts, prompt_index, phi_image, ridge, compute_image_vendi)
    phi_text = phi_prompts[prompt_index]
    if path == "dual":
        return _schur_dual(phi_text, phi_image, ridge, compute_image_vendi)
    return schur_from_moments(
        second_moment(phi_text),
        phi_text.T @ phi_image,
        second_moment(phi_image),
        num_samples,
        ridge=ridge,
        compute_image_vendi=compute_image_vendi,
    )


def _schur_grouped(
    phi_prompts: Tensor,
    prompt_index: Tensor,
    phi_image: Tensor,
    ridge: float,
    compute_image_vendi: bool,
) -> SchurComplementResult:
    """The path over P distinct prompts; see the module docstring for the derivation."""
    num_samples, image_dim = phi_image.shape
    num_prompts = phi_prompts.shape[0]
    counts = torch.bincount(prompt_index, minlength=num_prompts).to(torch.float64)
    sums = phi_image.new_zeros(num_prompts, image_dim).index_add_(0, prompt_index, phi_image)
    weighted = phi_prompts * torch.sqrt(counts / num_samples)[:, None]
    prompt_gram = weighted @ weighted.T  # same nonzero eigenvalues as C_TT
    delta = ridge_shift(float(torch.trace(prompt_gram)), phi_prompts.shape[1], ridge)
    text_eigenvalues, basis = _gram_eigh(prompt_gram)
    explained = torch.sqrt(text_eigenvalues / (text_eigenvalues + delta))
    # rows of Z: the images' mean features per prompt, in the prompts' eigenbasis; L_txt = Z^T Z
    means = sums / torch.sqrt(counts * num_samples)[:, None]
    whitened = explained[:, None] * (basis.T @ means)
    image_image = second_moment(phi_image).div_(num_samples)
    # The images' spectrum first: L_img = C_II - Z^T Z then reuses C_II's 8 D^2 bytes.
    image_vendi = _image_vendi(image_image, compute_image_vendi)
    image_part = second_moment(whitened, out=image_image, alpha=-1.0)
    return _result(
        symmetric_eigenvalues(image_part),  # reads one triangle: no need to symmetrise
        symmetric_eigenvalues(whitened @ whitened.T),
        image_vendi,
        image_dim,
        degenerate=_is_degenerate(text_eigenvalues, delta, num_samples),
    )


def _gram_eigh(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues and vectors of a Gram matrix; round-off-level eigenvalues set to exact zero.

    Kept, eigenvalues at round-off level (size * eps * max, as numpy's matrix_rank) would count
    as explained directions of weight ``g / (g + delta)``.
    """
    eigenvalues, basis = torch.linalg.eigh((gram + gram.T) / 2)
    round_off = default_tolerance(gram.shape[0]) * float(eigenvalues.max().clamp_min(0.0))
    return torch.where(eigenvalues > round_off, eigenvalues, 0.0), basis


def _schur_dual(
    phi_text: Tensor, phi_image: Tensor, ridge: float, compute_image_vendi: bool
) -> SchurComplementResult:
    """The n x n path; see the module docstring for the derivation."""
    num_samples = phi_text.shape[0]
    text_gram = second_moment(phi_text.T).div_(num_samples)
    image_gram = second_moment(phi_image.T).div_(num_samples)
    delta = ridge_shift(float(torch.trace(text_gram)), phi_text.shape[1], ridge)
    text_eigenvalues, basis = _gram_eigh(text_gram)
    rotated = basis.T @ image_gram @ basis
    explained = torch.sqrt(text_eigenvalues / (text_eigenvalues + delta))
    # delta / (g + delta) directly, not 1 - g / (g + delta): no cancellation where g >> delta.
    unexplained = torch.sqrt(delta / (text_eigenvalues + delta))
    text_block = explained[:, None] * rotated * explained[None, :]
    image_block = unexplained[:, None] * rotated * unexplained[None, :]
    return _result(
        symmetric_eigenvalues((image_block + image_block.T) / 2),
        symmetric_eigenvalues((text_block + text_block.T) / 2),
        _image_vendi(image_gram, compute_image_vendi),
        phi_image.shape[1],
        degenerate=_is_degenerate(text_eigenvalues, delta, num_samples),
    )


def _image_vendi(image_moment: Tensor, compute: bool) -> Tensor:
    """The images' Vendi score (order 1) from ``C_II`` or their Gram matrix; NaN if not asked."""
    if not compute:
        return torch.tensor(math.nan, dtype=torch.float64, device=image_moment.device)
    return vendi_from_spectrum(normalized_spectrum(image_moment), 1.0)


def _result(
    image_eigenvalues: Tensor,
    text_eigenvalues: Tensor,
    image_vendi: Tensor,
    image_dim: int,
    *,
    degenerate: bool,
) -> SchurComplementResult:
    """Score both parts over the D_I-dimensional blocks; attach the images' Vendi score.

    In the degenerate regime both parts are NaN: a number near 1 there would read as "no
    intrinsic diversity" while it only reflects the sample design.
    """
    if degenerate:
        nan = torch.full_like(image_vendi, math.nan)
        return SchurComplementResult(sce=nan, text_part=nan.clone(), image_vendi=image_vendi)
    return SchurComplementResult(
        sce=schur_score(image_eigenvalues, image_dim),
        text_part=schur_score(text_eigenvalues, image_dim),
        image_vendi=image_vendi,
    )


def _is_degenerate(text_eigenvalues: Tensor, delta: float, num_samples: int) -> bool:
    """Warn and return True when the text features span (above the ridge) n directions."""
    rank = int((text_eigenvalues > delta).sum())
    if rank >= num_samples:
        warnings.warn(
            f"SchurComplementEntropy is degenerate here: the text features span {rank} directions "
            f"for {num_samples} samples, so the prompts 'explain' every image and the image part "
            "is only the ridge's residue (SCE ~ 1 whatever the model does); sce and text_part are NaN. This happens when "
            "every sample has its own prompt and n <= the feature dimension. Repeat each prompt "
            "with several seeds (a few prompts, many images each), or use fewer kernel features.",
            DegenerateSchurComplementWarning,
            stacklevel=4,
        )
    return rank >= num_samples


def schur_complement_entropy(
    image_features: Tensor,
    text_features: Tensor,
    kernel: SchurKernel = "gaussian",
    *,
    sigma: float | None = None,
    num_features: int = DEFAULT_NUM_FEATURES,
    seed: int = 0,
    frequencies: Tensor | None = None,
    ridge: float = DEFAULT_RIDGE,
    path: SchurPath = "auto",
    compute_image_vendi: bool = True,
) -> SchurComplementResult:
    """Schur complement entropy of images given their prompts, with its text part.

    Row i of ``image_features`` and of ``text_features`` is one sample: an image and the prompt
    it was generated from. ``sce`` measures the diversity the prompts do not explain (the
    model's own), ``text_part`` the diversity they do, ``image_vendi`` the images' Vendi score.

    Kernels (one feature map for text and images):

    - ``"gaussian"``: random Fourier features of ``exp(-|x - y|^2 / (2 sigma^2))`` with one
      frequency matrix shared by text and images, as published (sigma 3.5 on raw CLIP ViT-B/32
      embeddings, ``num_features=2500``). Seeded; pass ``frequencies`` to reuse a published draw.
    - ``"cosine"``: the per-sample cosine kernel (each row L2-normalised, then inner products).
      The reference code's "cosine" option differs: it normalises feature *columns* and
      correlates embedding coordinates; this one is the kernel the Vendi score uses.
    - ``"linear"``: inner products of the raw rows (scores then depend on the features' scale).

    Args:
        image_features: (n, d_I) image embeddings.
        text_features: (n, d_T) text embeddings; ``d_T == d_I`` for ``"gaussian"``.
        kernel: ``"gaussian"``, ``"cosine"`` or ``"linear"``.
        sigma: Gaussian bandwidth (required for ``"gaussian"`` unless ``frequencies`` is given).
        num_features: random Fourier frequencies m (2m features).
        seed: seed of the frequency draw.
        frequencies: (d, m) frequency matrix, already divided by ``sigma``.
        ridge: ridge on ``C_TT`` relative to its mean eigenvalue ``tr(C_TT) / D_T``.
        path: ``"auto"`` (the n x n dual when n < the image feature dimension D_I, else the
            grouped path when the P distinct prompts number at most D_T / 2, else the D x D
            blocks), ``"primal"``, ``"dual"`` or ``"grouped"``: same numbers, different cost.
        compute_image_vendi: ``False`` skips the images' own spectrum (one D_I x D_I
            eigendecomposition, a third of the cost at D = 5000); ``image_vendi`` is then NaN.

    Returns:
        :class:`SchurComplementResult` ``(sce, text_part, image_vendi)`` of float64 scalars.

    Warns:
        DegenerateSchurComplementWarning: when the text features span as many directions as
            there are samples; ``sce`` and ``text_part`` are then NaN, since the complement is
            only the ridge's residue.

    Example:
        >>> import torch
        >>> from diversity_callbacks.functional import schur_complement_entropy
        >>> prompts = torch.eye(3).repeat_interleave(4, dim=0)  # 3 prompts x 4 images
        >>> images = prompts.clone()  # every image is its prompt: no intrinsic diversity
        >>> result = schur_complement_entropy(images, prompts, kernel="cosine")
        >>> [round(value.item(), 4) for value in result]
        [1.0, 3.0, 3.0]
    """
    check_features(image_features, "image_features")
    check_features(text_features, "text_features")
    check_paired(image_features, text_features, "image_features", "text_features")
    if image_features.shape[0] == 0:
        raise ValueError("`image_features` must have at least one row, got shape (0, D)")
    if kernel == "gaussian" and image_features.shape[1] != text_features.shape[1]:
        raise ValueError(
            "kernel='gaussian' shares one frequency matrix between text and images, so "
            "`image_features` and `text_features` must have the same dimension, got "
            f"{image_features.shape[1]} and {text_features.shape[1]}"
        )
    ridge = check_ridge(ridge)
    feature_map = schur_feature_map(
        kernel, sigma=sigma, num_features=num_features, seed=seed, frequencies=frequencies
    )
    # Map each distinct prompt once: with P prompts of many images each, featurising all n
    # text rows would cost as much as the images.
    prompts, prompt_index = torch.unique(text_features, dim=0, return_inverse=True)
    return schur_from_features(
        feature_map(prompts),
        prompt_index,
        feature_map(image_features),
        ridge=ridge,
        path=path,
        compute_image_vendi=compute_image_vendi,
    )
