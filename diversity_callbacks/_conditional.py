"""Per-prompt ("conditional") Vendi score: diversity among the samples drawn for one prompt.

A prompt's samples may be spread over several DDP ranks, so the per-prompt scores can only be
computed once all rows are in one place. The metric keeps every embedding with its prompt index
in two "cat" states and gathers them once per evaluation. That is memory-bounded for the
evaluation sets a callback draws (a few thousand samples: 4096 x 512 float64 rows are 16 MiB),
whereas per-prompt second moments would cost P x D x D (200 MiB for 100 prompts at D = 512).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from diversity_callbacks._validation import check_features, check_positive_int
from diversity_callbacks.functional.spectrum import Order, order_key, parse_orders
from diversity_callbacks.functional.vendi import vendi_score
from diversity_callbacks.metrics._base import Dims, LazilySizedMetric


class PromptVendi(LazilySizedMetric):
    """Vendi score of each prompt's samples, for prompts indexed ``0 .. num_prompts - 1``.

    Args:
        num_prompts: number of prompts; ``update`` takes prompt indices below it.
        q: order or sequence of orders of the Vendi score.
        kernel_kwargs: keyword arguments of :func:`~diversity_callbacks.functional.vendi_score`
            that choose the kernel (``kernel``, ``sigma``, ``num_features``, ``seed``).
        kwargs: torchmetrics ``Metric`` options.

    ``compute`` returns a ``(num_prompts, len(q))`` float64 tensor: row ``p`` holds the scores of
    prompt ``p`` in the order of ``q``, NaN for a prompt without samples (torchmetrics squeezes
    a ``(1, 1)`` result to a scalar).

    Example:
        >>> import torch
        >>> metric = PromptVendi(num_prompts=3, q=[1, 2])
        >>> same, apart = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.eye(2)
        >>> metric.update(torch.cat([same, apart]), torch.tensor([0, 0, 1, 1]))
        >>> metric.compute()  # prompt 0: one image twice; prompt 1: two; prompt 2: none
        tensor([[1., 1.],
                [2., 2.],
                [nan, nan]], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_prompts: int,
        q: Order | Sequence[Order] = 1.0,
        kernel_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_prompts = check_positive_int(num_prompts, "num_prompts")
        self.orders, _ = parse_orders(q)
        self.kernel_kwargs = dict(kernel_kwargs or {})
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("prompt_ids", default=[], dist_reduce_fx="cat")

    @property
    def keys(self) -> list[str]:
        """Result names of the orders, in column order: ``["q1", "q2"]``."""
        return [order_key(q) for q in self.orders]

    def update(self, features: Tensor, prompt_ids: Tensor) -> None:
        """Add (N, D) features of samples drawn for the prompts ``prompt_ids`` (N,)."""
        dims = self._dims_of(self.metric_state)
        check_features(features, "features", dim=None if dims is None else dims[0])
        if prompt_ids.shape != (features.shape[0],):
            raise ValueError(
                f"`prompt_ids` must have shape ({features.shape[0]},), one index per row of "
                f"`features`, got {tuple(prompt_ids.shape)}"
            )
        if (
            prompt_ids.numel()
            and not 0 <= int(prompt_ids.min()) <= int(prompt_ids.max()) < self.num_prompts
        ):
            raise ValueError(
                f"`prompt_ids` must lie in [0, {self.num_prompts - 1}], got values in "
                f"[{int(prompt_ids.min())}, {int(prompt_ids.max())}]"
            )
        self.rows.append(features.to(self.device, torch.float64))
        self.prompt_ids.append(prompt_ids.to(self.device, torch.long))

    def compute(self) -> Tensor:
        """Per-prompt scores over every rank's samples (a collective: call it on all ranks)."""
        scores = torch.full((self.num_prompts, len(self.orders)), torch.nan, dtype=torch.float64)
        if self._dims_of(self.metric_state) is None:
            return scores
        rows, prompt_ids = dim_zero_cat(self.rows), dim_zero_cat(self.prompt_ids)
        for prompt in torch.unique(prompt_ids).tolist():
            result = vendi_score(rows[prompt_ids == prompt], q=self.orders, **self.kernel_kwargs)
            scores[prompt] = torch.stack([result[key] for key in self.keys]).cpu()
        return scores

    def _dims_of(self, states: Mapping[str, Any]) -> Dims | None:
        rows = states["rows"]
        rows = [rows] if isinstance(rows, Tensor) else rows
        return (rows[0].shape[1],) if rows else None

    def _zero_states(self, dims: Dims) -> dict[str, Any]:
        (dim,) = dims
        return {
            "rows": [torch.zeros(0, dim, dtype=torch.float64, device=self.device)],
            "prompt_ids": [torch.zeros(0, dtype=torch.long, device=self.device)],
        }
