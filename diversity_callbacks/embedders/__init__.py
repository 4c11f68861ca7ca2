"""Embedders: the protocol the metrics and the callback rely on, and a CLIP implementation.

open_clip is imported only when a :class:`CLIPEmbedder` is built, so the protocol and
:class:`FunctionEmbedder` work without it.
"""

from diversity_callbacks.embedders.base import FunctionEmbedder, ImageEmbedder, TextEmbedder
from diversity_callbacks.embedders.clip import CLIPEmbedder

__all__ = ["CLIPEmbedder", "FunctionEmbedder", "ImageEmbedder", "TextEmbedder"]
