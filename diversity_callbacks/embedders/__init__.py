"""Embedders: the protocol the metrics and the callback rely on, CLIP for images,
sentence-transformers for texts, and pass-through ones for embeddings computed elsewhere.

open_clip and sentence-transformers are imported only when a :class:`CLIPEmbedder` or a
:class:`SentenceEmbedder` is built, so the protocol and :class:`FunctionEmbedder` work without
them.
"""

from diversity_callbacks.embedders.base import FunctionEmbedder, ImageEmbedder, TextEmbedder
from diversity_callbacks.embedders.clip import CLIPEmbedder
from diversity_callbacks.embedders.precomputed import PrecomputedEmbedder, PrecomputedTextEmbedder
from diversity_callbacks.embedders.sentence import SentenceEmbedder

__all__ = [
    "CLIPEmbedder",
    "FunctionEmbedder",
    "ImageEmbedder",
    "PrecomputedEmbedder",
    "PrecomputedTextEmbedder",
    "SentenceEmbedder",
    "TextEmbedder",
]
