"""``score --plot DIR``'s pictures come from ``media/``, as every logger's: ``grid-<run>.png``
(rows: the first prompts, columns: their first images) and ``copies-<run>.png``, each with the
captions of its rows in a CSV beside it, as the media folder writes ``copies.csv``."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diversity_callbacks.cli import main
from diversity_callbacks.media import render
from tests.helpers.cli import CELLS, copying_run, save

TILE = 16 + 2  # the images are 16 pixels, media's padding 2
GREY = [128] * 3  # media's padding, apart from black and white backgrounds


def colour(prompt: int, image: int) -> list[int]:
    return [5 + 20 * prompt, 5 + 20 * image, 77]


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_grid_rows_are_the_first_prompts_and_columns_their_first_images(tmp_path: Path):
    counts = [9, 2] + [1] * 7  # 9 prompts; the first has more images than the 8 columns
    for prompt, count in enumerate(counts):
        for image in range(count):
            pixels = torch.tensor(colour(prompt, image), dtype=torch.uint8).view(3, 1, 1)
            save(
                pixels.expand(3, 16, 16).contiguous(),
                tmp_path / "run" / f"p{prompt}" / f"{image}.png",
            )
    plots = tmp_path / "plots"
    assert main(["score", str(tmp_path / "run"), *CELLS, "--plot", str(plots), "--grids"]) == 0
    grid = read(plots / "grid-run.png")
    assert grid.shape == (8 * TILE + 2, 8 * TILE + 2, 3)  # 8 of the 9 prompts, 8 of 9 images
    for row in range(8):
        for column in range(8):
            centre = grid[2 + TILE * row + 8, 2 + TILE * column + 8].tolist()
            shown = column < counts[row]
            assert centre == (colour(row, column) if shown else GREY), (row, column)
    assert grid[0, 0].tolist() == grid[10, TILE].tolist() == GREY  # padding
    with open(plots / "grid-run.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["row", "caption"]] + [[str(r), f"prompt: p{r}"] for r in range(8)]


def test_copies_picture_is_media_copies_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    train, run = copying_run(tmp_path)
    seen = []
    copies_grid = render.copies_grid
    monkeypatch.setattr(render, "copies_grid", lambda c: seen.append(c) or copies_grid(c))
    plots = tmp_path / "plots"
    assert main(["score", str(run), *CELLS, "--reference", str(train), "--plot", str(plots)]) == 0
    (copies,) = seen
    expected = copies_grid(copies)
    assert (plots / "copies-run.png").read_bytes() == expected.png
    assert (plots / "copies-run.csv").read_text() == expected.csv()
    picture = read(plots / "copies-run.png")
    assert picture.shape == (len(copies.shown) * TILE + 2, 2 * TILE + 2, 3)  # a pair a row
    assert picture[0, 0].tolist() == GREY
    for row, copy in enumerate(copies.shown):
        sample = picture[2 + TILE * row : TILE * (row + 1), 2:TILE]
        original = picture[2 + TILE * row : TILE * (row + 1), 2 + TILE : 2 * TILE]
        assert np.array_equal(sample, copy.sample.permute(1, 2, 0).numpy())
        assert np.array_equal(original, copy.reference.permute(1, 2, 0).numpy())
    assert [copy.similarity for copy in copies.shown[:3]] == pytest.approx([1.0] * 3)
    top = picture[2 : 3 * TILE]
    assert np.array_equal(top[:, 2:TILE], top[:, 2 + TILE : 2 * TILE])  # the 3 exact copies
    rows = list(csv.reader(io.StringIO(expected.csv())))
    assert rows[0] == ["rank", "similarity", "training_index"] and len(rows) == 1 + len(
        copies.shown
    )
