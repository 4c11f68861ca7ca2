"""A picture every writer shows: ``(3, H, W)`` uint8 pixels, PNG-encoded once for all of them.

Encoding was most of the logging time (``docs/performance.md#logging``), so the grids of the
conditions, of the modes and of the copies share one encoder and one cached encoding.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diversity_callbacks.images import make_grid

PAD_VALUE = 128
"""The mid grey between the tiles of every media grid, and of the blank tiles: black padding
merged the tiles of images on a black background into one picture (white would, on white)."""


class Picture:
    """What a picture dataclass gets by subclassing: its pixels as an array and as PNG bytes.

    Subclasses are dataclasses with a ``pixels`` field, a ``(3, H, W)`` uint8 tensor on the CPU.
    """

    pixels: Tensor

    def hwc(self) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 array that image libraries expect."""
        return self.pixels.permute(1, 2, 0).contiguous().numpy()

    @functools.cached_property
    def png(self) -> bytes:
        """The picture as a PNG file's bytes, encoded at the first use and shared by every writer."""
        return png_bytes(self.hwc())


def tile(images: Tensor, nrow: int) -> Tensor:
    """A media grid: :func:`~diversity_callbacks.images.make_grid` with the :data:`PAD_VALUE`
    padding, as a ``(3, H, W)`` uint8 tensor on the CPU."""
    return make_grid(images, nrow=nrow, pad_value=PAD_VALUE).cpu()


def same_size(images: Sequence[Tensor | None], fill: int) -> Tensor:
    """Stack ``(3, h, w)`` uint8 thumbnails of different sizes into ``(B, 3, H, W)``, each in the
    top-left corner of the largest size, the rest (and a whole tile for ``None``) ``fill``."""
    shown = [image for image in images if image is not None]
    height = max((image.shape[1] for image in shown), default=1)
    width = max((image.shape[2] for image in shown), default=1)
    canvas = torch.full((len(images), 3, height, width), fill, dtype=torch.uint8)
    for number, image in enumerate(images):
        if image is not None:
            canvas[number, :, : image.shape[1], : image.shape[2]] = image
    return canvas


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG, with the standard library alone.

    Examples:
        >>> png_bytes(np.zeros((2, 2, 3), dtype=np.uint8))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    # Every scanline but the first is filtered "Up" (type 2: the byte-wise difference to the row
    # above, modulo 256), then compressed at zlib's fastest level: on photographs that is 2-3x
    # faster and a quarter smaller than no filter at the default level, and 6-8x faster than
    # Pillow's adaptive filters for 5-7% more bytes (docs/performance.md#logging).
    rows = np.ascontiguousarray(image).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = 2
    filtered[0, 0] = 0  # the first row has none above: no filter
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(filtered.tobytes(), 1)
    chunks = [(b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
        for tag, data in chunks
    )
