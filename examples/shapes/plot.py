"""The example's pictures: diversity and training losses against the step, on one time axis;
sample grids labelled by prompt."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# Diversity curves drawn, with their labels; the reference of real data is drawn dashed.
DIVERSITY_CURVES = {
    "diversity/vendi_q1": "Vendi score (q=1), all samples",
    "diversity/per_prompt_vendi_q1": "Vendi score (q=1) within a prompt, mean",
    "diversity/sce": "Schur complement entropy",
}
LOSS_CURVES = {
    "train/vae_loss": "VAE loss (negative ELBO, nats)",
    "train/reward_loss": "reward loss (MSE to the preferred look)",
}


def read_metrics_csv(path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Series ``key -> [(step, value), ...]`` from a Lightning ``CSVLogger`` ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series[key].append((step, float(value)))
    return {key: sorted(points) for key, points in series.items()}


def plot_run(
    series: dict[str, list[tuple[int, float]]],
    finetune_start: int,
    reference: dict[str, float],
    path: str | os.PathLike,
) -> None:
    """Write a PNG: diversity (top) and the two training losses (bottom) against the step.

    Args:
        series: the logged series, as :func:`read_metrics_csv` returns them.
        finetune_start: the step where reward fine-tuning starts (a vertical line).
        reference: the same diversity keys measured on real data (dashed lines).
        path: where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for (key, label), colour in zip(DIVERSITY_CURVES.items(), ("C0", "C1", "C2"), strict=True):
        if key in series:
            steps, values = zip(*series[key], strict=True)
            top.plot(steps, values, marker="o", markersize=3, color=colour, label=label)
        if key in reference:
            top.axhline(reference[key], color=colour, linestyle="--", linewidth=1)
    top.plot([], [], color="grey", linestyle="--", linewidth=1, label="same, on real data")
    top.set_ylabel("diversity (effective number of samples)")
    top.set_yscale("log")
    top.legend(fontsize=8)
    top.set_title("Diversity falls while the fine-tuning loss improves")

    right = bottom.twinx()
    for (key, label), axis, colour in zip(
        LOSS_CURVES.items(), (bottom, right), ("C3", "C4"), strict=True
    ):
        if key in series:
            steps, values = zip(*series[key], strict=True)
            axis.plot(steps, values, color=colour, label=label)
        axis.set_ylabel(label, color=colour)
    right.set_yscale("log")
    bottom.set_xlabel("optimizer step")
    for axis in (top, bottom):
        axis.axvline(finetune_start, color="black", linestyle=":", linewidth=1)
    top.annotate(
        "reward fine-tuning starts",
        xy=(finetune_start, 0),
        xycoords=("data", "axes fraction"),
        xytext=(4, 6),
        textcoords="offset points",
        fontsize=8,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


SCALE = 4
"""Sample grids are enlarged this many times, so that 32-pixel samples are visible."""
LABEL_WIDTH = 300
"""Width in pixels of the prompt column left of a grid (after enlarging)."""


def labelled_grid(grid: Tensor, row_labels: Sequence[str]) -> Image.Image:
    """A ``make_grid`` tile of uint8 ``(3, H, W)``, enlarged, with each row's label on its left.

    The rows of ``grid`` must be of equal height; ``row_labels`` names them top to bottom.
    """
    tiles = Image.fromarray(grid.permute(1, 2, 0).cpu().numpy())
    tiles = tiles.resize((tiles.width * SCALE, tiles.height * SCALE), Image.NEAREST)
    picture = Image.new("RGB", (LABEL_WIDTH + tiles.width, tiles.height), "white")
    picture.paste(tiles, (LABEL_WIDTH, 0))
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=26)
    row_height = tiles.height / len(row_labels)
    for row, label in enumerate(row_labels):
        middle = (row + 0.5) * row_height
        draw.text((LABEL_WIDTH - 12, middle), label, fill="black", font=font, anchor="rm")
    return picture


def side_by_side(paths: Sequence[str], titles: Sequence[str], path: str) -> None:
    """Write the images at ``paths`` next to each other, each under its title, as one PNG."""
    images = [Image.open(p).convert("RGB") for p in paths]
    title_height, gap = 48, 24
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    height = title_height + max(image.height for image in images)
    picture = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=30)
    left = 0
    for image, title in zip(images, titles, strict=True):
        picture.paste(image, (left, title_height))
        draw.text((left + image.width / 2, title_height / 2), title, "black", font, anchor="mm")
        left += image.width + gap
    picture.save(path)


def plot_modes(before: Any, after: Any, path: str, max_modes: int = 5) -> None:
    """The leading modes before and after fine-tuning and the modes lost in between, as one PNG.

    Three columns of captioned mode grids (from the results' ``mode_previews``): the modes of
    ``before``, those of ``after``, and ``after``'s lost modes (the samples of ``before`` on
    the top row, the same seeds after fine-tuning below).
    """
    from diversity_callbacks.media.modes import mode_panels

    panels = mode_panels(after)
    columns = [
        (f"modes at step {before.mode_reference.step}", mode_panels(before)),
        (f"modes at step {after.mode_reference.step}", [p for p in panels if p.group == "modes"]),
        ("lost modes: then (top), same seeds now", [p for p in panels if p.group == "lost_modes"]),
    ]
    scale, caption_height, title_height, gap = 2, 22, 40, 28
    font, title_font = ImageFont.load_default(size=16), ImageFont.load_default(size=22)
    images = []
    for title, shown in columns:
        grids = [_upscaled(p.hwc(), scale) for p in shown[:max_modes]]
        width = max([g.width for g in grids] + [320])
        height = title_height + sum(caption_height + g.height + 8 for g in grids)
        column = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(column)
        draw.text((width / 2, title_height / 2), title, "black", title_font, anchor="mm")
        top = title_height
        for panel, grid in zip(shown, grids, strict=False):
            draw.text((4, top + 4), panel.caption.split(" (")[0], "black", font)
            column.paste(grid, (0, top + caption_height))
            top += caption_height + grid.height + 8
        images.append(column)
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    picture = Image.new("RGB", (width, max(image.height for image in images)), "white")
    left = 0
    for image in images:
        picture.paste(image, (left, 0))
        left += image.width + gap
    picture.save(path)


def _upscaled(pixels: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(pixels)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)
