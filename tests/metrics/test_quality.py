"""QualityWeightedVendiScore: Vendi's states plus a float64 sum of qualities (its DDP and
merge_state checks are the shared harness's, tests/metrics/test_all_metrics.py)."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.functional import quality_weighted_vendi_score
from diversity_callbacks.metrics import QualityWeightedVendiScore

ORDERS = [1, 2, "inf"]


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
