"""A synthetic generator with known modes, and float64 NumPy re-implementations of the papers'
definitions (FKEA's modes from K / n, KEN's novelty from its block matrix) to test against."""

from __future__ import annotations

import numpy as np
import torch

WEIGHTS = (0.3, 0.22, 0.17, 0.13, 0.1, 0.08)
"""True shares of the six modes of :func:`mode_features`."""


def mode_labels(num_samples: int, weights: tuple[float, ...] = WEIGHTS) -> torch.Tensor:
    """Each sample's true mode, sample i of mode ``labels[i]``, in proportion to ``weights``."""
    counts = [round(w * num_samples) for w in weights]
    counts[0] += num_samples - sum(counts)
    return torch.repeat_interleave(torch.arange(len(weights)), torch.tensor(counts))


def mode_features(
    labels: torch.Tensor, dim: int = 64, noise: float = 0.01, seed: int = 0
) -> torch.Tensor:
    """Well-separated modes: orthonormal centres (one fixed random rotation) plus small noise
    drawn from ``seed``, float64."""
    fixed = torch.Generator().manual_seed(12345)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=fixed, dtype=torch.float64))
    centres = rotation[: int(labels.max()) + 1]
    generator = torch.Generator().manual_seed(seed)
    return centres[labels] + noise * torch.randn(
        labels.numel(), dim, generator=generator, dtype=torch.float64
    )


def reference_modes(kernel: np.ndarray, num_modes: int, top: int) -> tuple[np.ndarray, list]:
    """FKEA's definition on the n x n matrix: eigenvalues of K / n, top samples by eigenvector
    entry, each vector's sign such that its entries sum to >= 0."""
    values, vectors = np.linalg.eigh(kernel / np.trace(kernel))
    order = np.argsort(values)[::-1][:num_modes]
    tops = []
    for column in order:
        vector = vectors[:, column] * (1 if vectors[:, column].sum() >= 0 else -1)
        tops.append(np.argsort(-vector, kind="stable")[:top])
    return values[order], tops


def reference_novelty(
    k_aa: np.ndarray, k_ab: np.ndarray, k_bb: np.ndarray, eta: float, top: int
) -> tuple[float, np.ndarray, list]:
    """KEN's definition: the (n + m) block matrix [[K_AA/n, sqrt(eta) K_AB/sqrt(nm)],
    [-sqrt(eta) K_BA/sqrt(nm), -eta K_BB/m]] (not symmetric), general eigendecomposition; its
    positive eigenvalues are those of C_A - eta C_B. n and m are the traces of K_AA and K_BB
    (the set sizes for kernels with unit diagonal; the package's normalisation for the linear
    kernel). Returns the mass, the positive eigenvalues (descending) and each mode's top samples
    of A."""
    n, m = np.trace(k_aa), np.trace(k_bb)
    block = np.block(
        [
            [k_aa / n, np.sqrt(eta) * k_ab / np.sqrt(n * m)],
            [-np.sqrt(eta) * k_ab.T / np.sqrt(n * m), -eta * k_bb / m],
        ]
    )
    values, vectors = np.linalg.eig(block)
    values, vectors = values.real, vectors.real
    keep = values > 1e-9
    order = np.argsort(values)[::-1][: int(keep.sum())]
    tops = []
    for column in order:
        a_part = vectors[: k_ab.shape[0], column]
        a_part = a_part * (1 if a_part.sum() >= 0 else -1)
        tops.append(np.argsort(-a_part, kind="stable")[:top])
    return float(values[keep].sum()), values[order], tops


MODE_OF_CLASS = torch.repeat_interleave(torch.arange(6), torch.tensor([30, 22, 17, 13, 10, 8]))
"""100 classes, each one of six modes: class c draws mode MODE_OF_CLASS[c] (shares WEIGHTS when
every class draws as many samples)."""


def mode_generator(dropped: tuple[int, ...] = (), dim: int = 64, noise: float = 0.01):
    """A class-conditional sample_fn of the synthetic modes; the classes of ``dropped`` modes
    draw from the surviving ones instead (the same seeds, other modes)."""
    fixed = torch.Generator().manual_seed(12345)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=fixed, dtype=torch.float64))
    kept = torch.tensor([m for m in range(6) if m not in dropped])
    modes = MODE_OF_CLASS.clone()
    lost = torch.isin(modes, torch.tensor(dropped, dtype=torch.long))
    modes[lost] = kept[torch.arange(int(lost.sum())) % len(kept)]

    def sample(labels: torch.Tensor, generators: list) -> torch.Tensor:
        noises = torch.stack(
            [torch.randn(dim, generator=g, dtype=torch.float64) for g in generators]
        )
        return rotation[modes[labels.cpu()]] + noise * noises

    return sample
