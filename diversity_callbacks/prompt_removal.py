"""Remove from image embeddings what their prompts explain (or keep only that part).

The second use of the Schur complement decomposition (Ospanov, Jalali & Farnia): on reference
pairs, the ridge regression ``Gamma = (C_TT + delta I)^-1 C_TI`` predicts an image's kernel
features from its prompt's. ``x - t Gamma`` ("defocus") keeps what the prompt does not explain,
for clustering or retrieving images by content other than their prompt; ``t Gamma`` ("focus")
keeps only what it does.

Fit and transform happen in one representation, the kernel features ``phi`` of the chosen
kernel: the raw embeddings (``"linear"``, the default: the output stays in the embedding space
and can be fed to any downstream tool), L2-normalised rows (``"cosine"``), or seeded random
Fourier features (``"gaussian"``: the output lives in the 2m-dimensional feature space, and the
frequency matrix is saved with the map so that transform uses the very features it was fitted
on). Mixing representations, as fitting on normalised features and applying to raw ones, leaves
a residual that still correlates with the prompt.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import Tensor

from diversity_callbacks._validation import check_features, check_paired
from diversity_callbacks.functional.kernels import RandomFourierFeatures, second_moment
from diversity_callbacks.functional.schur import (
    DEFAULT_NUM_FEATURES,
    DEFAULT_RIDGE,
    SCHUR_KERNELS,
    SchurKernel,
    check_ridge,
    regression_map,
    schur_feature_map,
)

RemovalMode = Literal["defocus", "focus"]


class PromptRemover:
    """Fit the prompt-to-image map on reference pairs; remove or keep the prompt's part of images.

    Args:
        kernel: representation of both fit and transform: ``"linear"`` (raw embeddings,
            default), ``"cosine"`` (L2-normalised rows) or ``"gaussian"`` (random Fourier
            features, needs ``sigma`` or ``frequencies``).
        sigma: Gaussian bandwidth.
        num_features: random Fourier frequencies m (2m output features).
        seed: seed of the frequency draw.
        frequencies: a (d, m) frequency matrix already divided by ``sigma``.
        ridge: ridge on ``C_TT`` relative to its mean eigenvalue, as in
            :func:`~diversity_callbacks.functional.schur_complement_entropy`.

    Example:
        >>> import torch
        >>> from diversity_callbacks import PromptRemover
        >>> prompts = torch.eye(4).repeat_interleave(8, dim=0)
        >>> images = prompts @ torch.randn(4, 6) + 0.1 * torch.randn(32, 6)
        >>> remover = PromptRemover().fit(images, prompts)
        >>> residual = remover.transform(images, prompts, mode="defocus")
        >>> bool((prompts.T.double() @ residual).abs().max() < 1e-6)  # uncorrelated with prompts
        True
    """

    def __init__(
        self,
        kernel: SchurKernel = "linear",
        *,
        sigma: float | None = None,
        num_features: int = DEFAULT_NUM_FEATURES,
        seed: int = 0,
        frequencies: Tensor | None = None,
        ridge: float = DEFAULT_RIDGE,
    ) -> None:
        self.kernel = kernel
        self.ridge = check_ridge(ridge)
        self.feature_map = schur_feature_map(
            kernel, sigma=sigma, num_features=num_features, seed=seed, frequencies=frequencies
        )
        self.gamma: Tensor | None = None
        """(D_T, D_I) float64 map ``(C_TT + delta I)^-1 C_TI``, set by :meth:`fit`."""
        self._input_dims: tuple[int, int] | None = None

    def fit(self, image_features: Tensor, text_features: Tensor) -> PromptRemover:
        """Fit ``Gamma`` on paired (n, d_I) image and (n, d_T) text features; returns ``self``."""
        phi_image, phi_text = self._features(image_features, text_features, check_fitted=False)
        if phi_image.shape[0] == 0:
            raise ValueError("`image_features` must have at least one row to fit, got shape (0, D)")
        self.gamma = regression_map(
            second_moment(phi_text), phi_text.T @ phi_image, ridge=self.ridge
        )
        self._input_dims = (image_features.shape[1], text_features.shape[1])
        return self

    def transform(
        self, image_features: Tensor, text_features: Tensor, mode: RemovalMode = "defocus"
    ) -> Tensor:
        """Image features with the prompt's part removed (``"defocus"``) or alone (``"focus"``).

        Returns:
            (n, D_I) float64 kernel features: ``phi(x) - phi(t) Gamma`` or ``phi(t) Gamma``.
        """
        if mode not in ("defocus", "focus"):
            raise ValueError(f"`mode` must be 'defocus' or 'focus', got {mode!r}")
        phi_image, phi_text = self._features(image_features, text_features, check_fitted=True)
        explained = phi_text @ self.gamma.to(phi_text.device)
        return phi_image - explained if mode == "defocus" else explained

    def _features(
        self, image_features: Tensor, text_features: Tensor, *, check_fitted: bool
    ) -> tuple[Tensor, Tensor]:
        if check_fitted and self.gamma is None:
            raise RuntimeError(
                "PromptRemover is not fitted: call fit(image_features, text_features)"
            )
        image_dim, text_dim = self._input_dims if check_fitted else (None, None)
        check_features(image_features, "image_features", dim=image_dim)
        check_features(text_features, "text_features", dim=text_dim)
        check_paired(image_features, text_features, "image_features", "text_features")
        if self.kernel == "gaussian" and image_features.shape[1] != text_features.shape[1]:
            raise ValueError(
                "kernel='gaussian' shares one frequency matrix between text and images, so "
                "`image_features` and `text_features` must have the same dimension, got "
                f"{image_features.shape[1]} and {text_features.shape[1]}"
            )
        return self.feature_map(image_features), self.feature_map(text_features)

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted map as a dict of tensors (kernel name as bytes, ridge, Gamma, frequencies)."""
        if self.gamma is None:
            raise RuntimeError("PromptRemover is not fitted: call fit() before saving")
        image_dim, text_dim = self._input_dims
        state = {
            "kernel": torch.tensor(list(self.kernel.encode()), dtype=torch.uint8),
            "ridge": torch.tensor(self.ridge, dtype=torch.float64),
            "input_dims": torch.tensor([image_dim, text_dim], dtype=torch.long),
            "gamma": self.gamma.cpu(),
        }
        if isinstance(self.feature_map, RandomFourierFeatures):
            state["frequencies"] = self.feature_map.frequencies(image_dim, torch.device("cpu"))
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted map to ``path`` (a plain dict of tensors, loadable with weights_only)."""
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PromptRemover:
        """Read a map written by :meth:`save`; only tensors are unpickled (``weights_only=True``)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = {"kernel", "ridge", "input_dims", "gamma"}
        if not isinstance(state, dict) or not expected <= set(state):
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{os.fspath(path)!r} is not a saved PromptRemover: expected the keys "
                f"{sorted(expected)}, got {found}"
            )
        kernel = bytes(state["kernel"].tolist()).decode()
        if kernel not in SCHUR_KERNELS:
            raise ValueError(f"{os.fspath(path)!r} holds an unknown kernel {kernel!r}")
        remover = cls(kernel, ridge=float(state["ridge"]), frequencies=state.get("frequencies"))
        remover.gamma = state["gamma"].to(torch.float64)
        image_dim, text_dim = state["input_dims"].tolist()
        remover._input_dims = (image_dim, text_dim)
        return remover
