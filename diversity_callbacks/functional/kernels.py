"""Similarity kernels and their explicit feature maps.

A kernel with an explicit, finite feature map ``phi`` (cosine, linear, random Fourier features,
or a user's map) lets every spectral quantity be computed from the D x D second moment
``sum_i phi(x_i) phi(x_i)^T`` instead of the n x n kernel matrix: the nonzero eigenvalues agree.
That moment is a sum, so it streams batch by batch and sums across DDP ranks. Kernels without a
finite feature map (the exact Gaussian, a user's kernel function) need all rows at once.

Everything is computed in float64: kernel entries and moments are sums of many products.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy
import torch
from torch import Tensor

from diversity_callbacks.utilities.checks import check_positive, check_positive_int

KernelName = Literal["cosine", "linear", "gaussian"]
FeatureMap = Callable[[Tensor], Tensor]
"""Maps (N, d) features to (N, D) explicit kernel features: ``k(x, y) = phi(x) . phi(y)``."""
KernelFunction = Callable[[Tensor, Tensor], Tensor]
"""Maps (N, d) and (M, d) features to the (N, M) kernel matrix."""
KernelSpec = KernelName | KernelFunction

KERNEL_NAMES: tuple[str, ...] = ("cosine", "linear", "gaussian")

_SEED_LIMIT = 2**64
"""Seeds of the random Fourier frequencies: ints in [0, 2^64), what a torch.Generator takes."""


def check_sigma(sigma: object) -> float:
    """Check a Gaussian bandwidth: finite, > 0, and ``1 / (2 sigma^2)`` a normal float64.

    Outside about 1e-154 < sigma < 1e154 the float64 kernel breaks down: ``sigma^2`` underflows
    (every entry NaN, the eigendecomposition fails) or overflows (every entry 1).
    """
    sigma = check_positive(sigma, "sigma")
    rate = 0.5 / (sigma * sigma) if sigma * sigma > 0 else math.inf
    if not sys.float_info.min <= rate < math.inf:
        raise ValueError(
            "`sigma` must be a bandwidth whose 1 / (2 sigma^2) is a normal float64 (about "
            f"1e-154 < sigma < 1e154), got {sigma!r}"
        )
    return sigma


def check_seed(seed: object) -> int:
    """Check a seed of the random Fourier frequencies: an int in [0, 2^64)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"`seed` must be an integer in [0, 2**64), got {seed!r}")
    return seed


def check_columns(features: Tensor, name: str = "features") -> Tensor:
    """Check that (N, D) features have D >= 1 columns: no kernel is defined on zero features."""
    if features.ndim == 2 and features.shape[1] == 0:
        raise ValueError(
            f"`{name}` must have at least one feature column, got shape {tuple(features.shape)}"
        )
    return features


ROW_BLOCK = 8192
"""Rows per block when kernel features are mapped and accumulated into a moment.

Big enough that a rank-k update of 512 x 512 runs within 5% of one update over all rows (1024-row
blocks: 35% slower), small enough that one block of float64 features (32 MiB at d = 512) is the
only O(n d) temporary (docs/performance.md, "Cosine Vendi at large n").
"""

# Norms in (2^-500, inf) come from sums of squares that neither overflowed nor lost precision to
# underflow (every square that underflows is below 2^-1000 of their sum).
_SMALLEST_SAFE_NORM = 2.0**-500


def normalize_rows(features: Tensor, *, out: Tensor | None = None) -> Tensor:
    """L2-normalise each row in float64 (the cosine kernel's feature map).

    Rows whose squared norm would overflow (norm above about 1e154) or underflow (below about
    1e-150) are first divided by their largest absolute entry, so that their norm is computed
    from entries in [-1, 1]: finite rows of norm 1e200 or 1e-170 are normalised like any other.

    Args:
        features: (N, D) floating tensor.
        out: (N, D) float64 tensor to write the rows into (a reused buffer); a new one when
            omitted. The input is never modified.

    Raises:
        ValueError: if a row has zero norm, for which the cosine similarity is undefined.
    """
    return _normalize_rows(check_columns(features), out, first_row=0)


