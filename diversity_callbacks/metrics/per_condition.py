"""The per-condition Vendi score as a metric: each condition's Vendi, averaged over conditions.

A condition's samples may be spread over several DDP ranks, so the per-condition scores can only
be computed once all rows are in one place. The metric keeps every embedding with its condition
number in two "cat" states and gathers them once per ``compute``. That is memory-bounded for the
evaluation sets a callback draws (4096 x 512 float64 rows are 16 MiB), whereas per-condition
second moments would cost C x D x D (200 MiB for 100 prompts at D = 512).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from diversity_callbacks.functional.kernels import Kernel, KernelArgument, as_kernel
from diversity_callbacks.functional.per_condition import (
    check_condition_ids,
    per_condition_vendi_score,
)
from diversity_callbacks.functional.spectrum import Order, order_key, parse_orders
from diversity_callbacks.metrics.base import Dims, LazilySizedMetric
from diversity_callbacks.utilities.checks import check_features, check_positive_int


class PerConditionVendiScore(LazilySizedMetric):
    """Vendi score within each condition (prompt or class), averaged over the conditions seen.

    The per-class Vendi score of Stein et al. (NeurIPS 2023, dgm-eval): the unweighted mean of
    each condition's own Vendi score. It is not the Conditional-Vendi score of Jalali et al.
    (arXiv 2411.02817), see docs/metrics.md.

    Args:
        num_conditions: number of conditions; ``update`` takes condition numbers below it.
        q: order or sequence of orders of the Vendi score.
        kernel: a :class:`~diversity_callbacks.Kernel`, its text or a kernel callable, as for
            :class:`~diversity_callbacks.VendiScore` (default ``"cosine"``).
        tolerance: eigenvalues below it count as zero (default from the precision).
        kernel_kwargs: deprecated (``FutureWarning``): the 0.1 kernel options (``kernel``,
            ``sigma``, ``num_features``, ``seed``, ``feature_map``, ``tolerance``) as a dict.
        kwargs: torchmetrics ``Metric`` options.

    ``compute`` returns the mean over the conditions that have samples: a scalar for one order,
    a dict keyed ``"q1"``, ``"q2"``... for a sequence of orders (as
    :class:`~diversity_callbacks.VendiScore`). After it, :attr:`per_condition` holds the
    ``(num_conditions, len(q))`` table behind the mean (NaN for a condition without samples).

    Examples:
        >>> import torch
        >>> metric = PerConditionVendiScore(num_conditions=3, q=[1, 2])
        >>> same, apart = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.eye(2)
        >>> metric.update(torch.cat([same, apart]), torch.tensor([0, 0, 1, 1]))
        >>> {k: round(v.item(), 6) for k, v in metric.compute().items()}
        {'q1': 1.5, 'q2': 1.5}
        >>> metric.per_condition  # condition 0: one image twice; 1: two; 2: none
        tensor([[1., 1.],
                [2., 2.],
                [nan, nan]], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 1.0

    def __init__(
        self,
        num_conditions: int,
        q: Order | Sequence[Order] = 1.0,
        kernel: KernelArgument | Mapping[str, Any] = None,
        *,
        tolerance: float | None = None,
        kernel_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_conditions = check_positive_int(num_conditions, "num_conditions")
        self.orders, self._as_dict = parse_orders(q)
        if isinstance(kernel, Mapping):  # 0.1's third positional argument was kernel_kwargs
            kernel, kernel_kwargs = None, kernel
        if kernel_kwargs is not None:
            kernel, tolerance = _from_kernel_kwargs(kernel, tolerance, kernel_kwargs)
        self.kernel_value = as_kernel(kernel, {}, type(self).__name__)
        """The :class:`~diversity_callbacks.Kernel` of every condition's score."""
        self.tolerance = tolerance
        self.per_condition: Tensor | None = None
        """``(num_conditions, len(q))`` scores of the last ``compute``."""
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("condition_ids", default=[], dist_reduce_fx="cat")

    @property
    def keys(self) -> list[str]:
        """Result names of the orders, in column order: ``["q1", "q2"]``."""
        return [order_key(q) for q in self.orders]

    def update(self, features: Tensor, condition_ids: Tensor) -> None:
        """Add ``(N, D)`` features of samples drawn for the conditions ``condition_ids`` ``(N,)``."""
        dims = self._dims_of(self.metric_state)
        check_features(features, "features", dim=None if dims is None else dims[0])
        check_condition_ids(condition_ids, features.shape[0], self.num_conditions)
        self.rows.append(features.to(self.device, torch.float64, copy=True))
        self.condition_ids.append(condition_ids.to(self.device, torch.long))

    def compute(self) -> Tensor | dict[str, Tensor]:
        """Mean per-condition score over every rank's samples (a collective: call on all ranks)."""
        rows = dim_zero_cat(self.rows) if len(self.rows) else None
        if rows is None or rows.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update() with (N, D) features and their condition ids first"
            )
        self.per_condition = per_condition_vendi_score(
            rows,
            dim_zero_cat(self.condition_ids),
            q=self.orders,
            num_conditions=self.num_conditions,
            kernel=self.kernel_value,
            tolerance=self.tolerance,
        )
        means = self.per_condition.nanmean(dim=0)
        if not self._as_dict:
            return means[0]
        return {key: means[column] for column, key in enumerate(self.keys)}

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        rows = states["rows"]
        rows = [rows] if isinstance(rows, Tensor) else rows
        return (rows[0].shape[1],) if rows else None

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        (dim,) = dims
        return {
            "rows": [torch.zeros(0, dim, dtype=torch.float64, device=self.device)],
            "condition_ids": [torch.zeros(0, dtype=torch.long, device=self.device)],
        }


def _from_kernel_kwargs(
    kernel: KernelArgument, tolerance: float | None, kernel_kwargs: Mapping[str, Any]
) -> tuple[Kernel, float | None]:
    """The kernel and tolerance of 0.1's ``kernel_kwargs`` dict, which warns once."""
    options = dict(kernel_kwargs)
    kernel = options.pop("kernel", kernel)
    tolerance = options.pop("tolerance", tolerance)
    with warnings.catch_warnings():  # one warning, about the dict, not one per flat option
        warnings.simplefilter("ignore", FutureWarning)
        value = as_kernel(kernel, options, "PerConditionVendiScore")
    warnings.warn(
        "PerConditionVendiScore: `kernel_kwargs` is deprecated and will stop working in 0.3: "
        f"pass kernel={value!r}" + ("" if tolerance is None else f", tolerance={tolerance!r}"),
        FutureWarning,
        stacklevel=3,
    )
    return value, tolerance
