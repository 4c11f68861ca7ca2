"""The embedder protocol: what the metrics and the callback need from an embedding model.

Anything with an ``embed_images`` method is an :class:`ImageEmbedder`; anything with an
``embed_texts`` method is a :class:`TextEmbedder` (needed for the Schur complement entropy, whose
text part uses the prompts' embeddings). :class:`FunctionEmbedder` turns plain functions into
one, so DINOv2, Inception or an in-house model plug in without subclassing anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class ImageEmbedder(Protocol):
    """Maps a batch of images to one embedding row per image."""

    def embed_images(self, images: Tensor) -> Tensor:
        """Embed images.

        Args:
            images: float ``(B, 3, H, W)`` batch with values in ``[0, 1]``, on any device.

        Returns:
            ``(B, D)`` embeddings.
        """
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps prompts to one embedding row per prompt."""

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Embed prompts.

        Args:
            prompts: the prompts, in order.

        Returns:
            ``(len(prompts), D)`` embeddings.
        """
        ...


def check_embeddings(embeddings: object, rows: int, source: str) -> Tensor:
    """Check that an embedding function returned a finite ``(rows, D)`` floating tensor.

    Args:
        embeddings: what the function returned.
        rows: the number of inputs it was given.
        source: the function's name for error messages.

    Returns:
        ``embeddings``, unchanged.

    Examples:
        >>> check_embeddings(torch.zeros(4, 8), rows=4, source="image_fn").shape
        torch.Size([4, 8])
    """
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"{source} must return a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.ndim != 2 or embeddings.shape[0] != rows:
        raise ValueError(
            f"{source} must return a 2-D tensor with one row per input, i.e. shape ({rows}, D), "
            f"got shape {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        raise TypeError(f"{source} must return floating embeddings, got {embeddings.dtype}")
    if not bool(torch.isfinite(embeddings).all()):
        n_bad = int((~torch.isfinite(embeddings)).sum())
        raise ValueError(f"{source} returned {n_bad} non-finite values (NaN or inf)")
    return embeddings


def check_prompts(prompts: object) -> list[str]:
    """Check that ``prompts`` is a sequence of strings (not one string) and return it as a list.

    Examples:
        >>> check_prompts(("a cat", "a dog"))
        ['a cat', 'a dog']
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(
            "prompts must be a sequence of strings (wrap a single prompt in a list), got "
            f"{type(prompts).__name__}"
        )
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{index}] must be a str, got {type(prompt).__name__}")
    return list(prompts)


class FunctionEmbedder:
    """An embedder made of plain functions, checked on every call.

    Args:
        image_fn: maps a float ``(B, 3, H, W)`` batch in ``[0, 1]`` to ``(B, D)`` embeddings. It
            is responsible for its own resizing and normalisation (and for ``torch.no_grad``).
        text_fn: maps a list of prompts to ``(len(prompts), D)`` embeddings; optional, needed
            only by metrics that use prompts (``SchurComplementEntropy``).

    Examples:
        >>> embedder = FunctionEmbedder(lambda images: images.mean(dim=(2, 3)))
        >>> embedder.embed_images(torch.rand(5, 3, 8, 8)).shape
        torch.Size([5, 3])
        >>> isinstance(embedder, ImageEmbedder)
        True
    """

    def __init__(
        self,
        image_fn: Callable[[Tensor], Tensor],
        text_fn: Callable[[Sequence[str]], Tensor] | None = None,
    ) -> None:
        if not callable(image_fn):
            raise TypeError(f"image_fn must be callable, got {type(image_fn).__name__}")
        if text_fn is not None and not callable(text_fn):
            raise TypeError(f"text_fn must be callable or None, got {type(text_fn).__name__}")
        self.image_fn = image_fn
        self.text_fn = text_fn

    def embed_images(self, images: Tensor) -> Tensor:
        """Embed images with ``image_fn`` and check its output (see :class:`ImageEmbedder`)."""
        return check_embeddings(self.image_fn(images), len(images), "image_fn")

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Embed prompts with ``text_fn`` and check its output (see :class:`TextEmbedder`).

        Raises:
            TypeError: if the embedder was built without ``text_fn``.
        """
        if self.text_fn is None:
            raise TypeError(
                "this FunctionEmbedder has no text_fn, so it cannot embed prompts; build it as "
                "FunctionEmbedder(image_fn, text_fn=...) to use metrics that need prompts"
            )
        prompts = check_prompts(prompts)
        return check_embeddings(self.text_fn(prompts), len(prompts), "text_fn")

    def __repr__(self) -> str:
        text = "None" if self.text_fn is None else getattr(self.text_fn, "__name__", "<fn>")
        image = getattr(self.image_fn, "__name__", "<fn>")
        return f"FunctionEmbedder(image_fn={image}, text_fn={text})"
