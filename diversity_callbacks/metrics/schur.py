"""Schur complement entropy as a torchmetrics metric: streams image/text pairs, syncs across DDP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks._validation import check_features, check_paired
from diversity_callbacks.functional.kernels import FeatureMap, KernelName, second_moment
from diversity_callbacks.functional.schur import (
    _check_rtol,
    _check_shared_map,
    _effective_rtol,
    _resolve_feature_map,
    _schur_from_moments,
    _text_precision,
)
from diversity_callbacks.metrics._base import (
    Dims,
    LazilySizedMetric,
    kernel_settings,
    unsized_moment,
)


class SchurComplementEntropy(LazilySizedMetric):
    """Schur complement entropy of generated images given their prompts, over all pairs seen.

    Splits the images' kernel covariance into the part their prompts explain (``text_part``) and
    the rest (``sce``, the model's intrinsic diversity); see
    :func:`~diversity_callbacks.functional.schur_complement_entropy` for the definitions. The
    states are the three float64 kernel covariance sums ``sum phi_t phi_t^T``,
    ``sum phi_t phi_i^T``, ``sum phi_i phi_i^T`` and a count: exact, independent of the number of
    samples, summed across DDP ranks (uneven and empty ranks included). Their size is
    ``D_T^2 + D_T D_I + D_I^2`` doubles: 6 MiB for 512-d cosine features, 572 MiB for the
    published Gaussian setting (2 x 2500 random features). A last state keeps the precision of
    the text features seen (the coarsest, also across ranks and merges), which sets the cut-off
    on ``C_TT`` as in the functional form.

    Args:
        kernel: ``"cosine"`` (default, as for the functional form and the Vendi score:
            per-sample cosine kernel, no bandwidth to choose), ``"gaussian"`` (seeded random
            Fourier features shared by text and images; needs ``sigma`` or ``frequencies``) or
            ``"linear"``.
        sigma: Gaussian bandwidth, ``k = exp(-|x - y|^2 / (2 sigma^2))`` (3.5 in the published
            method, on raw CLIP ViT-B/32 embeddings).
        num_features: random Fourier frequencies m (2m features; default 2500).
        seed: seed of the frequency draw; identical on every rank. The score depends on the
            draw (about +-1.7% between seeds at the defaults): compare runs at the same seed.
        frequencies: a (d, m) frequency matrix already divided by ``sigma``.
        feature_map: explicit feature map shared by text and images, instead of ``kernel``.
        rtol: eigenvalue cut-off on ``C_TT`` relative to its trace; default from the precision
            of the text features (see
            :func:`~diversity_callbacks.functional.schur_complement_entropy`).
        compute_image_vendi: ``False`` skips the images' own spectrum (a third of ``compute``'s
            cost at large D); ``"image_vendi"`` is then NaN.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``...).

    ``compute`` returns a dict of float64 scalars: ``"sce"``, ``"text_part"``, ``"image_vendi"``
    (see :class:`~diversity_callbacks.functional.schur.SchurComplementResult`). In the degenerate
    regime (the prompts span as many directions as there are samples, e.g. one prompt per
    sample) it warns and ``"sce"`` and ``"text_part"`` are NaN.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import SchurComplementEntropy
        >>> metric = SchurComplementEntropy()
        >>> prompts = torch.eye(3).repeat_interleave(4, dim=0)  # 3 prompts x 4 images
        >>> metric.update(image_features=prompts[:6], text_features=prompts[:6])
        >>> metric.update(image_features=prompts[6:], text_features=prompts[6:])
        >>> {key: round(value.item(), 4) for key, value in metric.compute().items()}
        {'sce': 1.0, 'text_part': 3.0, 'image_vendi': 3.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0
    num_dims = 4  # (text, image) input dimensions, then (text, image) kernel feature dimensions

    def __init__(
        self,
        kernel: KernelName | None = None,
        *,
        sigma: float | None = None,
        num_features: int | None = None,
        seed: int = 0,
        frequencies: Tensor | None = None,
        feature_map: FeatureMap | None = None,
        rtol: float | None = None,
        compute_image_vendi: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel = _resolve_feature_map(
            kernel,
            sigma=sigma,
            num_features=num_features,
            seed=seed,
            frequencies=frequencies,
            feature_map=feature_map,
        )
        self._kernel_settings = kernel_settings(
            kernel, sigma, num_features, seed, feature_map, frequencies
        )
        self.rtol = _check_rtol(rtol)
        self.compute_image_vendi = compute_image_vendi
        for name in ("text_text", "text_image", "image_image"):
            self.add_state(name, default=unsized_moment(), dist_reduce_fx="sum")
        # The input dimensions live in the states, so loaded or merged states still refuse
        # features of another size (random features would otherwise map them silently).
        self.add_state("input_dims", default=torch.zeros(2, dtype=torch.long), dist_reduce_fx="max")
        self.add_state(
            "num_samples", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum"
        )
        # Machine epsilon of the text features: the coarsest wins, on this rank and across ranks.
        self.add_state(
            "text_eps", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="max"
        )

    def update(self, image_features: Tensor, text_features: Tensor) -> None:
        """Add paired (N, d_I) image and (N, d_T) text features; row i of both is one sample."""
        held = self._dims_of(self.metric_state)
        text_dim, image_dim = (None, None) if held is None else held[:2]
        check_features(image_features, "image_features", dim=image_dim)
        check_features(text_features, "text_features", dim=text_dim)
        check_paired(image_features, text_features, "image_features", "text_features")
        _check_shared_map(self.kernel, image_features, text_features)
        if image_features.shape[0] == 0:
            return
        phi_text = self.kernel.features(text_features.to(self.device), "text_features")
        phi_image = self.kernel.features(image_features.to(self.device), "image_features")
        dims = (
            text_features.shape[1],
            image_features.shape[1],
            phi_text.shape[1],
            phi_image.shape[1],
        )
        if held is None:
            self._allocate(dims)
        elif held != dims:
            raise ValueError(
                f"the features map to (text, image) kernel dimensions {dims[2:]}, but the "
                f"metric's states hold {held[2:]}: every update must use the same embedder and "
                "kernel"
            )
        second_moment(phi_text, out=self.text_text)
        self.text_image.addmm_(phi_text.T, phi_image)
        second_moment(phi_image, out=self.image_image)
        self.num_samples += image_features.shape[0]
        self.text_eps.clamp_min_(_text_precision(text_features))

    def compute(self) -> dict[str, Tensor]:
        """``{"sce", "text_part", "image_vendi"}`` over every pair seen on every rank (a collective)."""
        num_samples = int(self.num_samples)
        if num_samples == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update(image_features, text_features) first"
            )
        result = _schur_from_moments(
            self.text_text,
            self.text_image,
            self.image_image,
            num_samples,
            rtol=_effective_rtol(self.rtol, float(self.text_eps)),
            compute_image_vendi=self.compute_image_vendi,
        )
        return result._asdict()

    def _state_settings(self) -> dict[str, Any]:
        return self._kernel_settings

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        text_image = states["text_image"]
        if text_image.numel() == 0:
            return None
        return (*(int(d) for d in states["input_dims"]), *text_image.shape)

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        text_input_dim, image_input_dim, text_dim, image_dim = dims

        def zeros(rows: int, cols: int) -> Tensor:
            return torch.zeros(rows, cols, dtype=torch.float64, device=self.device)

        return {
            "text_text": zeros(text_dim, text_dim),
            "text_image": zeros(text_dim, image_dim),
            "image_image": zeros(image_dim, image_dim),
            "input_dims": torch.tensor([text_input_dim, image_input_dim], device=self.device),
        }
