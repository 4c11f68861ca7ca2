"""Shared test inputs: a tiny open_clip config and generator-like images."""

from __future__ import annotations

from typing import Any

import torch

# NOTES.md's tiny random model: milliseconds per batch on CPU, every real code path.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def generator_like(batch: int, height: int, width: int) -> torch.Tensor:
    """uint8 images with smooth structure, saturated patches and pixel noise."""
    coarse = torch.rand(batch, 3, max(height // 6, 2), max(width // 6, 2)) * 1.4 - 0.2
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    noisy = (smooth + 0.08 * torch.randn(batch, 3, height, width)).clamp(0, 1)
    return (noisy * 255).round().to(torch.uint8)
