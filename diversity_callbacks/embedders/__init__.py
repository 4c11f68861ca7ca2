"""Embedders: the protocol the metrics and the callback rely on, CLIP for images and
sentence-transformers for texts.

open_clip and sentence-transformers are imported only when a :class:`CLIPEmbedder` or a
:class:`SentenceEmbedder` is built, so the protocol and :class:`FunctionEmbedder` work without
them.
"""

from diversity_callbacks.embedders.base import FunctionEmbedder, ImageEmbedder, TextEmbedder
from diversity_callbacks.embedders.clip import CLIPEmbedder
from diversity_callbacks.embedders.sentence import SentenceEmbedder

__all__ = ["CLIPEmbedder", "FunctionEmbedder", "ImageEmbedder", "SentenceEmbedder", "TextEmbedder"]
