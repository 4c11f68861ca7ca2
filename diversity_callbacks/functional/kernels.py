"""Similarity kernels and their explicit feature maps.

A kernel with an explicit, finite feature map ``phi`` (cosine, linear, random Fourier features,
or a user's map) lets every spectral quantity be computed from the D x D second moment
``sum_i phi(x_i) phi(x_i)^T`` instead of the n x n kernel matrix: the nonzero eigenvalues agree.
That moment is a sum, so it streams batch by batch and sums across DDP ranks. Kernels without a
finite feature map (the exact Gaussian, a user's kernel function) need all rows at once.

Everything is computed in float64: kernel entries and moments are sums of many products.
"""

from __future__ import annotations

import hashlib
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Literal

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


def empty_float64(shape: tuple[int, ...], device: torch.device) -> Tensor:
    """A new uninitialised float64 tensor; on the CPU, NumPy's memory.

    NumPy asks Linux for transparent huge pages for arrays of 4 MiB and more, torch does not:
    the first write to a new buffer, one page fault per page, costs a third (measured, one
    thread: 4.8 ms against 15.2 ms for 32 MiB, 23 ms against 83 ms for 200 MiB).
    """
    if device.type == "cpu":
        return torch.from_numpy(numpy.empty(shape, dtype=numpy.float64))
    return torch.empty(shape, dtype=torch.float64, device=device)


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
    out = empty_float64(features.shape, features.device) if out is None else out
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
# Rows up to which second_moment adds a CPU product into ``out`` by one in-place GEMM: NumPy's
# SYRK mirrors its triangle in a strided loop and returns a new matrix to add, which costs more
# than the GEMM's extra arithmetic for few rows (D = 512, one thread: 0.26 ms against 0.90 ms
# at 16 rows, 0.79 against 1.13 at 64, even at about 100).
_GEMM_ROWS = 64


