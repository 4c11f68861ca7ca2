"""Distinct-n and self-BLEU as metrics: the texts themselves are the state, gathered exactly.

Neither score is a sum over texts: distinct-n counts n-grams that are distinct across *all*
ranks' texts, and self-BLEU compares each text with every other one. Per-rank n-gram counts
cannot be merged into either, so the state is the texts: each batch's UTF-8 bytes and each
text's byte length, two ``"cat"`` list states that torchmetrics gathers across DDP ranks (uneven
counts padded and trimmed). ``compute`` decodes every rank's texts and scores them at once, so
the value is the one a single process gets for the same texts, whatever the number of ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from diversity_callbacks.functional.lexical import (
    Tokenizer,
    distinct_n_of_tokens,
    self_bleu_of_tokens,
    tokenize_texts,
)


class _TextMetric(Metric):
    """Keeps the texts of every update, gathered across ranks at ``compute``."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, tokenizer: Tokenizer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if tokenizer is not None and not callable(tokenizer):
            raise TypeError(
                f"`tokenizer` must be a callable text -> tokens or None, got "
                f"{type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.add_state("text_bytes", default=[], dist_reduce_fx="cat")
        self.add_state("text_lengths", default=[], dist_reduce_fx="cat")

    def update(self, texts: Sequence[str]) -> None:
        """Add a batch of texts."""
        tokenize_texts(texts)  # checks that they are strings
        encoded = [text.encode("utf-8") for text in texts]
        self.text_bytes.append(_byte_tensor(b"".join(encoded)).to(self.device))
        lengths = [len(e) for e in encoded]
        self.text_lengths.append(torch.tensor(lengths, dtype=torch.long, device=self.device))

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        # A rank without texts would gather a float placeholder beside the others' uint8 bytes.
        if not self.text_lengths:
            self.text_bytes.append(torch.zeros(0, dtype=torch.uint8, device=self.device))
            self.text_lengths.append(torch.zeros(0, dtype=torch.long, device=self.device))
        super()._sync_dist(*args, **kwargs)

    def texts(self) -> list[str]:
        """Every text seen (on every rank, inside ``compute``), in rank then update order."""
        if isinstance(self.text_lengths, list) and not self.text_lengths:
            return []  # (synced, the states are tensors)
        data = dim_zero_cat(self.text_bytes).cpu().numpy().tobytes()
        lengths = dim_zero_cat(self.text_lengths).cpu().tolist()
        texts, start = [], 0
        for length in lengths:
            texts.append(data[start : start + length].decode("utf-8"))
            start += length
        return texts

    def _tokenized(self) -> list[list[Any]]:
        return tokenize_texts(self.texts(), self.tokenizer)


class DistinctN(_TextMetric):
    """Distinct-n of generated texts, for each order n (Li et al. 2016).

    Args:
        n: the n-gram orders.
        tokenizer: ``tokenizer(text) -> tokens``; default: whitespace-separated words.
        kwargs: torchmetrics ``Metric`` options.

    ``compute`` returns ``{"1": distinct-1, "2": distinct-2, ...}`` (float64), logged by the
    evaluator as ``distinct_1``, ``distinct_2``, ... under the plug-in name ``distinct``; see
    :func:`~diversity_callbacks.functional.lexical.distinct_n`.

    Examples:
        >>> metric = DistinctN(n=(1, 2))
        >>> metric.update(["the cat sat", "the cat ran"])
        >>> {k: round(v.item(), 4) for k, v in metric.compute().items()}
        {'1': 0.6667, '2': 0.75}
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        n: int | Sequence[int] = (1, 2, 3, 4),
        tokenizer: Tokenizer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, **kwargs)
        orders = (n,) if isinstance(n, int) else tuple(n)
        if not orders or any(
            isinstance(o, bool) or not isinstance(o, int) or o < 1 for o in orders
        ):
            raise ValueError(
                f"`n` must be an integer >= 1 or a non-empty sequence of them, got {n!r}"
            )
        self.orders = orders

    def compute(self) -> dict[str, Tensor]:
        """Distinct-n of every rank's texts, per order (a collective under DDP)."""
        tokenized = self._tokenized()
        return {str(n): distinct_n_of_tokens(tokenized, n) for n in self.orders}


class SelfBLEU(_TextMetric):
    """Self-BLEU of generated texts: each text's BLEU against all the others, averaged.

    Args:
        max_n: the highest n-gram order (4: BLEU-4).
        tokenizer: ``tokenizer(text) -> tokens``; default: whitespace-separated words.
        kwargs: torchmetrics ``Metric`` options.

    ``compute`` returns a float64 scalar, lower for more diverse texts; see
    :func:`~diversity_callbacks.functional.lexical.self_bleu`.

    Examples:
        >>> metric = SelfBLEU()
        >>> metric.update(["the cat sat on the mat", "the cat sat on the mat"])
        >>> metric.compute().item()
        1.0
    """

    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, max_n: int = 4, tokenizer: Tokenizer | None = None, **kwargs: Any) -> None:
        super().__init__(tokenizer, **kwargs)
        if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
            raise ValueError(f"`max_n` must be an integer >= 1, got {max_n!r}")
        self.max_n = max_n

    def compute(self) -> Tensor:
        """Self-BLEU of every rank's texts (a collective under DDP)."""
        return self_bleu_of_tokens(self._tokenized(), self.max_n)


def _byte_tensor(data: bytes) -> Tensor:
    if not data:  # frombuffer refuses an empty buffer
        return torch.zeros(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
