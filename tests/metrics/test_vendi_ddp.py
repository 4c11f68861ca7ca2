"""VendiScore under real DDP: two gloo processes against one process on all the rows.

One launch runs every scenario (process start-up dominates the cost); each rank returns its
results and the test compares them with the functional score of the concatenated rows.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks import VendiScore
from diversity_callbacks.functional import vendi_score
from tests.helpers.distributed import run_distributed

ORDERS = [0, 0.5, 1, 2, "inf"]
KERNELS = {
    "cosine": {},
    "gaussian": {"kernel": "gaussian", "sigma": 3.0},
    "random_features": {"kernel": "gaussian", "sigma": 3.0, "num_features": 32},
}
# Row counts per update call, per rank: uneven shards, different numbers of update calls, a
# rank with only an empty batch and a rank that never calls update.
SHARDS = {
    "uneven": ([7, 0, 13, 4], [9]),
    "rank1_empty_batch": ([11, 6], [0]),
    "rank1_no_update": ([5, 5, 5], []),
    "rank0_no_update": ([], [3, 14]),
}


def all_rows(shards: tuple[list[int], list[int]]) -> torch.Tensor:
    """The rows of both ranks, rank 0's first, drawn the same way in every process."""
    generator = torch.Generator().manual_seed(7)
    return torch.randn(sum(shards[0]) + sum(shards[1]), 6, generator=generator)


def _scenarios(rank: int, world_size: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for shard_name, shards in SHARDS.items():
        rows = all_rows(shards)
        mine = rows[sum(shards[0]) :] if rank else rows[: sum(shards[0])]
        for kernel_name, kwargs in KERNELS.items():
            metric = VendiScore(q=ORDERS, **kwargs)
            for batch in mine.split(shards[rank]) if shards[rank] else []:
                metric.update(batch)
            key = f"{shard_name}/{kernel_name}"
            results[key] = {name: value.item() for name, value in metric.compute().items()}
            results[key + "/spectrum_length"] = metric.spectrum().numel()
            with metric.sync_context():
                results[key + "/num_samples"] = int(metric.num_samples)
            results[key + "/local_num_samples"] = int(metric.num_samples)
    results["mismatch"] = _dimension_mismatch(rank)
    return results


def _dimension_mismatch(rank: int) -> list[str]:
    """Ranks that embed with different dimensions fail on every rank with a clear message."""
    messages = []
    for kwargs in KERNELS.values():
        metric = VendiScore(**kwargs)
        metric.update(torch.randn(4, 5 if rank else 6))
        try:
            metric.compute()
        except ValueError as error:
            messages.append(str(error))
    return messages


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return run_distributed(_scenarios)


@pytest.mark.parametrize("shard_name", SHARDS)
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_two_ranks_equal_one_process_on_all_rows(
    ranks: list[dict[str, Any]], shard_name: str, kernel_name: str
) -> None:
    rows = all_rows(SHARDS[shard_name])
    expected = vendi_score(rows, q=ORDERS, **KERNELS[kernel_name])
    key = f"{shard_name}/{kernel_name}"
    for result in ranks:
        for name, value in expected.items():
            assert result[key][name] == pytest.approx(value.item(), rel=1e-9, abs=0)
        assert result[key + "/spectrum_length"] == int(expected["q0"].item())
        assert result[key + "/num_samples"] == rows.shape[0]
    local = [result[key + "/local_num_samples"] for result in ranks]
    assert local == [sum(shard) for shard in SHARDS[shard_name]]  # compute() unsyncs after


def test_ranks_with_different_dimensions_fail_clearly(ranks: list[dict[str, Any]]) -> None:
    for result in ranks:
        assert len(result["mismatch"]) == len(KERNELS)
        for message in result["mismatch"]:
            assert "the feature dimensions differ across ranks" in message