class ScratchBuffers:
    """Float64 temporaries kept from call to call, by name: a streaming metric's update makes
    the same multi-megabyte ones every batch, and fresh ones cost a page fault per 4 KiB written
    (about 2,800 a batch of 1024 rows with prompts, 2.6 of its 21 ms at D = 512). Each buffer
    keeps the most rows asked of it; ``keep=False`` returns fresh tensors (one-off calls)."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, columns: int, device: torch.device) -> Tensor:
        """An uninitialised contiguous (rows, columns) float64 tensor on ``device``."""
        buffer = self._buffers.get(name)
        if (
            buffer is None
            or buffer.shape[0] < rows
            or buffer.shape[1] != columns
            or (buffer.device != torch.device(device))
        ):
            buffer = torch.empty(rows, columns, dtype=torch.float64, device=device)
            if self.keep:
                self._buffers[name] = buffer
        return buffer[:rows]

    def clear(self) -> None:
        """Free every kept buffer (a metric's ``reset``: the next batch may be of another size)."""
        self._buffers.clear()

    def float64(self, name: str, values: Tensor) -> Tensor:
        """``values`` as float64: itself if it already is, else copied into buffer ``name``."""
        if values.dtype == torch.float64:
            return values
        return self.get(name, values.shape[0], values.shape[1], values.device).copy_(values)


FRESH = ScratchBuffers(keep=False)
"""Scratch that keeps nothing: every buffer it gives is a new tensor."""


def second_moment(
    phi: Tensor,
    out: Tensor | None = None,
    *,
    alpha: float = 1.0,
    scratch: ScratchBuffers = FRESH,
    overwrite: bool = False,
) -> Tensor:
    """``phi^T phi`` of (N, D) features, or ``out + alpha phi^T phi`` written into ``out``.

    The product is symmetric: a rank-k update (BLAS SYRK) computes one triangle, half the
    arithmetic of a matrix product. torch has no SYRK; on the CPU, float64 features are handed
    to NumPy (sharing their memory), whose ``a.T @ a`` calls its BLAS's SYRK and mirrors the
    triangle (measured at N = 65k, D = 512, one thread: 2.0x torch's GEMM; torch GEMMs on the
    blocks of one triangle reach 1.4x); with ``out`` and at most 64 rows one in-place GEMM
    adds the product instead (no new matrix to add). Elsewhere (GPU), for D >= 2048 the columns
    are split into k blocks of about 1024, only the k (k + 1) / 2 blocks on and above the
    diagonal are multiplied and the rest mirrored. The triangles are equal, or (a GEMM) equal
    to round-off.

    Args:
        phi: (N, D) features, float64 for the package's sums.
        out: (D, D) symmetric tensor to add to in place; a new one when omitted.
        alpha: factor of the product (``-1`` subtracts it).
        scratch: where NumPy writes the product before it is added to ``out`` (CPU, float64).
        overwrite: write ``alpha phi^T phi`` into ``out`` instead of adding it (``out``'s
            values are ignored, as a zero block's need not be read).

    Returns:
        ``out``, or the new (D, D) tensor.

    Examples:
        >>> phi = torch.arange(6.0, dtype=torch.float64).view(3, 2)
        >>> second_moment(phi)
        tensor([[20., 26.],
                [26., 35.]], dtype=torch.float64)
    """
    if phi.device.type == "cpu" and phi.dtype == torch.float64:
        return _cpu_moment(phi, out, alpha, scratch, overwrite)
    dim = phi.shape[1]
    if out is None or overwrite:
        out = phi.new_zeros(dim, dim) if out is None else out.zero_()
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


def _cpu_moment(
    phi: Tensor, out: Tensor | None, alpha: float, scratch: ScratchBuffers, overwrite: bool
) -> Tensor:
    """:func:`second_moment` of CPU float64 features."""
    if out is not None and phi.shape[0] <= _GEMM_ROWS:
        return out.addmm_(phi.T, phi, beta=0 if overwrite else 1, alpha=alpha)
    dim = phi.shape[1]
    if overwrite and out is not None and out.is_contiguous():  # NumPy writes it itself
        return _numpy_syrk(phi, out) if alpha == 1 else _numpy_syrk(phi, out).mul_(alpha)
    product = _numpy_syrk(phi, None if out is None else scratch.get("moment", dim, dim, "cpu"))
    if out is None:
        return product if alpha == 1 else product.mul_(alpha)
    return out.copy_(product).mul_(alpha) if overwrite else out.add_(product, alpha=alpha)


def _numpy_syrk(phi: Tensor, out: Tensor | None = None) -> Tensor:
    """``phi^T phi`` of a CPU float64 tensor through NumPy's SYRK, as a new (D, D) tensor or
    written into ``out`` (contiguous)."""
    array = phi.detach().resolve_conj().resolve_neg().numpy()
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = numpy.ascontiguousarray(array)  # else NumPy would not call BLAS at all
    if out is None:
        return torch.from_numpy(array.T @ array)
    numpy.matmul(array.T, array, out=out.numpy())  # NumPy still takes its SYRK with out=
    return out


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
    for first in range(0, exponent.shape[0], _KERNEL_ROWS):
        rows = slice(first, first + _KERNEL_ROWS)
        exponent[rows].sub_(squared_x[rows].unsqueeze(1) + squared_y)
    if y is None:
        exponent.fill_diagonal_(0.0)
    return _exponentiate(exponent, sigma)


# Rows per block of the Gaussian kernel: a block of 10k columns (5 MiB) is still in cache for
# the passes after its product (measured at n = 3000, d = 512, one thread: 64 to 256 rows
# within 5% of one another).
_KERNEL_ROWS = 128


def _exponentiate(exponent: Tensor, sigma: float) -> Tensor:
    """``exp(exponent / (2 sigma^2))`` in place, for ``exponent = -|x - y|^2``.

    Round-off can leave a small positive ``-|x - y|^2``: it is clamped to 0 first.
    """
    return exponent.clamp_max_(0.0).mul_(0.5 / (sigma * sigma)).exp_()


def gaussian_kernel_triangle(x: Tensor, *, sigma: float) -> Tensor:
    """The exact Gaussian kernel of ``x`` with itself, for an eigensolver that reads one triangle.

    Only what ``eigvalsh`` (torch's and NumPy's, ``UPLO="L"``) reads is built: the lower
    triangle, in a column-major (N, N) tensor (the transpose of a row-major buffer). Row block
    by row block of the buffer, the product ``2 x_i . x_j - |x_i|^2 - |x_j|^2`` is written by one
    GEMM and clamped, scaled and exponentiated while the block is in cache; there is no
    mirroring, and torch's column-major working copy of it is a plain copy (docs/performance.md,
    "Exact Gaussian against a bare eigvalsh"). Entries above the diagonal are not the kernel's
    (zeros, and kernel values near the diagonal): use :func:`gaussian_kernel` for the matrix.

    Args:
        x: (N, d) finite features.
        sigma: bandwidth > 0, in the units of the features.

    Returns:
        (N, N) float64 tensor whose lower triangle is the kernel matrix (unit diagonal).

    Raises:
        ValueError: if an entry is not finite (features so large that ``|x|^2`` overflows).
    """
    sigma = check_sigma(sigma)
    x = x.to(torch.float64)
    size = x.shape[0]
    squared = (x * x).sum(1)
    # torch's memory, not NumPy's huge pages (empty_float64): after an eigendecomposition has
    # freed its working copy, huge pages for 5000 x 5000 cost 0.42 s of memory compaction against
    # 0.09 s of plain page faults (one thread, idle); the eigensolver copies the matrix anyway.
    buffer = torch.empty(size, size, dtype=torch.float64, device=x.device)
    for first in range(0, size, _KERNEL_ROWS):
        rows = slice(first, first + _KERNEL_ROWS)
        # Row i of the buffer is column i of the result: its entries j >= i are the lower triangle.
        block = buffer[rows, first:]
        torch.add(squared[rows].unsqueeze(1), squared[first:], out=block)
        block.addmm_(x[rows], x[first:].T, beta=-1.0, alpha=2.0)
        block.diagonal().zero_()  # |x_i - x_i|^2 is 0 exactly, whatever the round-off
        _exponentiate(block, sigma)
        if not bool(torch.isfinite(block.sum())):
            raise ValueError(
                f"the Gaussian kernel of `x` has NaN or Inf entries (rows {first} onwards): "
                "features this large overflow |x|^2, rescale them"
            )
        buffer[rows, :first].zero_()
    return buffer.T


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


def fourier_features(phases: Tensor, out: Tensor | None = None) -> Tensor:
    """``[cos(P), sin(P)] / sqrt(m)`` of (N, m) phases ``P = xW``: unit-norm (N, 2m) rows,
    written into ``out`` (an (N, 2m) tensor) when given."""
    num_frequencies = phases.shape[1]
    # cos and sin written into one buffer: at n = 10k, m = 2500 fresh 200 MB outputs and a
    # concatenation cost more (page faults, copies) than the trigonometry itself.
    phi = phases.new_empty(phases.shape[0], 2 * num_frequencies) if out is None else out
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
    triangle: Callable[[Tensor], Tensor] | None = None
    """For a kernel symmetric by construction (the built-in Gaussian), ``x ->`` the kernel matrix
    of ``x`` with itself written in its lower triangle only, which its spectrum is read from:
    no symmetrised copy of the n x n matrix (see :meth:`self_matrix`)."""

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
                    buffer = empty_float64(block.shape, block.device)
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

    def self_matrix(self, x: Tensor, name: str = "features") -> tuple[Tensor, bool]:
        """The kernel matrix of ``x`` with itself for its spectrum, and whether it is symmetric
        by construction: then only its lower triangle is the kernel's (:attr:`triangle`), which
        is what :func:`~diversity_callbacks.functional.spectrum.normalized_spectrum` reads."""
        if self.triangle is None:
            return self.matrix(x, name=name), False
        return self.triangle(check_columns(x, name)), True

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


DEFAULT_KERNEL: KernelName = "cosine"
"""The kernel of every score (Vendi, per-condition Vendi, SCE, modes, novelty) when none is
given: ``k(x, x) = 1``, as the scores' definitions ask, and no bandwidth to choose (docs/metrics.md,
"Kernel defaults")."""
REMOVER_KERNEL: KernelName = "linear"
""":class:`~diversity_callbacks.PromptRemover`'s kernel when none is given: its output stays in the
embedding space, and what it removes is exactly the part linear in the prompt (docs/metrics.md)."""
EXPLICIT_NUM_FEATURES = 2500
"""Random Fourier frequencies of a Gaussian kernel that must have an explicit feature map (the
Schur complement entropy, the prompt remover): the published method's 2 x 2500 features."""

_PARSE_KEYS = {
    "sigma": "sigma",
    "features": "num_features",
    "num_features": "num_features",
    "seed": "seed",
}
"""The settings a kernel's text may give, by their name in the text."""
_ACCEPTED = (
    "a kernel name (cosine, linear, gaussian), optionally followed by ':' and comma-separated "
    "key=value settings: sigma=<number>, features=<int>, seed=<int> (e.g. "
    "'gaussian:sigma=3.5,features=2048')"
)


@dataclass(frozen=True, eq=False)
class Kernel:
    """A similarity kernel as one value: what every score, metric and the CLI take as ``kernel``.

    Validated when built (each error names the argument, what it expects and what it got), it
    resolves itself to the representation used to compute (:meth:`resolve`), gives the settings
    that decide a metric's states (:meth:`settings`, compared by ``merge_state``) and parses from
    the CLI's text (:meth:`parse`; ``str(kernel)`` gives that text back for the built-in kernels).
    Two kernels are equal when their settings are (frequencies are compared by content).

    Args:
        name: ``"cosine"`` (rows L2-normalised, then inner products; the default), ``"linear"``
            (inner products of the raw rows), ``"gaussian"`` (``exp(-|x - y|^2 / (2 sigma^2))``,
            exact unless ``num_features`` or ``frequencies`` is given) or a callable
            ``k(X, Y) -> (N, M)`` kernel matrix. ``None`` with a ``feature_map``.
        sigma: the Gaussian bandwidth, in the units of the features (required for
            ``"gaussian"`` unless ``frequencies`` is given).
        num_features: approximate the Gaussian with this many seeded random Fourier frequencies
            m (2m features), so that its moments stream and sum across ranks.
        seed: seed of the random Fourier frequencies, an int in [0, 2^64); the same on every rank.
        frequencies: a (d, m) random Fourier frequency matrix already divided by ``sigma``, to
            reuse a published draw exactly (``"gaussian"`` only, instead of ``num_features``).
        feature_map: a callable ``phi(X) -> (N, D)``; the kernel is then ``phi(x) . phi(y)``
            (instead of ``name``).

    Examples:
        >>> Kernel.parse("gaussian:sigma=3.5,features=2048")
        Kernel('gaussian', sigma=3.5, num_features=2048)
        >>> str(Kernel("gaussian", sigma=3.5, num_features=2048))
        'gaussian:sigma=3.5,features=2048'
        >>> Kernel("gaussian", sigma=2.0, num_features=8).resolve().feature_map
        RandomFourierFeatures(sigma=2.0, num_features=8, seed=0)
    """

    name: KernelName | KernelFunction | None = None
    sigma: float | None = None
    num_features: int | None = None
    seed: int = 0
    frequencies: Tensor | None = None
    feature_map: FeatureMap | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.feature_map is not None:
            self._check_feature_map()
            return
        if self.name is None:
            object.__setattr__(self, "name", DEFAULT_KERNEL)
        if callable(self.name):
            self._refuse_gaussian_settings("the `kernel` callable")
        elif self.name not in KERNEL_NAMES:
            raise ValueError(
                f"`kernel` must be one of {KERNEL_NAMES} or a callable, got {self.name!r}"
            )
        elif self.name != "gaussian":
            self._refuse_gaussian_settings(f"kernel={self.name!r}")
        else:
            self._check_gaussian()

    def _check_feature_map(self) -> None:
        if self.name is not None:
            raise ValueError(
                f"pass either `kernel` or `feature_map`, got kernel={self.name!r} and a feature_map"
            )
        if not callable(self.feature_map):
            raise TypeError(
                f"`feature_map` must be callable, got {type(self.feature_map).__name__}"
            )
        self._refuse_gaussian_settings("a `feature_map`")

    def _refuse_gaussian_settings(self, kind: str) -> None:
        """``sigma``, ``num_features`` and ``frequencies`` are settings of the Gaussian alone."""
        for arg in ("sigma", "num_features", "frequencies"):
            if getattr(self, arg) is not None:
                raise ValueError(f"`{arg}` only applies to kernel='gaussian', got {kind}")

    def _check_gaussian(self) -> None:
        if self.frequencies is not None:
            if self.num_features is not None:
                raise ValueError(
                    "pass either `num_features` or `frequencies` (whose columns are the "
                    f"frequencies), got num_features={self.num_features!r} and frequencies"
                )
            _check_frequencies(self.frequencies)
        elif self.sigma is None:
            raise ValueError(
                "kernel='gaussian' needs a bandwidth `sigma` > 0, got None (there is no automatic "
                'rule; see docs/metrics.md, "Choosing a kernel and sigma", for values used with '
                "CLIP embeddings)"
            )
        if self.sigma is not None:
            object.__setattr__(self, "sigma", check_sigma(self.sigma))
        if self.num_features is not None:
            check_positive_int(self.num_features, "num_features")

    @property
    def label(self) -> str:
        """How messages name the kernel: ``kernel='cosine'``, ``feature_map``..."""
        if self.feature_map is not None:
            return "`feature_map`"
        return "the `kernel` callable" if callable(self.name) else f"kernel={self.name!r}"

    def resolve(self) -> ResolvedKernel:
        """The feature map or kernel function to compute with (a fresh frequency cache)."""
        if self.feature_map is not None:
            return ResolvedKernel(self.feature_map, None, self.label)
        if callable(self.name):
            return ResolvedKernel(None, self.name, self.label)
        if self.name != "gaussian":
            feature_map = normalize_rows if self.name == "cosine" else _as_float64
            return ResolvedKernel(feature_map, None, self.label)
        if self.frequencies is not None:
            features = RandomFourierFeatures(
                sigma=self.sigma, frequencies=self.frequencies, seed=self.seed
            )
            return ResolvedKernel(features, None, self.label)
        if self.num_features is None:
            exact = _ExactGaussian(self.sigma)
            return ResolvedKernel(None, exact, self.label, triangle=exact.triangle)
        features = RandomFourierFeatures(self.sigma, self.num_features, self.seed)
        return ResolvedKernel(features, None, self.label)

    def explicit(self, owner: str) -> Kernel:
        """This kernel with an explicit feature map: the exact Gaussian becomes its
        :data:`EXPLICIT_NUM_FEATURES` random features; a kernel callable has none (``owner``,
        what needs the map, is named in the error)."""
        if callable(self.name):
            raise ValueError(
                f"{owner} needs an explicit feature map shared by text and images: pass a kernel "
                "name ('cosine', 'linear', 'gaussian') or `feature_map=`, got the kernel callable "
                f"{self.name!r}"
            )
        if self.name == "gaussian" and self.num_features is None and self.frequencies is None:
            return replace(self, num_features=EXPLICIT_NUM_FEATURES)
        return self

    def settings(self) -> dict[str, Any]:
        """What decides a metric's states, for ``merge_state`` to compare (as in 0.1): the feature
        map, or the frequencies by digest, or the name, ``sigma`` and (where random features are
        drawn) ``num_features`` and ``seed``."""
        if self.feature_map is not None:
            return {"feature_map": self.feature_map}
        if self.frequencies is not None:  # by content: two copies of one matrix agree
            return {"frequencies": _digest(self.frequencies)}
        settings: dict[str, Any] = {"kernel": self.name}
        if self.sigma is not None:
            settings["sigma"] = self.sigma
        if self.num_features is not None:
            settings.update(num_features=self.num_features, seed=self.seed)
        return settings

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kernel):
            return NotImplemented
        return self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(tuple(self.settings().items()))

    @classmethod
    def parse(cls, text: str) -> Kernel:
        """A kernel from its text, as the CLI takes it: ``"cosine"``, ``"linear"``,
        ``"gaussian:sigma=3.5"``, ``"gaussian:sigma=3.5,features=2048,seed=1"``.

        Raises:
            ValueError: naming the text, the part that is wrong and what is accepted.
        """
        if not isinstance(text, str):
            raise TypeError(f"`kernel` text must be a str, got {type(text).__name__}")
        name, _, rest = text.partition(":")
        options: dict[str, Any] = {}
        for part in rest.split(",") if rest.strip() else ():
            key, equals, value = (piece.strip() for piece in part.partition("="))
            options.update(_parsed_option(text, part, key if equals else None, value))
        try:
            return cls(name.strip(), **options)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"cannot read the kernel {text!r}: {error}; accepted: {_ACCEPTED}"
            ) from None

    def __str__(self) -> str:
        if self.feature_map is not None:
            return f"feature_map={self.feature_map!r}"
        if callable(self.name):
            return f"kernel={self.name!r}"
        parts = [f"sigma={self.sigma!r}"] if self.sigma is not None else []
        if self.frequencies is not None:
            parts.append(f"frequencies={_digest(self.frequencies)}")
        if self.num_features is not None:
            parts.append(f"features={self.num_features}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        return ":".join([self.name, ",".join(parts)]) if parts else self.name

    def __repr__(self) -> str:
        given = [repr(self.name)] if self.name is not None else []
        for arg in ("sigma", "num_features"):
            if getattr(self, arg) is not None:
                given.append(f"{arg}={getattr(self, arg)!r}")
        if self.seed:
            given.append(f"seed={self.seed}")
        if self.frequencies is not None:
            given.append(f"frequencies=<{_digest(self.frequencies)}>")
        if self.feature_map is not None:
            given.append(f"feature_map={self.feature_map!r}")
        return f"Kernel({', '.join(given)})"


def _parsed_option(text: str, part: str, key: str | None, value: str) -> dict[str, Any]:
    """One ``key=value`` of a kernel's text as a :class:`Kernel` argument."""
    argument = _PARSE_KEYS.get(key or "")
    convert = float if argument == "sigma" else int
    try:
        if argument is None:
            raise ValueError
        return {argument: convert(value)}
    except ValueError:
        expected = "a number" if argument == "sigma" else "an integer"
        if key is None:
            problem = "expected key=value"
        else:
            problem = f"{key} must be {expected}" if argument else f"unknown setting {key!r}"
        raise ValueError(
            f"cannot read the kernel {text!r}: bad part {part.strip()!r} ({problem}); "
            f"accepted: {_ACCEPTED}"
        ) from None


def _digest(frequencies: Tensor) -> str:
    """``(d, m) sha1 0123456789ab``: a frequency matrix by its shape and content."""
    digest = hashlib.sha1(frequencies.detach().cpu().double().numpy().tobytes()).hexdigest()
    return f"{tuple(frequencies.shape)} sha1 {digest[:12]}"


KernelArgument = Kernel | KernelSpec | None
"""What a score's ``kernel`` argument takes: a :class:`Kernel`, its text (a name, or
``"gaussian:sigma=3.5"``), a kernel callable, or None for the score's default."""

FLAT_KERNEL_OPTIONS = ("sigma", "num_features", "seed", "frequencies", "feature_map")
"""The kernel arguments of 0.1, now settings of :class:`Kernel` (deprecated: one release)."""


def as_kernel(
    kernel: KernelArgument,
    options: dict[str, Any],
    owner: str,
    *,
    default: KernelName = DEFAULT_KERNEL,
    strict: bool = True,
) -> Kernel:
    """The :class:`Kernel` of a score's ``kernel`` argument and its 0.1 flat kernel arguments.

    ``options`` holds the caller's keyword arguments: the flat ones (:data:`FLAT_KERNEL_OPTIONS`)
    are taken out of it and warn once (``FutureWarning``); with ``strict``, any other keyword is a
    ``TypeError``, as Python raises for an unexpected keyword. ``owner`` names the caller.
    """
    flat = {name: options.pop(name) for name in FLAT_KERNEL_OPTIONS if name in options}
    if strict and options:
        raise TypeError(f"{owner}() got an unexpected keyword argument {next(iter(options))!r}")
    # None is what 0.1 defaulted to, except for the seed (an int), so a None seed still fails.
    given = {name: value for name, value in flat.items() if value is not None or name == "seed"}
    if isinstance(kernel, Kernel):
        if given:
            raise TypeError(
                f"{owner}: give the kernel's settings in the Kernel, not also as {sorted(given)}"
            )
        return kernel
    if not given:
        if kernel is None:
            return Kernel(default)
        # A bare name is built directly, so that its errors read as they did in 0.1.
        return (
            Kernel(kernel) if kernel in KERNEL_NAMES or callable(kernel) else Kernel.parse(kernel)
        )
    if kernel is None and "feature_map" not in given:
        kernel = default
    value = Kernel(kernel, **given)
    warnings.warn(
        f"{owner}: passing {', '.join(f'`{name}`' for name in given)} beside `kernel` is "
        f"deprecated and will stop working in 0.3: pass kernel={value!r}",
        FutureWarning,
        stacklevel=3,
    )
    return value


def resolve_kernel(kernel: KernelArgument = None, **options: Any) -> ResolvedKernel:
    """Turn a score's ``kernel`` argument into a feature map or a kernel function.

    The one place where kernel arguments are read: the Vendi score, the Schur complement entropy,
    the modes and :class:`~diversity_callbacks.PromptRemover` all resolve through it.

    Args:
        kernel: a :class:`Kernel`, its text (``"cosine"``, the default; ``"linear"``;
            ``"gaussian:sigma=3.5"``...) or a kernel callable ``k(X, Y) -> (N, M)``.
        options: the 0.1 flat kernel arguments (``sigma``, ``num_features``, ``seed``,
            ``frequencies``, ``feature_map``), deprecated: settings of :class:`Kernel` now.

    Examples:
        >>> resolve_kernel(Kernel("gaussian", sigma=2.0, num_features=8)).feature_map
        RandomFourierFeatures(sigma=2.0, num_features=8, seed=0)
    """
    return as_kernel(kernel, options, "resolve_kernel").resolve()


def _as_float64(features: Tensor) -> Tensor:
    """The linear kernel's feature map: the rows themselves, in float64."""
    return features.to(torch.float64)


@dataclass(frozen=True)
class _ExactGaussian:
    """The exact Gaussian kernel as a picklable kernel function."""

    sigma: float

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return gaussian_kernel(x, None if y is x else y, sigma=self.sigma)

    def triangle(self, x: Tensor) -> Tensor:
        """The kernel of ``x`` with itself, lower triangle only (:func:`gaussian_kernel_triangle`)."""
        return gaussian_kernel_triangle(x, sigma=self.sigma)
