"""Sentence embeddings of generated texts and of their prompts, on sentence-transformers."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from diversity_callbacks.embedders.base import check_embeddings, check_prompts
from diversity_callbacks.utilities.checks import check_positive_int

_INSTALL = 'pip install "diversity-callbacks[text]"'


class SentenceEmbedder(nn.Module):
    """Embed texts with a sentence-transformers model: completions and prompts alike.

    Completions (``embed_samples``) and prompts (``embed_texts``) go through the same model, so
    the Schur complement entropy, Conditional- and Information-Vendi score the completions given
    their prompts, as CLIP's two encoders do for images. An ``nn.Module``: the evaluator moves it
    to the evaluation's device. The model is frozen and runs in eval mode without gradients;
    building it leaves the global random state as it was (a model built from a config draws its
    initial weights from it).

    Args:
        model: a model name (downloaded by sentence-transformers into the Hugging Face cache on
            first use), a local folder written by ``SentenceTransformer.save``, or a
            ``SentenceTransformer``.
        batch_size: texts per forward.
        normalize: return unit vectors (the cosine kernel normalises anyway; the linear and
            Gaussian kernels see the difference).
        device: where the model runs; ``None`` keeps where it is (the evaluator moves it).

    Raises:
        ImportError: if sentence-transformers is not installed.

    Examples:
        >>> embedder = SentenceEmbedder("all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> embedder.embed_samples(["a cat", "a dog"]).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        *,
        batch_size: int = 32,
        normalize: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ImportError(f"SentenceEmbedder needs sentence-transformers: {_INSTALL}")
        from sentence_transformers import SentenceTransformer

        if isinstance(model, (str, os.PathLike)):
            self.model_name = os.fspath(model)
            with torch.random.fork_rng(devices=[]):
                model = SentenceTransformer(self.model_name, device=device or "cpu")
        elif isinstance(model, SentenceTransformer):
            self.model_name = type(model).__name__
        else:
            raise TypeError(
                "`model` must be a sentence-transformers model name, a folder or a "
                f"SentenceTransformer, got {type(model).__name__}"
            )
        self.model = model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.normalize = bool(normalize)

    @torch.no_grad()
    def embed_samples(self, texts: Sequence[str]) -> Tensor:
        """``(len(texts), D)`` float32 embeddings of generated texts, on the model's device."""
        texts = check_prompts(texts)
        embeddings = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return check_embeddings(embeddings.float(), len(texts), "SentenceEmbedder")

    embed_texts = embed_samples
    """Prompts are texts too: the same model embeds them (for the prompt-aware scores)."""

    def forward(self, texts: Sequence[str]) -> Tensor:
        """The same as :meth:`embed_samples`."""
        return self.embed_samples(texts)

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, normalize={self.normalize}"
