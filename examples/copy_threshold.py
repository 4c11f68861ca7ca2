"""Measure where the copy threshold belongs: novel samples' nearest-neighbour similarity against
that of slightly altered copies of training images.

With the pixel embedder of ``examples/shapes`` (offline, no weights) and training sets of the
shapes data, it prints, for each training-set size, the quantiles of the nearest-training-
neighbour cosine similarity of

- **novel** images: fresh draws of the same distribution, never in the training set;
- **altered copies**: training images with what a generator that memorised them adds: Gaussian
  pixel noise (sigma 0.03), a one-pixel shift, brightness scaled by 0.9, 8-level quantisation.

The default ``threshold`` of :class:`~diversity_callbacks.MemorizationScore` sits between the
novel images' highest quantiles and the altered copies' lowest. Run it with your embedder and
data (``--embedder module:attribute``) before trusting any threshold: similarities depend on the
embedding space. Usage::

    python examples/copy_threshold.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the `shapes` helpers

from shapes.data import PROMPTS, ShapesDataset, draw_shapes
from shapes.embedder import PixelEmbedder

from diversity_callbacks.functional.memorization import nearest_neighbours, unit_rows

QUANTILES = (0.01, 0.5, 0.99, 1.0)
THRESHOLDS = (0.9, 0.95, 0.96, 0.98)


def altered(images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The training images as a memorising generator might return them."""
    return {
        "noise 0.03": (images + 0.03 * torch.randn(images.shape, generator=generator)).clamp(0, 1),
        "shift 1 px": images.roll(shifts=1, dims=-1),
        "brightness 0.9": images * 0.9,
        "8 levels": (images * 7).round() / 7,
    }


def similarities(
    embedder: PixelEmbedder, images: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    return nearest_neighbours(embedder.embed_images(images), reference).similarities[:, 0]


def main() -> None:
    embedder = PixelEmbedder()
    generator = torch.Generator().manual_seed(1)
    header = " | ".join(f"q{int(q * 100)}" for q in QUANTILES)
    print(f"| training images | samples | {header} |")
    print("| --- | --- |" + " --- |" * len(QUANTILES))
    errors = []
    for size in (5, 50, 500):
        train = ShapesDataset(size, seed=0).images
        reference = unit_rows(embedder.embed_images(train), "reference")
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(2000)]
        seeds = [torch.Generator().manual_seed(10_000 + i) for i in range(len(prompts))]
        rows = {"novel": similarities(embedder, draw_shapes(prompts, seeds), reference)}
        for name, copies in altered(train, generator).items():
            rows[f"copy, {name}"] = similarities(embedder, copies, reference)
        for name, values in rows.items():
            cells = " | ".join(f"{float(values.quantile(q)):.3f}" for q in QUANTILES)
            print(f"| {size} | {name} | {cells} |")
        novel = rows.pop("novel")
        copies = torch.cat(list(rows.values()))
        errors.append(
            [size]
            + [
                (float((novel >= t).double().mean()), float((copies < t).double().mean()))
                for t in THRESHOLDS
            ]
        )
    print("\n| training images | " + " | ".join(f"threshold {t}" for t in THRESHOLDS) + " |")
    print("| --- |" + " --- |" * len(THRESHOLDS))
    for size, *pairs in errors:
        cells = " | ".join(f"{a:.1%} novel, {b:.1%} copies missed" for a, b in pairs)
        print(f"| {size} | {cells} |")


if __name__ == "__main__":
    main()
