"""An embedder that needs no downloaded weights: coarse pixel features, for images and prompts.

Image side: the image averaged over 4 x 4 pixel cells, an 8 x 8 x 3 = 192-number thumbnail.
Two pictures are similar under the cosine kernel when the same cells hold the same colours, so
the features see what varies in these images (colour, position, size, shape outline) and stay
smooth in it (a shape moved by a pixel or two stays similar, moved across the image it does not).
They are blind to overall brightness: the cosine kernel ignores a common scale. This is the pixel
baseline of the Vendi score paper (Friedman & Dieng 2023) at the scale of these images.

Text side: a prompt's features are those of its canonical rendering (the shape, in its colour,
centred, mid-size, full brightness), so prompts and images live in one space, as they do in
CLIP; the Schur complement entropy uses them to separate what the prompt explains from the
model's own variety.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from shapes.data import IMAGE_SIZE, canonical_images

CELL = 4
"""Side of the square pixel cells that are averaged into one feature."""


class PixelEmbedder:
    """Coarse pixel features of 32 x 32 shape images, and of the canonical image of a prompt.

    Example:
        >>> embedder = PixelEmbedder()
        >>> embedder.embed_images(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 192])
        >>> embedder.embed_texts(["a red circle"]).shape
        torch.Size([1, 192])
    """

    def embed_images(self, images: Tensor) -> Tensor:
        """(B, 3, 32, 32) images in [0, 1] -> (B, 192) cell averages (float32, input's device)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"`images` must have shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), "
                f"got {tuple(images.shape)}"
            )
        cells = F.avg_pool2d(images.float(), CELL)
        # A blank image has no direction under the cosine kernel: a small constant keeps it
        # defined and equally far from every coloured picture.
        return cells.flatten(1) + 1e-3

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (P, 192) features of their canonical renderings."""
        return self.embed_images(canonical_images(list(prompts)))
