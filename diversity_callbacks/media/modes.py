"""What the modes of an evaluation show: one labelled grid per mode, or a table of the top items.

Three groups, each mode numbered from 1 by share:

- ``modes``: the leading modes of this evaluation, the samples that load most on each;
- ``lost_modes``: the modes of the earlier evaluation that this one lacks: the earlier
  evaluation's samples on the top row, the same seeds now on the row below (drawn from the very
  same seeds, so the row below shows what became of them);
- ``gained_modes``: this evaluation's modes that the earlier one lacked.

Images give :class:`ModePanel` grids (the share in the caption); other samples with a text
preview (strings) give one :class:`~diversity_callbacks.media.render.Table` row per top item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diversity_callbacks.evaluation.evaluator import EvaluationResult
from diversity_callbacks.evaluation.modes import Preview
from diversity_callbacks.functional.modes import Mode
from diversity_callbacks.media.picture import Picture, tile

MODE_GROUPS = ("modes", "lost_modes", "gained_modes")
MODE_COLUMNS = 8
"""Samples per row of a leading or gained mode's grid."""
TABLE_COLUMNS = ["group", "mode", "share", "rank", "sample", "text", "same seed now"]


@dataclass(frozen=True)
class ModePanel(Picture):
    """The grid of one mode.

    Attributes:
        group: ``"modes"``, ``"lost_modes"`` or ``"gained_modes"``.
        name: a file- and tag-safe name: ``mode_01``.
        caption: ``mode 1: share 0.214, samples 12, 40, ...``.
        pixels: ``(3, H, W)`` uint8 tensor on the CPU.
    """

    group: str
    name: str
    caption: str
    pixels: Tensor


def mode_panels(result: EvaluationResult) -> list[ModePanel]:
    """One grid per mode whose samples have thumbnails, in group then share order."""
    earlier = result.compared_to.previews if result.compared_to is not None else {}
    since = _since(result)
    panels = []
    for group in MODE_GROUPS:
        for number, mode in enumerate(getattr(result, group), start=1):
            samples = [int(i) for i in mode.samples]
            if group == "lost_modes":
                shown = _thumbnails(earlier, samples) + _thumbnails(result.mode_previews, samples)
                rows = len(samples)
                words = f"{since}: top row then, row below the same seeds now"
            else:
                shown, rows, words = _thumbnails(result.mode_previews, samples), MODE_COLUMNS, ""
            expected = len(samples) * (2 if group == "lost_modes" else 1)
            if not samples or len(shown) != expected:
                continue  # no thumbnails (text samples, or no media asked for)
            pixels = tile(torch.stack(shown), nrow=min(rows, len(shown)))
            label = group.replace("_modes", "").replace("modes", "mode")
            caption = f"{label} {number}: share {mode.share:.3f}{words and f' ({words})'}"
            panels.append(ModePanel(group, f"{label}_{number:02d}", caption, pixels))
    return panels


def mode_table_rows(result: EvaluationResult) -> list[list[str | float]]:
    """One row per top item of each mode with a text preview (see :data:`TABLE_COLUMNS`)."""
    earlier = result.compared_to.previews if result.compared_to is not None else {}
    rows: list[list[str | float]] = []
    for group in MODE_GROUPS:
        for number, mode in enumerate(getattr(result, group), start=1):
            rows.extend(_text_rows(group, number, mode, result.mode_previews, earlier))
    return rows


def _text_rows(
    group: str,
    number: int,
    mode: Mode,
    now: dict[int, Preview],
    earlier: dict[int, Preview],
) -> list[list[str | float]]:
    shown = earlier if group == "lost_modes" else now
    rows: list[list[str | float]] = []
    for rank, sample in enumerate(int(i) for i in mode.samples):
        text = shown.get(sample)
        if isinstance(text, str):
            later = now.get(sample, "") if group == "lost_modes" else ""
            rows.append(
                [group, float(number), mode.share, float(rank + 1), float(sample), text, later]
            )
    return rows


def _thumbnails(previews: dict[int, Preview], samples: list[int]) -> list[Tensor]:
    return [previews[i] for i in samples if isinstance(previews.get(i), Tensor)]


def _since(result: EvaluationResult) -> str:
    step = result.compared_to.step if result.compared_to is not None else None
    return "lost since the reference" if step is None else f"lost since step {step}"
