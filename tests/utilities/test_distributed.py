"""The evaluation's collectives: alone without a process group, agreeing across gloo ranks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks.utilities.distributed import (
    all_gather_objects,
    all_reduce_sum,
    any_rank,
    gather_to_rank_zero,
    rank_and_world_size,
)
from tests.helpers.distributed import run_distributed

CPU = torch.device("cpu")


def test_without_a_process_group_each_collective_is_the_identity():
    assert rank_and_world_size() == (0, 1)
    assert any_rank(True, CPU) is True and any_rank(False, CPU) is False
    tensor = torch.tensor([1.5, 2.0], dtype=torch.float64)
    assert all_reduce_sum(tensor, CPU) is tensor
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    item = {"a": 1}
    assert gather_to_rank_zero(item) is item


def _collectives(rank: int, world_size: int) -> dict[str, Any]:
    mine = torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64)
    summed = all_reduce_sum(mine, CPU)
    return {
        "rank_and_world_size": rank_and_world_size(),
        "only_rank_1": any_rank(rank == 1, CPU),
        "none": any_rank(False, CPU),
        "sum": summed,
        "mine_untouched": mine,
        "objects": all_gather_objects(("rank", rank)),
        "to_rank_zero": gather_to_rank_zero({f"key{rank}": rank}),
    }


@pytest.mark.timeout(180)
def test_two_gloo_ranks_agree_on_every_collective():
    first, second = run_distributed(_collectives)
    assert first["rank_and_world_size"] == (0, 2) and second["rank_and_world_size"] == (1, 2)
    for result, rank in ((first, 0), (second, 1)):
        assert result["only_rank_1"] is True and result["none"] is False
        assert result["sum"].tolist() == [3.0, 10.0] and result["sum"].dtype == torch.float64
        assert result["mine_untouched"].tolist() == [rank + 1.0, 10.0 * rank]
        assert result["objects"] == [("rank", 0), ("rank", 1)]
    assert first["to_rank_zero"] == {"key0": 0, "key1": 1}
    assert second["to_rank_zero"] == {"key1": 1}  # other ranks keep their own
