"""Embedders of embeddings computed elsewhere (files of saved embeddings, a cache, another job).

The samples already are their ``(B, D)`` embeddings, so :meth:`embed_samples` passes them
through; :class:`PrecomputedTextEmbedder` also embeds prompts, by looking each one up among
the saved prompt embeddings, which the prompt-aware scores (SCE, CLIPScore, Conditional-Vendi)
need. Use them with ``value_range=None`` (the batches are embeddings, not images).

Example:
    >>> import torch
    >>> text = torch.eye(2, dtype=torch.float64)
    >>> embedder = PrecomputedTextEmbedder(["a cat", "a dog"], text)
    >>> embedder.embed_texts(["a dog"]).tolist()
    [[0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class PrecomputedEmbedder:
    """An embedder of precomputed embeddings: the ``(B, D)`` rows pass through unchanged."""

    def embed_samples(self, samples: Tensor) -> Tensor:
        """The precomputed embeddings, unchanged."""
        return samples


class PrecomputedTextEmbedder(PrecomputedEmbedder):
    """Precomputed embeddings with their prompts' embeddings: rows pass through unchanged, and
    :meth:`embed_texts` looks prompts up in ``text_embeddings``.

    Args:
        prompts: each row's prompt.
        text_embeddings: ``(N, D')``, row i the embedding of ``prompts[i]``; rows of one prompt
            must agree (to 1e-6 relative).
        where: what holds them, for error messages (``"embeddings file 'run.pt'"``).

    Raises:
        ValueError: naming the first row whose prompt embedding differs from an earlier row of
            the same prompt.
    """

    def __init__(
        self, prompts: Sequence[str], text_embeddings: Tensor, where: str = "text_embeddings"
    ) -> None:
        self.table: dict[str, Tensor] = {}
        for index, (prompt, row) in enumerate(zip(prompts, text_embeddings, strict=True)):
            first = self.table.setdefault(prompt, row)
            if first is not row and not torch.allclose(first, row, rtol=1e-6, atol=1e-9):
                raise ValueError(
                    f"{where}: row {index} differs from an earlier row of the same prompt "
                    f"{prompt!r}; every sample of a prompt must carry the same prompt embedding"
                )

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Each prompt's row of ``text_embeddings``."""
        return torch.stack([self.table[p] for p in prompts])
