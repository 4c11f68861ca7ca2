"""PerConditionVendiScore and per_condition_vendi_score: the Vendi score within each condition."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.functional import per_condition_vendi_score, vendi_score
from diversity_callbacks.metrics import PerConditionVendiScore


def test_each_condition_is_scored_on_its_own_samples_across_updates():
    features = torch.randn(10, 6, dtype=torch.float64)
    ids = torch.tensor([0, 0, 2, 2, 2, 0, 2, 0, 2, 2])
    metric = PerConditionVendiScore(num_conditions=4, q=[1, 2, "inf"])
    metric.update(features[:3], ids[:3])  # condition 2's samples arrive in both batches
    metric.update(features[3:], ids[3:])
    means = metric.compute()
    scores = metric.per_condition
    assert scores.shape == (4, 3) and scores.dtype == torch.float64
    for condition in (0, 2):
        expected = vendi_score(features[ids == condition], q=[1, 2, "inf"])
        assert torch.allclose(scores[condition], torch.stack(list(expected.values())), rtol=1e-12)
    assert scores[1].isnan().all() and scores[3].isnan().all()  # no samples, no score
    # the mean runs over the conditions that have samples only
    assert float(means["q1"]) == pytest.approx(float(scores[[0, 2], 0].mean()), rel=1e-12)
    assert metric.keys == ["q1", "q2", "qinf"]


def test_the_functional_form_gives_the_metric_table():
    features = torch.randn(9, 5, dtype=torch.float64)
    ids = torch.tensor([1, 0, 1, 0, 1, 0, 2, 2, 2])
    metric = PerConditionVendiScore(num_conditions=3, q=2)
    metric.update(features, ids)
    metric.compute()
    table = per_condition_vendi_score(features, ids, q=2)
    assert torch.equal(table, metric.per_condition)
    assert table[1, 0] != table[0, 0]  # the conditions really are scored apart


def test_the_gaussian_kernel_options_are_passed_through():
    features = torch.randn(8, 3)
    ids = torch.zeros(8, dtype=torch.long)
    options = {"kernel": "gaussian", "sigma": 0.7}
    metric = PerConditionVendiScore(num_conditions=1, q=1, kernel_kwargs=options)
    metric.update(features, ids)
    expected = vendi_score(features.double(), q=1, **options)
    cosine = vendi_score(features.double(), q=1)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-12)
    assert float(expected) != pytest.approx(float(cosine), rel=1e-3)


def test_compute_before_any_update_says_what_is_missing():
    metric = PerConditionVendiScore(num_conditions=2)
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(ValueError, match="needs at least one sample"),
    ):
        metric.compute()


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (torch.tensor([0, 3]), r"`condition_ids` must lie in \[0, 2\], got values in \[0, 3\]"),
        (torch.tensor([-1, 0]), r"`condition_ids` must lie in \[0, 2\], got values in \[-1, 0\]"),
        (torch.tensor([0, 1, 2]), r"`condition_ids` must have shape \(2,\)"),
    ],
)
def test_condition_ids_are_checked(ids: torch.Tensor, match: str):
    with pytest.raises(ValueError, match=match):
        PerConditionVendiScore(num_conditions=3).update(torch.randn(2, 4), ids)


def test_float_condition_ids_are_refused():
    with pytest.raises(TypeError, match="`condition_ids` must be an integer"):
        PerConditionVendiScore(num_conditions=3).update(torch.randn(2, 4), torch.zeros(2))


def test_features_keep_their_dimension_across_updates():
    metric = PerConditionVendiScore(num_conditions=1)
    metric.update(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="feature dimension 4"):
        metric.update(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))
