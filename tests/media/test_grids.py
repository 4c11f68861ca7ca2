"""The media grids of every logger (conditions, modes, copies): tiles in order, a mid-grey padding between them (tiles of
images on a black background stay apart), and the per-condition rows picture of the CLI."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.evaluation.conditions import ConditionSet, EvaluationSet
from diversity_callbacks.evaluation.memorization import CopiedSample, CopiedSamples
from diversity_callbacks.evaluation.results import EvaluationResult
from diversity_callbacks.functional.modes import Mode
from diversity_callbacks.media.modes import mode_panels
from diversity_callbacks.media.render import condition_grids, condition_rows, copies_grid

MID_GREY = 128
"""Media's padding: a black one merged the tiles of images on a black background."""
GREY = [MID_GREY] * 3


def solid(value: int, height: int = 4, width: int = 4) -> torch.Tensor:
    return torch.full((3, height, width), value, dtype=torch.uint8)


def test_condition_grids_pad_black_samples_with_grey() -> None:
    evaluation_set = EvaluationSet.from_arguments(prompts=["a cat"], samples_per_condition=3)
    (grid,) = condition_grids(evaluation_set, {i: solid(0) for i in range(3)})
    assert grid.pixels.shape == (3, 4 + 4, 3 * 6 + 2)
    assert grid.pixels[:, 0, 0].tolist() == GREY  # the border
    assert grid.pixels[:, 2, 6].tolist() == GREY  # between the first two tiles
    assert grid.pixels[:, 2:6, 2:6].eq(0).all()  # the first tile itself


def test_copies_grid_pads_pairs_with_grey_and_leaves_a_missing_reference_black() -> None:
    copies = CopiedSamples(
        similarities=torch.tensor([0.99], dtype=torch.float64),
        nearest=torch.tensor([7]),
        threshold=0.95,
        shown=[CopiedSample(0.99, 7, solid(255), None)],
    )
    grid = copies_grid(copies)
    assert grid.pixels.shape == (3, 4 + 4, 2 * 6 + 2)
    assert grid.pixels[:, 0, 0].tolist() == GREY and grid.pixels[:, 2, 6].tolist() == GREY
    assert grid.pixels[:, 2:6, 2:6].eq(255).all() and grid.pixels[:, 2:6, 8:12].eq(0).all()
    assert torch.equal(grid.pairs[0], grid.pixels)


def test_condition_rows_put_each_condition_in_its_row_and_blank_tiles_grey() -> None:
    conditions = ConditionSet.from_arguments(prompts=["a cat", "a dog", "a fish"])
    rows = condition_rows(conditions, {0: [solid(10), solid(20)], 2: [None, solid(30, 2, 3)]}, 3)
    pixels = rows.pixels
    assert pixels.shape == (3, 2 * 6 + 2, 3 * 6 + 2)

    def tile(row: int, column: int) -> torch.Tensor:
        return pixels[:, 2 + 6 * row : 6 + 6 * row, 2 + 6 * column : 6 + 6 * column]

    assert tile(0, 0).eq(10).all() and tile(0, 1).eq(20).all()
    assert tile(0, 2).eq(MID_GREY).all() and tile(1, 0).eq(MID_GREY).all()  # blank tiles
    assert tile(1, 1)[:, :2, :3].eq(30).all() and tile(1, 1)[:, 2:, :].eq(MID_GREY).all()
    assert rows.captions == ["prompt: a cat", "prompt: a fish"]  # condition 1 has no row
    assert rows.csv() == "row,caption\n0,prompt: a cat\n1,prompt: a fish\n"


@pytest.mark.parametrize(
    ("rows", "match"), [({}, "at least one condition"), ({0: [None] * 9}, "at most columns=8")]
)
def test_condition_rows_reject_no_rows_and_too_long_rows(rows, match) -> None:
    with pytest.raises(ValueError, match=match):
        condition_rows(ConditionSet.from_arguments(prompts=["a cat"]), rows)


def test_mode_panels_pad_black_samples_with_grey() -> None:
    mode = Mode(share=0.5, samples=torch.tensor([3, 1]), loadings=torch.tensor([0.9, 0.8]))
    result = EvaluationResult(scalars={}, modes=[mode], mode_previews={1: solid(0), 3: solid(0)})
    (panel,) = mode_panels(result)
    assert panel.pixels.shape == (3, 4 + 4, 2 * 6 + 2)
    assert panel.pixels[:, 0, 0].tolist() == GREY and panel.pixels[:, 2, 6].tolist() == GREY
    assert panel.pixels[:, 2:6, 2:6].eq(0).all()
