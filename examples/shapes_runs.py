"""Two runs of a synthetic shapes generator as folders of PNG files, to compare with the CLI.

Writes ``OUT/healthy`` and ``OUT/collapsed``, one sub-folder per prompt (``a_red_circle/``...),
``--images`` 32 x 32 PNG files in each:

- ``healthy``: every image a fresh random instance of its prompt (position, size and shade
  drawn from its own seed), what a good generator draws;
- ``collapsed``: what a fine-tune that narrowed the model draws: the first three prompts always
  give the prompt's one canonical picture, the others vary only a little around it (two
  positions, one size).

Then ``diversity-callbacks score OUT/healthy OUT/collapsed`` compares them (see docs/cli.md).

Usage::

    python examples/shapes_runs.py runs              # 9 prompts x 12 images per run
    python examples/shapes_runs.py runs --images 24
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the `shapes` package

from shapes.data import PROMPTS, canonical_images, draw_shapes, parse_prompt, render


def collapsed_images(prompt: str, count: int, index: int, seed: int) -> torch.Tensor:
    """``count`` images of ``prompt`` from a collapsed model (see the module docstring)."""
    if index < 3:
        return canonical_images([prompt] * count)
    generator = torch.Generator().manual_seed(seed)
    colour, shape = parse_prompt(prompt)
    offsets = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])[
        torch.randint(2, (count,), generator=generator)
    ]
    return render(
        torch.full((count,), colour),
        torch.full((count,), shape),
        torch.tensor([15.5, 15.5]) + offsets,
        torch.full((count,), 6.0),
        torch.full((count,), 1.0),
    )


def write_run(folder: Path, images_of: dict[str, torch.Tensor]) -> None:
    """One sub-folder per prompt, its images as ``000.png``, ``001.png``..."""
    for prompt, images in images_of.items():
        target = folder / prompt.replace(" ", "_")
        target.mkdir(parents=True, exist_ok=True)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        for number, image in enumerate(pixels):
            Image.fromarray(image.numpy()).save(target / f"{number:03d}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write healthy/ and collapsed/ into")
    parser.add_argument("--images", type=int, default=12, help="images per prompt (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    healthy, collapsed = {}, {}
    for index, prompt in enumerate(PROMPTS):
        generators = [
            torch.Generator().manual_seed(args.seed * 100_000 + index * 1_000 + n)
            for n in range(args.images)
        ]
        healthy[prompt] = draw_shapes([prompt] * args.images, generators)
        collapsed[prompt] = collapsed_images(prompt, args.images, index, args.seed + index)
    write_run(args.out / "healthy", healthy)
    write_run(args.out / "collapsed", collapsed)
    total = len(PROMPTS) * args.images
    print(f"wrote {total} images to {args.out / 'healthy'} and {total} to {args.out / 'collapsed'}")


if __name__ == "__main__":
    main()
