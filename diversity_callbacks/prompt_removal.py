"""Remove from image embeddings what their prompts explain (or keep only that part).

The second use of the Schur complement decomposition (Ospanov, Jalali & Farnia): on reference
pairs, the regression ``Gamma = C_TT^+ C_TI`` predicts an image's kernel
features from its prompt's. ``x - t Gamma`` ("defocus") keeps what the prompt does not explain,
for clustering or retrieving images by content other than their prompt; ``t Gamma`` ("focus")
keeps only what it does.

Fit and transform happen in one representation, the kernel features ``phi`` of the chosen
kernel, resolved as everywhere in the package: the raw embeddings (``"linear"``), L2-normalised
rows (``"cosine"``), seeded random Fourier features (``"gaussian"``: the output lives in the
2m-dimensional feature space, and the frequency matrix is saved with the map so that transform
uses the very features it was fitted on), or a user's ``feature_map``. Mixing representations,
as fitting on normalised features and applying to raw ones, leaves a residual that still
correlates with the prompt.

The default is ``"linear"``, unlike the metrics' ``"cosine"``: a score needs a kernel with
``k(x, x) = 1``, but a remover's output is fed to other tools, so it stays in the embedding
space with its norms, and what is removed is exactly the part of an image embedding that is
linear in its prompt's (in the tests, nearest-prompt accuracy falls to chance; after the
non-linear normalisation of ``"cosine"`` it falls below chance, the residual then pointing away
from its prompt).
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Literal

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import (
    KERNEL_NAMES,
    REMOVER_KERNEL,
    Kernel,
    KernelArgument,
    KernelName,
    RandomFourierFeatures,
    as_kernel,
    second_moment,
)
from diversity_callbacks.functional.schur import (
    _schur_check_inputs,
    check_rtol,
    fitted_rtol,
    regression_map,
    resolve_explicit,
)

RemovalMode = Literal["defocus", "focus"]


class PromptRemover:
    """Fit the prompt-to-image map on reference pairs; remove or keep the prompt's part of images.

    Args:
        kernel: representation of both fit and transform, a :class:`~diversity_callbacks.Kernel`
            or its text: ``"linear"`` (raw embeddings, default; see the module docstring),
            ``"cosine"`` (L2-normalised rows), ``"gaussian:sigma=6"`` (random Fourier features,
            2500 frequencies unless told) or ``Kernel(feature_map=phi)`` (such a remover cannot
            be saved).
        rtol: eigenvalue cut-off on ``C_TT`` relative to its trace, as in
            :func:`~diversity_callbacks.functional.schur_complement_entropy`; default from the
            precision of the text features given to :meth:`fit`.
        deprecated: the 0.1 kernel arguments (``sigma``, ``num_features``, ``seed``,
            ``frequencies``, ``feature_map``), with a ``FutureWarning``.

    Attributes:
        kernel: the kernel's name (``None`` for a feature map), as saved with the map.

    Examples:
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
        kernel: KernelArgument = None,
        *,
        rtol: float | None = None,
        **deprecated: Any,
    ) -> None:
        value = as_kernel(kernel, deprecated, "PromptRemover", default=REMOVER_KERNEL)
        self.kernel: KernelName | None = value.name
        self.rtol = check_rtol(rtol)
        self._resolved = resolve_explicit(value, "PromptRemover")
        self.feature_map = self._resolved.feature_map
        self.gamma: Tensor | None = None
        """(D_T, D_I) float64 map ``C_TT^+ C_TI``, set by :meth:`fit`."""
        self.fitted_rtol: float | None = None
        """The cut-off ``Gamma`` was fitted with (``rtol``, or the one from the precision)."""
        self._input_dims: tuple[int, int] | None = None

    def fit(self, image_features: Tensor, text_features: Tensor) -> PromptRemover:
        """Fit ``Gamma`` on paired (n, d_I) image and (n, d_T) text features; returns ``self``."""
        phi_image, phi_text = self._features(image_features, text_features, check_fitted=False)
        if phi_image.shape[0] == 0:
            raise ValueError("`image_features` must have at least one row to fit, got shape (0, D)")
        self.fitted_rtol = fitted_rtol(self.rtol, text_features)
        self.gamma = regression_map(
            second_moment(phi_text),
            phi_text.T @ phi_image,
            rtol=self.fitted_rtol,
            num_samples=phi_text.shape[0],
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
        _schur_check_inputs(
            image_features, text_features, self._resolved, image_dim=image_dim, text_dim=text_dim
        )
        return (
            self._resolved.features(image_features, "image_features"),
            self._resolved.features(text_features, "text_features"),
        )

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted map as a dict of tensors (kernel name as bytes, rtol, Gamma, frequencies)."""
        if self.gamma is None:
            raise RuntimeError("PromptRemover is not fitted: call fit() before saving")
        if self.kernel is None:
            raise ValueError(
                "a PromptRemover with a `feature_map` cannot be saved: the map is code, not "
                "tensors; save Gamma (`remover.gamma`) and rebuild the remover with the same map"
            )
        image_dim, text_dim = self._input_dims
        state = {
            "kernel": torch.tensor(list(self.kernel.encode()), dtype=torch.uint8),
            "rtol": torch.tensor(self.fitted_rtol, dtype=torch.float64),
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
        """Read a map written by :meth:`save`; only tensors are unpickled (``weights_only=True``).

        Raises:
            ValueError: naming the file, for one that is not a saved remover: a pickle of other
                Python objects, a broken file, or other keys, dtypes, shapes or values.
        """
        problem = f"{os.fspath(path)!r} is not a saved PromptRemover"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            # torch's own message advises weights_only=False, which would run code from the file.
            raise ValueError(
                f"{problem}: torch.load(weights_only=True) cannot read it "
                f"({type(error).__name__}); PromptRemover.save writes a dict of tensors, and a "
                "file holding other Python objects is not unpickled, since that could run code"
            ) from None
        # A file of the wrong shape or with NaN would load and fail, or return NaN, only later.
        kernel = _check_saved_state(state, problem)
        remover = cls(
            Kernel(kernel, frequencies=state.get("frequencies")), rtol=float(state["rtol"])
        )
        remover.gamma = state["gamma"].to(torch.float64)
        remover.fitted_rtol = float(state["rtol"])
        image_dim, text_dim = state["input_dims"].tolist()
        remover._input_dims = (image_dim, text_dim)
        return remover


_SAVED_KEYS = ("kernel", "rtol", "input_dims", "gamma")


def _check_saved_state(state: object, problem: str) -> str:
    """Check the names, dtypes, shapes and values of a saved state; return its kernel name.

    ``problem`` starts every message (it names the file).
    """
    if not isinstance(state, dict) or not set(_SAVED_KEYS) <= set(state):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{problem}: expected the keys {list(_SAVED_KEYS)}, got {found}")
    for name, value in state.items():
        if not isinstance(value, Tensor):
            raise ValueError(f"{problem}: {name!r} must be a tensor, got {type(value).__name__}")
    kernel = _saved_kernel(state["kernel"], problem)
    expected = {*_SAVED_KEYS, "frequencies"} if kernel == "gaussian" else set(_SAVED_KEYS)
    if set(state) != expected:
        raise ValueError(
            f"{problem}: kernel={kernel!r} saves the keys {sorted(expected)}, got {sorted(state)}"
        )
    _check_saved_tensor(state["rtol"], "rtol", (), problem)
    _check_saved_tensor(state["input_dims"], "input_dims", (2,), problem, integer=True)
    image_dim, text_dim = state["input_dims"].tolist()
    if min(image_dim, text_dim) < 1:
        raise ValueError(f"{problem}: 'input_dims' must be >= 1, got {[image_dim, text_dim]}")
    gamma_shape = (text_dim, image_dim)
    if kernel == "gaussian":
        frequencies = state["frequencies"]
        num = frequencies.shape[-1] if frequencies.ndim else 0
        _check_saved_tensor(frequencies, "frequencies", (image_dim, num), problem)
        if text_dim != image_dim:
            raise ValueError(
                f"{problem}: kernel='gaussian' shares one frequency matrix, so 'input_dims' "
                f"must be equal, got {[image_dim, text_dim]}"
            )
        gamma_shape = (2 * num, 2 * num)
    _check_saved_tensor(state["gamma"], "gamma", gamma_shape, problem)
    return kernel


def _saved_kernel(value: Tensor, problem: str) -> str:
    """The kernel name saved as UTF-8 bytes in a 1-D uint8 tensor."""
    if value.dtype != torch.uint8 or value.ndim != 1:
        raise ValueError(
            f"{problem}: 'kernel' must be a 1-D uint8 tensor (the name's bytes), got "
            f"{value.dtype} of shape {tuple(value.shape)}"
        )
    try:
        kernel = bytes(value.tolist()).decode()
    except UnicodeDecodeError:
        kernel = None
    if kernel not in KERNEL_NAMES:
        raise ValueError(f"{problem}: 'kernel' must name one of {KERNEL_NAMES}, got {kernel!r}")
    return kernel


def _check_saved_tensor(
    value: Tensor, name: str, shape: tuple[int, ...], problem: str, *, integer: bool = False
) -> None:
    """Check one saved tensor: its shape, an integer or floating dtype, finite values."""
    kind = "an integer" if integer else "a finite floating"
    if integer:
        dtype_ok = not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        )
    else:
        dtype_ok = value.is_floating_point()
    if not dtype_ok or tuple(value.shape) != shape:
        raise ValueError(
            f"{problem}: {name!r} must be {kind} tensor of shape {shape}, got {value.dtype} of "
            f"shape {tuple(value.shape)}"
        )
    if not integer and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{problem}: {name!r} must be finite, got NaN or Inf values")
