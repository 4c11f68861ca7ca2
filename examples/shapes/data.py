"""Procedurally drawn 32 x 32 shapes with prompts such as ``"a red circle"``.

Every image shows one shape on a black background. The prompt fixes its colour and kind; position,
size and colour shade vary from image to image, so a good generator has several visible degrees
of freedom within each prompt, and a collapsed one draws the same picture for every seed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SIZE = 32
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.1, 0.9, 0.2),
    "blue": (0.15, 0.3, 1.0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PROMPTS: tuple[str, ...] = tuple(
    f"a {colour} {shape}" for colour, shape in itertools.product(COLOURS, SHAPES)
)

# Ranges of the free attributes, in pixels (centre, radius) and as a brightness factor (shade).
CENTRE_RANGE = (9.0, 23.0)
RADIUS_RANGE = (4.0, 8.0)
SHADE_RANGE = (0.55, 1.0)
# The canonical look of a prompt: centred, mid-size, full brightness.
CANONICAL = {"centre": (15.5, 15.5), "radius": 6.0, "shade": 1.0}


def parse_prompt(prompt: str) -> tuple[int, int]:
    """Return the (colour, shape) indices named by a prompt like ``"a red circle"``.

    Raises:
        ValueError: if the prompt does not name exactly one known colour and one known shape.
    """
    words = prompt.lower().split()
    colours = [i for i, name in enumerate(COLOURS) if name in words]
    shapes = [i for i, name in enumerate(SHAPES) if name in words]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(
            f"`prompt` must name one colour of {list(COLOURS)} and one shape of {list(SHAPES)}, "
            f"got {prompt!r}"
        )
    return colours[0], shapes[0]


def prompt_indices(prompts: Sequence[str], device: torch.device | None = None) -> Tensor:
    """(P,) indices into ``PROMPTS`` of prompts such as ``"a red circle"``."""
    pairs = [parse_prompt(p) for p in prompts]
    return torch.tensor([c * len(SHAPES) + s for c, s in pairs], dtype=torch.long, device=device)


def render(colour: Tensor, shape: Tensor, centre: Tensor, radius: Tensor, shade: Tensor) -> Tensor:
    """Draw a batch of shapes, anti-aliased, as float images in [0, 1].

    Args:
        colour: (N,) colour indices into :data:`COLOURS`.
        shape: (N,) shape indices into :data:`SHAPES`.
        centre: (N, 2) centres (x, y) in pixels.
        radius: (N,) half-widths in pixels.
        shade: (N,) brightness factors in (0, 1].

    Returns:
        (N, 3, 32, 32) images.
    """
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    dy = coords.view(1, -1, 1) - centre[:, 1].view(-1, 1, 1)
    dx = coords.view(1, 1, -1) - centre[:, 0].view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    # Signed distance to each outline (negative inside); a one-pixel ramp anti-aliases the edge.
    circle = torch.sqrt(dx**2 + dy**2) - r
    square = torch.maximum(dx.abs(), dy.abs()) - r
    # Upright triangle, apex (0, -r), base at y = +r (image y points down): the sides have
    # normals (+-2, -1) / sqrt(5).
    sides = (2 * dx.abs() - dy - r) / math.sqrt(5.0)
    triangle = torch.maximum(sides, dy - r)
    kind = shape.view(-1, 1, 1)
    distance = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))
    coverage = (0.5 - distance).clamp(0.0, 1.0).unsqueeze(1)
    rgb = torch.tensor(list(COLOURS.values()))[colour] * shade.view(-1, 1)
    return coverage * rgb.view(-1, 3, 1, 1)


def random_attributes(
    count: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``count`` (centre, radius, shade) triples uniformly from their ranges."""
    u = torch.rand(count, 4, generator=generator)
    centre = CENTRE_RANGE[0] + (CENTRE_RANGE[1] - CENTRE_RANGE[0]) * u[:, :2]
    radius = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * u[:, 2]
    shade = SHADE_RANGE[0] + (SHADE_RANGE[1] - SHADE_RANGE[0]) * u[:, 3]
    return centre, radius, shade


def canonical_images(prompts: Sequence[str]) -> Tensor:
    """The canonical look of each prompt (centred, mid-size, full brightness): (P, 3, 32, 32)."""
    indices = torch.tensor([parse_prompt(p) for p in prompts], dtype=torch.long).view(-1, 2)
    count = indices.shape[0]
    return render(
        indices[:, 0],
        indices[:, 1],
        torch.tensor(CANONICAL["centre"]).expand(count, 2),
        torch.full((count,), CANONICAL["radius"]),
        torch.full((count,), CANONICAL["shade"]),
    )


class ShapesDataset(Dataset):
    """A fixed set of random shapes, drawn once from a seed.

    Items are ``(image, prompt_index)`` with images (3, 32, 32) in [0, 1] and prompts indexing
    :data:`PROMPTS`; prompts are balanced.

    Args:
        size: number of images.
        seed: seed of the attributes.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"`size` must be a positive integer, got {size}")
        generator = torch.Generator().manual_seed(seed)
        self.prompt_index = torch.arange(size) % len(PROMPTS)
        self.prompt_index = self.prompt_index[torch.randperm(size, generator=generator)]
        colour, shape = self.prompt_index // len(SHAPES), self.prompt_index % len(SHAPES)
        centre, radius, shade = random_attributes(size, generator)
        self.images = render(colour, shape, centre, radius, shade)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.prompt_index[index]


def check_one_generator_per_prompt(
    prompts: Sequence[str], generators: Sequence[torch.Generator]
) -> None:
    """The sampling contract pairs each prompt with its own seeded generator."""
    if len(prompts) != len(generators):
        raise ValueError(
            f"`generators` must hold one generator per prompt ({len(prompts)}), "
            f"got {len(generators)}"
        )


def draw_shapes(prompts: Sequence[str], generators: Sequence[torch.Generator]) -> Tensor:
    """Draw a fresh random instance of each prompt, its attributes from its own generator.

    Follows the callback's sampling contract, so the data itself can stand in for a perfect
    generator: the diversity of real data is the reference a trained model is compared with.

    Returns:
        (N, 3, 32, 32) images in [0, 1].
    """
    check_one_generator_per_prompt(prompts, generators)
    indices = torch.tensor([parse_prompt(p) for p in prompts], dtype=torch.long).view(-1, 2)
    attributes = [random_attributes(1, g) for g in generators]
    centre, radius, shade = (torch.cat(parts) for parts in zip(*attributes, strict=True))
    return render(indices[:, 0], indices[:, 1], centre, radius, shade)
