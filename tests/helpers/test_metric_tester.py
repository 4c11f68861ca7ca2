"""The metric harness itself: a broken run is reported alone and the other runs still go."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor
from torchmetrics import Metric

from tests.helpers.metric_tester import SHARES, MetricCase, ddp_results, ddp_run, ddp_runs


class Total(Metric):
    """The sum of the rows; ``broken`` fails at compute on every rank."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.broken = broken
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, rows: Tensor) -> None:
        self.total += rows.sum()

    def compute(self) -> Tensor:
        if self.broken:
            raise ValueError("broken on purpose")
        return self.total


class Bytes(Metric):
    """Rows kept as uint8 in a "cat" list: a rank without rows gathers torchmetrics' float
    placeholder beside the other rank's bytes, which kills the launch inside gloo."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", [], dist_reduce_fx="cat")

    def update(self, rows: Tensor) -> None:
        self.values.append(rows.flatten().to(torch.uint8))

    def compute(self) -> Tensor:
        return torch.cat(self.values).sum() if isinstance(self.values, list) else self.values.sum()


def ones(n: int, generator: torch.Generator) -> tuple[Tensor]:
    return (torch.ones(n, 2),)


CASES = {
    "first": MetricCase(Total, lambda x: x.sum(), ones),
    "raises": MetricCase(lambda: Total(broken=True), lambda x: x.sum(), ones),
    "aborts": MetricCase(Bytes, lambda x: x.sum(), ones),
    "last": MetricCase(Total, lambda x: x.sum(), ones),
}


def _on_ranks(rank: int, world_size: int, runs: list[str], folder: str) -> None:
    ddp_results(rank, world_size, CASES, runs, folder)


@pytest.mark.slow  # three launches of two processes
@pytest.mark.timeout(600)
def test_each_broken_run_is_reported_alone_and_the_runs_after_it_still_go():
    # an error on both ranks, then a collective mismatch that aborts the processes in gloo
    runs = [*ddp_runs(["first"]), "raises/uneven", "aborts/rank1_empty", *ddp_runs(["last"])]
    results: dict[str, Any] = ddp_run(_on_ranks, runs)
    assert list(results) == runs
    for share in SHARES:
        assert [float(r) for r in results[f"first/{share}"]] == [48.0, 48.0]
        assert [float(r) for r in results[f"last/{share}"]] == [48.0, 48.0]
    assert results["raises/uneven"] == "ValueError: broken on purpose"
    # the launch died ("the 2-rank launch died in this run (...)"), or the rank that outlived
    # the other saw its peer go ("RuntimeError: ... Connection closed by peer")
    assert isinstance(results["aborts/rank1_empty"], str), results["aborts/rank1_empty"]
