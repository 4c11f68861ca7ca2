"""QualityWeightedVendiScore: Vendi's states plus a float64 sum of qualities, exact under DDP."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks.functional import quality_weighted_vendi_score
from diversity_callbacks.metrics import QualityWeightedVendiScore
from tests.helpers.distributed import run_distributed

ORDERS = [1, 2, "inf"]
SHARDS = ([6, 0, 9], [4])  # uneven, with an empty batch


def rows(total: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(total, 4, generator=generator), torch.rand(total, generator=generator)


def test_the_metric_streams_what_the_function_computes_at_once():
    features, qualities = rows(19)
    metric = QualityWeightedVendiScore(q=ORDERS)
    metric.update(features[:7], qualities[:7])
    metric.update(features[7:], qualities[7:])
    expected = quality_weighted_vendi_score(features, qualities, q=ORDERS)
    result = metric.compute()
    for key, value in expected.items():
        assert float(result[key]) == pytest.approx(float(value), rel=1e-12)
    assert float(metric.mean_quality) == pytest.approx(float(qualities.double().mean()), rel=1e-12)


def test_qualities_must_match_the_features_rows():
    with pytest.raises(ValueError, match=r"`qualities` must be a floating tensor of shape \(3,\)"):
        QualityWeightedVendiScore().update(torch.eye(3), torch.ones(2))


def _on_ranks(rank: int, world_size: int) -> dict[str, Any]:
    features, qualities = rows(sum(SHARDS[0]) + sum(SHARDS[1]))
    start = 0 if rank == 0 else sum(SHARDS[0])
    metric = QualityWeightedVendiScore(q=ORDERS, kernel="gaussian", sigma=2.0)
    for count in SHARDS[rank]:
        metric.update(features[start : start + count], qualities[start : start + count])
        start += count
    return {key: float(value) for key, value in metric.compute().items()}


@pytest.mark.timeout(180)
def test_two_uneven_ranks_equal_one_process_on_all_rows():
    features, qualities = rows(sum(SHARDS[0]) + sum(SHARDS[1]))
    expected = quality_weighted_vendi_score(
        features, qualities, q=ORDERS, kernel="gaussian", sigma=2.0
    )
    for result in run_distributed(_on_ranks):
        for key, value in expected.items():
            assert result[key] == pytest.approx(float(value), rel=1e-9)