def _normalize_rows(features: Tensor, out: Tensor | None, first_row: int) -> Tensor:
    """:func:`normalize_rows` of a block whose first row is row ``first_row`` of the input.

    The norms are computed in float64 straight from the input and the division writes the
    float64 result: two passes over the rows, no float64 copy of the input and no ``abs()``
    temporary (measured: 3x faster than copy, scale and divide on 4096-row blocks).
    """
    norms = torch.linalg.vector_norm(features, dim=1, keepdim=True, dtype=torch.float64)
    out = torch.div(features, norms, out=out)
    unsafe = ~((norms > _SMALLEST_SAFE_NORM) & (norms < math.inf)).flatten()
    if bool(unsafe.any()):
        rows = torch.nonzero(unsafe).flatten()
        out[rows] = _normalize_by_largest(features[rows], rows + first_row)
    return out


def _normalize_by_largest(features: Tensor, rows: Tensor) -> Tensor:
    """Rows divided by their largest absolute entry, then by their norm; ``rows`` name them."""
    features = features.to(torch.float64, copy=True)
    largest = features.abs().amax(dim=1, keepdim=True)
    if bool((largest == 0).any()):
        row = int(rows[torch.nonzero(largest.flatten() == 0)[0]])
        raise ValueError(
            f"the cosine kernel needs rows with nonzero norm, got an all-zero row at index {row}"
        )
    features.div_(largest)
    return features.div_(torch.linalg.vector_norm(features, dim=1, keepdim=True))


# Columns per block of second_moment off the CPU: blocks this wide keep BLAS near its peak.
_MOMENT_BLOCK = 1024


