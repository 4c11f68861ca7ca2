"""Conditional-Vendi and Information-Vendi as torchmetrics metrics (arXiv 2411.02817).

Both scores need the joint kernel of all pairs (sample, condition), so the metric keeps every
float64 embedding with its condition in "cat" list states and gathers them once per
``compute``: the result is that of the functional form on all ranks' rows, whatever the shares
(uneven or empty ranks included). The kind of condition (embeddings or integer labels) is fixed
by the first ``update``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from diversity_callbacks._validation import check_features
from diversity_callbacks.functional.conditional_vendi import (
    LEGACY_MESSAGE,
    check_conditions,
    conditional_vendi_score,
    information_vendi_score,
)
from diversity_callbacks.functional.spectrum import Order, check_tolerance, parse_orders
from diversity_callbacks.metrics._base import Dims, LazilySizedMetric

_LABELS = 0
"""Condition dimension recorded for integer labels (condition embeddings have D' >= 1)."""


class _PairedVendiMetric(LazilySizedMetric):
    """Rows of samples and of their conditions, scored together by a functional form."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0
    num_dims = 2  # the samples' feature dimension and the conditions' (0 for labels)
    _score: Callable[..., Tensor | dict[str, Tensor]]

    def __init__(
        self,
        *legacy: Any,
        q: Order | Sequence[Order] = 1.0,
        kernel: str = "cosine",
        sigma: float | None = None,
        condition_kernel: str = "cosine",
        condition_sigma: float | None = None,
        num_features: int | None = None,
        seed: int = 0,
        tolerance: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._refuse_legacy(legacy, kwargs)
        super().__init__(**kwargs)
        self.orders, self._as_dict = parse_orders(q)
        check_tolerance(tolerance)
        self.options = {
            "kernel": kernel,
            "sigma": sigma,
            "condition_kernel": condition_kernel,
            "condition_sigma": condition_sigma,
            "num_features": num_features,
            "seed": seed,
            "tolerance": tolerance,
        }
        # One tiny call checks every option now rather than at the first compute.
        type(self)._score(
            torch.eye(1, dtype=torch.float64),
            condition_features=torch.eye(1, dtype=torch.float64),
            **self._feature_options(),
        )
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("conditions", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, conditions: Tensor) -> None:
        """Add ``(N, D)`` sample features and their ``(N, D')`` condition features or ``(N,)``
        integer labels; the kind of condition and both dimensions stay as in the first update."""
        dims = self._dims_of(self.metric_state)
        check_features(features, "features", dim=None if dims is None else dims[0])
        labelled = isinstance(conditions, Tensor) and not conditions.is_floating_point()
        check_conditions(
            features,
            None if labelled else conditions,
            conditions if labelled else None,
        )
        condition_dim = _LABELS if labelled else conditions.shape[1]
        if dims is not None and dims[1] != condition_dim:
            raise ValueError(
                f"`conditions` must be {_describe_kind(dims[1])} as in earlier updates, got "
                f"{_describe_kind(condition_dim)}"
            )
        self.rows.append(features.to(self.device, torch.float64, copy=True))
        dtype = torch.long if labelled else torch.float64
        self.conditions.append(conditions.to(self.device, dtype, copy=True))

    def compute(self) -> Tensor | dict[str, Tensor]:
        """The score over every rank's samples (a collective: call it on all ranks)."""
        rows = dim_zero_cat(self.rows) if len(self.rows) else None
        if rows is None or rows.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update() with (N, D) features and their conditions first"
            )
        conditions = dim_zero_cat(self.conditions)
        key = "condition_ids" if conditions.ndim == 1 else "condition_features"
        options = self._feature_options() if key == "condition_features" else self._label_options()
        return type(self)._score(rows, q=self.orders if self._as_dict else self.orders[0], **{
            key: conditions
        }, **options)  # fmt: skip

    @classmethod
    def _refuse_legacy(cls, legacy: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if legacy:
            raise TypeError(
                f"{cls.__name__} takes keyword arguments only (q=, kernel=, ...), got "
                f"{len(legacy)} positional argument(s)"
            )

    def _feature_options(self) -> dict[str, Any]:
        return dict(self.options)

    def _label_options(self) -> dict[str, Any]:
        options = dict(self.options)
        del options["condition_kernel"], options["condition_sigma"]
        return options

    def _state_settings(self) -> dict[str, Any]:
        return dict(self.options)

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        rows, conditions = states["rows"], states["conditions"]
        rows = [rows] if isinstance(rows, Tensor) else rows
        conditions = [conditions] if isinstance(conditions, Tensor) else conditions
        if not rows:
            return None
        condition = conditions[0]
        return (rows[0].shape[1], _LABELS if condition.ndim == 1 else condition.shape[1])

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        dim, condition_dim = dims
        if condition_dim == _LABELS:
            condition = torch.zeros(0, dtype=torch.long, device=self.device)
        else:
            condition = torch.zeros(0, condition_dim, dtype=torch.float64, device=self.device)
        return {
            "rows": [torch.zeros(0, dim, dtype=torch.float64, device=self.device)],
            "conditions": [condition],
        }


class ConditionalVendiScore(_PairedVendiMetric):
    """Conditional-Vendi score (Jalali, Ospanov, Gohari & Farnia, arXiv 2411.02817).

    ``exp(H_q(K_X o K_T / n) - H_q(K_T / n))``: the effective number of different samples per
    condition, with ``K_X`` the samples' kernel and ``K_T`` the conditions' (a cosine or
    Gaussian kernel of prompt embeddings, or the label kernel of class labels). See
    :func:`~diversity_callbacks.functional.conditional_vendi_score`.

    Args:
        q: order >= 0, ``"inf"``, or a sequence of orders (``compute`` then returns a dict keyed
            ``"q1"``, ``"q2"``...); order 2 is the Conditional-RKE.
        kernel: the samples' kernel, ``"cosine"`` or ``"gaussian"``.
        sigma: the samples' Gaussian bandwidth.
        condition_kernel: the condition embeddings' kernel, ``"cosine"`` or ``"gaussian"``
            (integer labels always use the label kernel).
        condition_sigma: the conditions' Gaussian bandwidth.
        num_features: random Fourier frequencies per Gaussian kernel: the streaming path.
        seed: seed of the random Fourier frequencies (identical on every rank).
        tolerance: relative eigenvalue tolerance.
        kwargs: torchmetrics ``Metric`` options.

    ``update(features, conditions)`` takes ``(N, D)`` sample features and either ``(N, D')``
    condition features or ``(N,)`` integer labels.

    Raises:
        TypeError: for the 0.1 signature (``num_conditions``): that score, the mean of each
            condition's own Vendi score, is now ``PerConditionVendiScore``.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import ConditionalVendiScore
        >>> metric = ConditionalVendiScore(q=[1, 2])
        >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
        >>> metric.update(images[:2], torch.tensor([0, 0]))  # class 0: two different images
        >>> metric.update(images[2:], torch.tensor([1, 1]))  # class 1: one image twice
        >>> {k: round(v.item(), 6) for k, v in metric.compute().items()}
        {'q1': 1.414214, 'q2': 1.333333}
    """

    _score = staticmethod(conditional_vendi_score)

    @classmethod
    def _refuse_legacy(cls, legacy: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The 0.1 signature ``(num_conditions, q, kernel_kwargs)`` is refused, naming its new
        class: no 0.1 call may silently change meaning."""
        old = sorted({"num_conditions", "kernel_kwargs"} & set(kwargs))
        if legacy or old:
            message = LEGACY_MESSAGE.format(
                name=cls.__name__,
                how="takes its options as keywords and its conditions in update()",
                new="PerConditionVendiScore",
            )
            given = f"{len(legacy)} positional argument(s)" if legacy else ", ".join(old)
            raise TypeError(f"{message} Got {given}.")


class InformationVendiScore(_PairedVendiMetric):
    """Information-Vendi score (Jalali, Ospanov, Gohari & Farnia, arXiv 2411.02817).

    ``exp(H_q(K_X / n) + H_q(K_T / n) - H_q(K_X o K_T / n))``: how many distinct modes the
    conditions explain (1 when the samples ignore the condition). Same arguments and ``update``
    as :class:`ConditionalVendiScore`; see
    :func:`~diversity_callbacks.functional.information_vendi_score`.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import InformationVendiScore
        >>> metric = InformationVendiScore()
        >>> images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> metric.update(images, torch.tensor([0, 0, 1, 1]))  # each class its own image
        >>> round(metric.compute().item(), 6)
        2.0
    """

    _score = staticmethod(information_vendi_score)


def _describe_kind(condition_dim: int) -> str:
    if condition_dim == _LABELS:
        return "(N,) integer labels"
    return f"(N, {condition_dim}) condition features"
