"""Conditional ("per-condition") Vendi score: diversity among the samples of one condition.

A text-to-image model asked for "a red apple" eight times should draw eight different apples;
the Vendi score of all samples cannot tell that apart from eight identical apples per prompt
across many prompts. Scoring each condition's samples on their own can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks._validation import check_features, check_positive_int
from diversity_callbacks.functional.spectrum import Order, order_key, parse_orders
from diversity_callbacks.functional.vendi import vendi_score


def conditional_vendi_score(
    features: Tensor,
    condition_ids: Tensor,
    q: Order | Sequence[Order] = 1.0,
    *,
    num_conditions: int | None = None,
    **kernel_kwargs: Any,
) -> Tensor:
    """Vendi score of each condition's samples.

    Args:
        features: ``(N, D)`` embeddings of the samples.
        condition_ids: ``(N,)`` integer condition of each sample (a prompt's or class's number).
        q: order or sequence of orders of the Vendi score.
        num_conditions: number of conditions; default ``condition_ids.max() + 1``.
        kernel_kwargs: the kernel options of :func:`~diversity_callbacks.functional.vendi_score`
            (``kernel``, ``sigma``, ``num_features``, ``seed``, ``feature_map``, ``tolerance``).

    Returns:
        ``(num_conditions, len(q))`` float64 on the CPU: row ``c`` holds condition ``c``'s
        scores in the order of ``q``; NaN for a condition without samples. Average the rows
        with ``nanmean(dim=0)`` for the conditional Vendi score.

    Examples:
        >>> same, apart = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.eye(2)
        >>> conditional_vendi_score(torch.cat([same, apart]), torch.tensor([0, 0, 1, 1]),
        ...                         q=[1, 2], num_conditions=3)
        tensor([[1., 1.],
                [2., 2.],
                [nan, nan]], dtype=torch.float64)
    """
    check_features(features, "features")
    orders, _ = parse_orders(q)
    condition_ids = check_condition_ids(condition_ids, features.shape[0], num_conditions)
    if num_conditions is None:
        num_conditions = int(condition_ids.max()) + 1 if condition_ids.numel() else 0
    scores = torch.full((num_conditions, len(orders)), torch.nan, dtype=torch.float64)
    for condition in torch.unique(condition_ids).tolist():
        result = vendi_score(features[condition_ids == condition], q=orders, **kernel_kwargs)
        scores[condition] = torch.stack([result[order_key(o)] for o in orders]).cpu()
    return scores


def check_condition_ids(
    condition_ids: Any, rows: int, num_conditions: int | None, name: str = "condition_ids"
) -> Tensor:
    """Check ``(rows,)`` integer condition ids in ``[0, num_conditions)`` and return them."""
    if not isinstance(condition_ids, Tensor) or condition_ids.is_floating_point():
        raise TypeError(
            f"`{name}` must be an integer torch.Tensor of shape ({rows},), got "
            f"{getattr(condition_ids, 'dtype', type(condition_ids).__name__)}"
        )
    if condition_ids.shape != (rows,):
        raise ValueError(
            f"`{name}` must have shape ({rows},), one condition per row of the features, got "
            f"{tuple(condition_ids.shape)}"
        )
    if num_conditions is not None:
        check_positive_int(num_conditions, "num_conditions")
    if condition_ids.numel():
        low, high = int(condition_ids.min()), int(condition_ids.max())
        limit = num_conditions if num_conditions is not None else high + 1
        if low < 0 or high >= limit:
            raise ValueError(
                f"`{name}` must lie in [0, {limit - 1}], got values in [{low}, {high}]"
            )
    return condition_ids
