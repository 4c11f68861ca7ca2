"""The DDP test harness really runs two communicating processes."""

from __future__ import annotations

import torch
import torch.distributed as dist

from tests.helpers.distributed import run_distributed


def _sum_of_ranks(rank: int, world_size: int) -> tuple[int, int]:
    value = torch.tensor([rank + 1])
    dist.all_reduce(value)
    return dist.get_world_size(), int(value)


def test_two_gloo_ranks_communicate() -> None:
    assert run_distributed(_sum_of_ranks) == [(2, 3), (2, 3)]
