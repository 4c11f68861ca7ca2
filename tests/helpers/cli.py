"""Inputs for the command-line tests: image folders in every prompt layout and cheap embedders.

``cell_pixels`` is importable as ``tests.helpers.cli:cell_pixels`` by ``--embedder``: 4 x 4
cell averages of the raw pixels. A black image with one white 4 x 4 cell (``cell_image``) maps
to a one-hot row, so k such images at distinct cells are exactly orthogonal under the cosine
kernel: their Vendi score is k, whatever the number of copies of each.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16


def cell_pixels(images: Tensor) -> Tensor:
    """``(B, 3, H, W)`` floats in [0, 1] -> ``(B, 3 * 16)`` averages over a 4 x 4 grid of cells."""
    return F.adaptive_avg_pool2d(images, 4).flatten(1)


def cell_image(
    cell: int, size: int = SIZE, colour: tuple[int, int, int] = (255, 255, 255)
) -> Tensor:
    """uint8 ``(3, size, size)``: black but for cell ``cell`` (0..15) of a 4 x 4 grid."""
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    step = size // 4
    row, column = divmod(cell, 4)
    image[:, row * step : (row + 1) * step, column * step : (column + 1) * step] = torch.tensor(
        colour, dtype=torch.uint8
    ).view(3, 1, 1)
    return image


def save(image: Tensor, path: Path) -> Path:
    """Write a uint8 ``(3, H, W)`` image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, **options)
    return path


PROMPTED = {"a cat": [0, 1, 2, 0, 1], "a dog": [5, 5, 6], "a fish": [9]}
"""Prompt -> the cells of its images: uneven counts (5, 3, 1), repeats within a prompt."""


def write_prompted(root: Path, layout: str, prompted: dict[str, list[int]] = PROMPTED) -> Path:
    """The images of ``prompted`` in ``layout``: ``"csv"``, ``"jsonl"``, ``"sidecar"`` or
    ``"folders"``; the same files, pixels and prompts in each."""
    rows = []
    for prompt, cells in prompted.items():
        for number, cell in enumerate(cells):
            slug = prompt.replace(" ", "_")
            relative = (
                f"{slug}/{number:03d}.png" if layout == "folders" else f"{slug}-{number:03d}.png"
            )
            save(cell_image(cell), root / relative)
            rows.append((relative, prompt))
            if layout == "sidecar":
                (root / relative).with_suffix(".txt").write_text(prompt + "\n")
    if layout == "csv":
        with open(root / "prompts.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "prompt"])
            writer.writerows(rows)
    elif layout == "jsonl":
        with open(root / "prompts.jsonl", "w") as handle:
            for file, prompt in rows:
                handle.write(json.dumps({"file": file, "prompt": prompt}) + "\n")
    return root


CELLS = ["--embedder", "tests.helpers.cli:cell_pixels", "--workers", "0", "--no-progress"]
"""Options that score runs of :func:`cell_image` files by their pixels, in this process."""


def copying_run(root: Path) -> tuple[Path, Path]:
    """16 white-cell training images and a run of 3 copies of them (cells 2, 5, 9) beside 9 red
    new images: ``(training folder, run folder)``."""
    train, run = root / "train", root / "run"
    for cell in range(16):
        save(cell_image(cell), train / f"{cell:02d}.png")
    for cell in (2, 5, 9):
        save(cell_image(cell), run / f"copy-{cell:02d}.png")
    for cell in range(9):
        save(cell_image(cell, colour=(255, 0, 0)), run / f"new-{cell:02d}.png")
    return train, run


def run_console(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run the installed ``diversity-callbacks`` console script from the repository root."""
    script = Path(sys.executable).parent / "diversity-callbacks"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