def second_moment(phi: Tensor, out: Tensor | None = None, *, alpha: float = 1.0) -> Tensor:
    """``phi^T phi`` of (N, D) features, or ``out + alpha phi^T phi`` written into ``out``.

    The product is symmetric: a rank-k update (BLAS SYRK) computes one triangle, half the
    arithmetic of a matrix product. torch has no SYRK; on the CPU, float64 features are handed
    to NumPy (sharing their memory), whose ``a.T @ a`` calls its BLAS's SYRK and mirrors the
    triangle (measured at N = 65k, D = 512, one thread: 2.0x torch's GEMM; torch GEMMs on the
    blocks of one triangle reach 1.4x). Elsewhere (GPU), for D >= 2048 the columns are split
    into k blocks of about 1024, only the k (k + 1) / 2 blocks on and above the diagonal are
    multiplied and the rest mirrored. Either way both triangles are equal.

    Args:
        phi: (N, D) features, float64 for the package's sums.
        out: (D, D) symmetric tensor to add to in place; a new one when omitted.
        alpha: factor of the product (``-1`` subtracts it).

    Returns:
        ``out``, or the new (D, D) tensor.

    Examples:
        >>> phi = torch.arange(6.0, dtype=torch.float64).view(3, 2)
        >>> second_moment(phi)
        tensor([[20., 26.],
                [26., 35.]], dtype=torch.float64)
    """
    if phi.device.type == "cpu" and phi.dtype == torch.float64:
        product = _numpy_syrk(phi)
        if out is None:
            return product if alpha == 1 else product.mul_(alpha)
        return out.add_(product, alpha=alpha)
    dim = phi.shape[1]
    if out is None:
        out = phi.new_zeros(dim, dim)
    blocks = min(8, dim // _MOMENT_BLOCK)
    if blocks < 2:
        return out.addmm_(phi.T, phi, alpha=alpha)
    edges = [dim * index // blocks for index in range(blocks + 1)]
    spans = list(pairwise(edges))
    for row, (top, bottom) in enumerate(spans):
        for left, right in spans[row:]:
            block = out[top:bottom, left:right].addmm_(
                phi[:, top:bottom].T, phi[:, left:right], alpha=alpha
            )
            if left != top:
                out[left:right, top:bottom].copy_(block.T)
    return out


def _numpy_syrk(phi: Tensor) -> Tensor:
    """``phi^T phi`` of a CPU float64 tensor through NumPy's SYRK, as a new (D, D) tensor."""
    array = phi.detach().resolve_conj().resolve_neg().numpy()
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = numpy.ascontiguousarray(array)  # else NumPy would not call BLAS at all
    return torch.from_numpy(array.T @ array)


def gaussian_kernel(x: Tensor, y: Tensor | None = None, *, sigma: float) -> Tensor:
    """Exact Gaussian kernel ``exp(-|x - y|^2 / (2 sigma^2))`` in float64.

    Args:
        x: (N, d) features.
        y: (M, d) features; ``x`` when omitted.
        sigma: bandwidth > 0, in the units of the features.

    Returns:
        The (N, M) kernel matrix (unit diagonal when ``y`` is omitted).
    """
    sigma = check_sigma(sigma)
    x = x.to(torch.float64)
    # -|x - y|^2 = 2 x.y - |x|^2 - |y|^2, built in the one (N, M) buffer the product is written
    # to, then scaled and exponentiated in place: the kernel is the only N x M matrix (800 MB at
    # N = 10k), and x x^T is a SYRK (second_moment), half a GEMM.
    squared_x = (x * x).sum(1)
    if y is None:
        exponent = second_moment(x.T).mul_(2.0)
        squared_y = squared_x
    else:
        y = y.to(torch.float64)
        exponent = torch.mm(x, y.T).mul_(2.0)
        squared_y = (y * y).sum(1)
    # |x_i|^2 + |y_j|^2 is added before it is subtracted (commutative, so K stays exactly
    # symmetric), a few hundred rows at a time to keep that sum a small temporary.
    for first in range(0, exponent.shape[0], 256):
        rows = slice(first, first + 256)
        exponent[rows].sub_(squared_x[rows].unsqueeze(1) + squared_y)
    # Round-off can leave a small positive -|x - y|^2: clamp it to 0.
    exponent.clamp_max_(0.0)
    if y is None:
        exponent.fill_diagonal_(0.0)
    exponent.mul_(0.5 / (sigma * sigma))
    return exponent.exp_()


def random_fourier_frequencies(
    dim: int,
    num_features: int,
    *,
    sigma: float,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw the (dim, num_features) frequency matrix ``W ~ N(0, I / sigma^2)``.

    The draw uses its own CPU generator seeded with ``seed`` (never the global RNG), so every
    DDP rank and every run gets the same frequencies for the same arguments.
    """
    check_positive_int(dim, "dim")
    check_positive_int(num_features, "num_features")
    sigma = check_sigma(sigma)
    generator = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    frequencies = torch.randn(dim, num_features, generator=generator, dtype=torch.float64)
    return (frequencies / sigma).to(device)


def random_fourier_features(features: Tensor, frequencies: Tensor) -> Tensor:
    """Random Fourier features ``[cos(xW), sin(xW)] / sqrt(m)`` of a Gaussian kernel, in float64.

    Each output row has unit norm exactly, so ``phi(x) . phi(x) = 1`` like the exact kernel.

    Args:
        features: (N, d) features.
        frequencies: (d, m) frequency matrix, already divided by the bandwidth.

    Returns:
        (N, 2m) features whose inner products approximate ``exp(-|x - y|^2 / (2 sigma^2))``.
    """
    if frequencies.ndim != 2 or frequencies.shape[0] != features.shape[1]:
        raise ValueError(
            f"`frequencies` must have shape (d, m) with d = {features.shape[1]} (the feature "
            f"dimension), got {tuple(frequencies.shape)}"
        )
    projection = features.to(torch.float64) @ frequencies.to(features.device, torch.float64)
    return fourier_features(projection)


def fourier_features(phases: Tensor) -> Tensor:
    """``[cos(P), sin(P)] / sqrt(m)`` of (N, m) phases ``P = xW``: unit-norm (N, 2m) rows."""
    num_frequencies = phases.shape[1]
    # cos and sin written into one buffer: at n = 10k, m = 2500 fresh 200 MB outputs and a
    # concatenation cost more (page faults, copies) than the trigonometry itself.
    phi = phases.new_empty(phases.shape[0], 2 * num_frequencies)
    torch.cos(phases, out=phi[:, :num_frequencies])
    torch.sin(phases, out=phi[:, num_frequencies:])
    return phi.mul_(1.0 / math.sqrt(num_frequencies))


class RandomFourierFeatures:
    """Seeded random Fourier feature map of the Gaussian kernel with bandwidth ``sigma``.

    The frequencies are drawn on first use, once the input dimension is known, and cached per
    (dimension, device). Pass ``frequencies`` to reuse a published draw exactly.

    Args:
        sigma: bandwidth of the Gaussian kernel; ignored when ``frequencies`` is given.
        num_features: number of frequencies m; the map outputs 2m features.
        seed: seed of the frequency draw.
        frequencies: optional (d, m) matrix, already divided by the bandwidth.
    """

    def __init__(
        self,
        sigma: float | None = None,
        num_features: int | None = None,
        seed: int = 0,
        frequencies: Tensor | None = None,
    ) -> None:
        if frequencies is None:
            self.sigma = check_sigma(sigma)
            self.num_features = check_positive_int(num_features, "num_features")
        else:
            _check_frequencies(frequencies)
            self.sigma = sigma
            self.num_features = frequencies.shape[1]
        self.seed = check_seed(seed)
        self._given = None if frequencies is None else frequencies.to(torch.float64)
        self._cache: dict[tuple[int, torch.device], Tensor] = {}

    @property
    def output_dim(self) -> int:
        """Number of output features, 2m."""
        return 2 * self.num_features

    def frequencies(self, dim: int, device: torch.device) -> Tensor:
        """The (dim, m) frequency matrix on ``device``."""
        key = (dim, torch.device(device))
        if key not in self._cache:
            if self._given is not None:
                if self._given.shape[0] != dim:
                    raise ValueError(
                        f"`frequencies` has {self._given.shape[0]} rows but the features have "
                        f"dimension {dim}"
                    )
                self._cache[key] = self._given.to(device)
            else:
                self._cache[key] = random_fourier_frequencies(
                    dim, self.num_features, sigma=self.sigma, seed=self.seed, device=device
                )
        return self._cache[key]

    def __call__(self, features: Tensor) -> Tensor:
        return random_fourier_features(
            features, self.frequencies(features.shape[1], features.device)
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sigma={self.sigma}, num_features={self.num_features}, "
            f"seed={self.seed})"
        )


def _check_frequencies(frequencies: object) -> None:
    """A given frequency matrix: a finite floating 2-D (d, m) tensor with d, m >= 1."""
    if (
        not isinstance(frequencies, Tensor)
        or frequencies.ndim != 2
        or 0 in frequencies.shape
        or not frequencies.is_floating_point()
    ):
        raise ValueError(
            "`frequencies` must be a floating 2-D (d, m) tensor with d, m >= 1, got "
            f"{type(frequencies).__name__} {tuple(getattr(frequencies, 'shape', ()))}"
            f" {getattr(frequencies, 'dtype', '')}".rstrip()
        )
    if not bool(torch.isfinite(frequencies).all()):
        raise ValueError("`frequencies` must be finite, got NaN or Inf entries")


@dataclass(frozen=True)
class ResolvedKernel:
    """A kernel resolved to the one representation used to compute with it.

    Exactly one of ``feature_map`` (the streaming D x D moment path) and ``kernel_function``
    (the n x n path, which needs all rows) is set. Compute through :meth:`features` and
    :meth:`matrix`: they check what the map or function returns, so a user's callable that
    drops rows or returns NaN is named as the culprit instead of failing later in a solver.
    """

    feature_map: FeatureMap | None
    kernel_function: KernelFunction | None
    label: str = "kernel"
    """How messages name the kernel: ``kernel='cosine'``, ``feature_map``, ``kernel``..."""
    symmetric: bool = False
    """Whether ``kernel_function(x, x)`` is symmetric by construction (the built-in Gaussian): its
    spectrum is then read from one triangle, with no symmetrised copy of the n x n matrix."""

    def features(self, features: Tensor, name: str = "features") -> Tensor:
        """The checked (N, D) float64 kernel features of (N, d) ``features``."""
        check_columns(features, name)
        phi = self.feature_map(features)
        rows = features.shape[0]
        if not isinstance(phi, Tensor) or phi.ndim != 2 or phi.shape[0] != rows or phi.shape[1] < 1:
            raise ValueError(
                f"{self.label} must map (N, d) `{name}` to an (N, D) tensor with N = {rows} and "
                f"D >= 1, got {_describe(phi)}"
            )
        phi = phi.to(torch.float64)
        if not bool(torch.isfinite(phi.sum())) and not bool(torch.isfinite(phi).all()):
            raise ValueError(f"{self.label} returned NaN or Inf features for finite `{name}`")
        return phi

    def moment(self, features: Tensor, out: Tensor | None = None, name: str = "features") -> Tensor:
        """``phi^T phi`` of (N, d) ``features``, added into ``out`` when given.

        The rows are mapped and accumulated :data:`ROW_BLOCK` at a time, so one block of float64
        kernel features is the only O(N D) temporary; the cosine map writes every block into one
        reused buffer (a fresh 32 MiB block each time costs page faults: 2.5x the division).

        Args:
            features: (N, d) finite features, N >= 1.
            out: (D, D) float64 moment to add to in place.
            name: the argument's name in messages.

        Returns:
            ``out``, or a new (D, D) float64 tensor.
        """
        check_columns(features, name)
        buffer = None
        for first in range(0, features.shape[0], ROW_BLOCK):
            block = features[first : first + ROW_BLOCK]
            if self.feature_map is normalize_rows:
                if buffer is None:
                    buffer = block.new_empty(block.shape, dtype=torch.float64)
                phi = _normalize_rows(block, buffer[: block.shape[0]], first_row=first)
            else:
                phi = self.features(block, name)
            if out is not None and out.shape[0] != phi.shape[1]:
                raise ValueError(
                    f"`{name}` map to {phi.shape[1]} kernel features, but the moment they are "
                    f"added to holds {out.shape[0]}: every update must use the same embedder "
                    "and kernel"
                )
            out = second_moment(phi, out)
        return out

    def matrix(self, x: Tensor, y: Tensor | None = None, name: str = "features") -> Tensor:
        """The checked (N, M) float64 kernel matrix of ``x`` and ``y`` (``x`` when omitted)."""
        check_columns(x, name)
        y = x if y is None else y
        matrix = self.kernel_function(x, y)
        shape = (x.shape[0], y.shape[0])
        if not isinstance(matrix, Tensor) or tuple(matrix.shape) != shape:
            raise ValueError(
                f"{self.label} must return the {shape} kernel matrix of `{name}`, got "
                f"{_describe(matrix)}"
            )
        matrix = matrix.to(torch.float64)
        # One reduction instead of an n x n mask; the mask only where the sum is not finite.
        if not bool(torch.isfinite(matrix.sum())) and not bool(torch.isfinite(matrix).all()):
            raise ValueError(f"{self.label} returned NaN or Inf kernel entries for finite `{name}`")
        return matrix


def _describe(value: object) -> str:
    """``Tensor of shape (3,)`` or the type's name, for messages."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def resolve_kernel(
    kernel: KernelSpec | None = None,
    *,
    sigma: float | None = None,
    num_features: int | None = None,
    seed: int = 0,
    feature_map: FeatureMap | None = None,
    frequencies: Tensor | None = None,
) -> ResolvedKernel:
    """Turn the user-facing kernel arguments into a feature map or a kernel function.

    The one place where kernel names are read: the Vendi score and the Schur complement entropy
    (functional forms, metrics, :class:`~diversity_callbacks.PromptRemover`) all resolve here.

    Args:
        kernel: ``"cosine"`` (default; rows L2-normalised, then inner products), ``"linear"``
            (inner products of the raw rows), ``"gaussian"`` (needs ``sigma``; exact unless
            ``num_features`` or ``frequencies`` is given, then approximated by seeded random
            Fourier features), or a callable ``k(X, Y) -> (N, M)`` kernel matrix.
        sigma: Gaussian bandwidth.
        num_features: number of random Fourier frequencies m (2m features) for ``"gaussian"``.
        seed: seed of the random Fourier frequencies (an int in [0, 2^64)); the same on every
            rank.
        feature_map: a callable ``phi(X) -> (N, D)``; the kernel is then ``phi(x) . phi(y)``.
            Pass either ``kernel`` or ``feature_map``.
        frequencies: a (d, m) random Fourier frequency matrix already divided by ``sigma``, to
            reuse a published draw exactly (``"gaussian"`` only; ``sigma`` is then optional).

    Examples:
        >>> resolve_kernel("gaussian", sigma=2.0, num_features=8).feature_map
        RandomFourierFeatures(sigma=2.0, num_features=8, seed=0)
    """
    seed = check_seed(seed)
    if feature_map is not None:
        if kernel is not None:
            raise ValueError(
                f"pass either `kernel` or `feature_map`, got kernel={kernel!r} and a feature_map"
            )
        if not callable(feature_map):
            raise TypeError(f"`feature_map` must be callable, got {type(feature_map).__name__}")
        return ResolvedKernel(feature_map, None, "`feature_map`")
    kernel = "cosine" if kernel is None else kernel
    if callable(kernel):
        return ResolvedKernel(None, kernel, "the `kernel` callable")
    if kernel not in KERNEL_NAMES:
        raise ValueError(f"`kernel` must be one of {KERNEL_NAMES} or a callable, got {kernel!r}")
    label = f"kernel={kernel!r}"
    if kernel != "gaussian":
        for arg, value in (("sigma", sigma), ("num_features", num_features)):
            if value is not None:
                raise ValueError(
                    f"`{arg}` only applies to kernel='gaussian', got kernel={kernel!r}"
                )
        if frequencies is not None:
            raise ValueError(f"`frequencies` only applies to kernel='gaussian', got {label}")
        return ResolvedKernel(normalize_rows if kernel == "cosine" else _as_float64, None, label)
    if frequencies is not None:
        if num_features is not None:
            raise ValueError(
                "pass either `num_features` or `frequencies` (whose columns are the frequencies), "
                f"got num_features={num_features!r} and frequencies"
            )
        features = RandomFourierFeatures(sigma=sigma, frequencies=frequencies, seed=seed)
        return ResolvedKernel(features, None, label)
    if sigma is None:
        raise ValueError(
            "kernel='gaussian' needs a bandwidth `sigma` > 0, got None (there is no automatic rule; "
            'see docs/metrics.md, "Choosing a kernel and sigma", for values used with CLIP embeddings)'
        )
    sigma = check_sigma(sigma)
    if num_features is None:
        return ResolvedKernel(None, _ExactGaussian(sigma), label, symmetric=True)
    return ResolvedKernel(RandomFourierFeatures(sigma, num_features, seed), None, label)


def _as_float64(features: Tensor) -> Tensor:
    """The linear kernel's feature map: the rows themselves, in float64."""
    return features.to(torch.float64)


@dataclass(frozen=True)
class _ExactGaussian:
    """The exact Gaussian kernel as a picklable kernel function."""

    sigma: float

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return gaussian_kernel(x, None if y is x else y, sigma=self.sigma)
