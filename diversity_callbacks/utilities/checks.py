"""Input checks shared by the functional API and the metrics.

Every message names the argument, what was expected and what came, so a user can fix the call
without reading our code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import torch
from torch import Tensor


def check_features(features: Any, name: str = "features", *, dim: int | None = None) -> Tensor:
    """Check that ``features`` is a finite floating (N, D) tensor, optionally with D == ``dim``."""
    if not isinstance(features, Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape (N, D), got {type(features).__name__}"
        )
    if features.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D with shape (N, D), got {features.ndim}-D shape {tuple(features.shape)}"
        )
    check_dense(features, name)
    if not features.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype, got {features.dtype}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(
            f"`{name}` must have feature dimension {dim} (as in earlier updates), "
            f"got shape {tuple(features.shape)}"
        )
    # A sum is finite whenever every entry is (or it overflowed): one cheap reduction instead of
    # an elementwise mask per batch; the mask runs only to report the offending rows.
    if not bool(torch.isfinite(features.sum())):
        finite = torch.isfinite(features).all(dim=1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()
            raise ValueError(
                f"`{name}` must be finite, got NaN or Inf in {bad.numel()} row(s), first at row "
                f"{int(bad[0])}"
            )
    return features


def describe(value: object) -> str:
    """What a wrong value is, for error messages: ``a tensor of shape (3, 4)``, ``None`` or the
    type's name.

    Example:
        >>> describe(torch.zeros(3, 4)), describe(None), describe([1])
        ('a tensor of shape (3, 4)', 'None', 'list')
    """
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return "None" if value is None else type(value).__name__


def check_positive(value: Any, name: str) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def check_positive_int(value: Any, name: str) -> int:
    """Check that ``value`` is an int >= 1 and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
    return value


def check_paired(first: Tensor, second: Tensor, first_name: str, second_name: str) -> None:
    """Check that two feature batches describe the same samples (same number of rows)."""
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"`{first_name}` and `{second_name}` must have the same number of rows (row i of both is "
            f"one sample), got {first.shape[0]} and {second.shape[0]}"
        )


def check_dense(tensor: Tensor, name: str) -> Tensor:
    """Check that ``tensor`` is a dense (strided) tensor: sparse ones fail deep inside torch."""
    if tensor.layout != torch.strided:
        raise TypeError(
            f"`{name}` must be a dense tensor, got layout {tensor.layout}: call .to_dense() first"
        )
    return tensor


def as_long_tensor(values: Tensor | Iterable[Any], name: str, rows: int) -> Tensor:
    """``values``, a tensor or a sequence of integers, as a ``(rows,)`` ``torch.long`` tensor.

    Strings, floats and booleans are refused by position, and so are integers beyond int64
    (torch would raise "Overflow when unpacking long"), naming ``name``.
    """
    if isinstance(values, Tensor):
        check_dense(values, name)
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"`{name}` must hold integers, got a tensor of {values.dtype}")
        tensor = values
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(
            f"`{name}` must be a tensor or a sequence of {rows} integers, got "
            f"{type(values).__name__}"
        )
    else:
        items = list(values)
        for position, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, Integral):
                raise TypeError(
                    f"`{name}` must hold integers, got {type(item).__name__} {item!r} at "
                    f"position {position}"
                )
            if not -(2**63) <= int(item) < 2**63:
                raise ValueError(
                    f"`{name}` must hold integers within int64, got {int(item)} at position "
                    f"{position}"
                )
        tensor = torch.tensor([int(item) for item in items], dtype=torch.long)
    if tensor.shape != (rows,):
        raise ValueError(
            f"`{name}` must be {rows} integers, one per sample, got shape {tuple(tensor.shape)}"
        )
    return tensor.long()


def check_scores(scores: Any, rows: int, name: str) -> Tensor:
    """Check that ``scores`` is a finite floating ``(rows,)`` tensor: one score per sample."""
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape ({rows},), one score per sample, got "
            f"{type(scores).__name__}"
        )
    if scores.shape != (rows,) or not scores.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating tensor of shape ({rows},), one score per sample, got "
            f"{scores.dtype} of shape {tuple(scores.shape)}"
        )
    if not bool(torch.isfinite(scores).all()):
        bad = torch.nonzero(~torch.isfinite(scores)).flatten()
        raise ValueError(
            f"`{name}` must be finite, got NaN or Inf at {bad.numel()} sample(s), first at "
            f"{int(bad[0])}"
        )
    return scores
