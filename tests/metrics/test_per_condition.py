"""PerConditionVendiScore and per_condition_vendi_score: the Vendi score within each condition."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks import Kernel
from diversity_callbacks.functional import per_condition as per_condition_module
from diversity_callbacks.functional import per_condition_vendi_score, spectrum, vendi_score
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


def loop_over_conditions(features, ids, orders, num_conditions, **kernel_kwargs):
    """The definition, one condition at a time: the Vendi score of its rows (0.1's compute)."""
    table = torch.full((num_conditions, len(orders)), torch.nan, dtype=torch.float64)
    for condition in torch.unique(ids).tolist():
        scores = vendi_score(features[ids == condition], q=orders, **kernel_kwargs)
        table[condition] = torch.stack(list(scores.values()))
    return table


KERNELS = [
    {},  # cosine
    {"kernel": "linear"},
    {"kernel": "gaussian:sigma=1.5"},  # exact: an n x n kernel function
    {"kernel": "gaussian:sigma=1.5,features=3"},  # 6 random features: D < m
    {"kernel": lambda x, y: (x @ y.T) ** 2},  # a user's kernel function
    # D = 2 < m for the larger conditions
    {"kernel": Kernel(feature_map=lambda x: x[:, :2].double())},
    {"tolerance": 0.1},
]


@pytest.mark.parametrize("options", KERNELS, ids=range(len(KERNELS)))
def test_grouped_batched_compute_equals_the_loop_over_conditions(options: dict):
    generator = torch.Generator().manual_seed(0)
    # uneven conditions (1 to 9 samples, several of each size, two empty), shuffled rows
    sizes = torch.tensor([3, 0, 1, 9, 3, 5, 3, 0, 9, 2, 5, 1])
    ids = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    ids = ids[torch.randperm(len(ids), generator=generator)]
    features = torch.randn(len(ids), 4, generator=generator, dtype=torch.float64)
    orders = [0, 0.5, 1, 2, 7.5, float("inf")]
    table = per_condition_vendi_score(features, ids, q=orders, num_conditions=13, **options)
    expected = loop_over_conditions(features, ids, orders, 13, **options)
    assert torch.equal(table.isnan(), expected.isnan())
    assert torch.allclose(table, expected, rtol=1e-10, atol=0, equal_nan=True)


def test_chunks_of_conditions_give_the_same_table(monkeypatch: pytest.MonkeyPatch):
    features = torch.randn(40, 6, dtype=torch.float64)
    ids = torch.arange(40) % 10
    whole = per_condition_vendi_score(features, ids, q=[1, 2])
    monkeypatch.setattr(per_condition_module, "ROWS_PER_CHUNK", 9)  # 2 conditions per chunk
    assert torch.allclose(per_condition_vendi_score(features, ids, q=[1, 2]), whole, rtol=1e-12)


def test_conditions_of_equal_size_share_one_eigendecomposition(monkeypatch: pytest.MonkeyPatch):
    # 0.1 decomposed each condition on its own (and masked all rows for each): here 300
    # conditions of 3 sizes take 3 batched calls, whatever their number.
    calls = []
    decompose = spectrum.symmetric_eigenvalues

    def counted(matrix: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(matrix.shape))
        return decompose(matrix)

    monkeypatch.setattr(spectrum, "symmetric_eigenvalues", counted)
    sizes = torch.tensor([2, 3, 4]).repeat(100)
    ids = torch.repeat_interleave(torch.arange(300), sizes)
    per_condition_vendi_score(torch.randn(len(ids), 8), ids)
    assert sorted(calls) == [(100, 2, 2), (100, 3, 3), (100, 4, 4)]


def test_the_gaussian_kernel_options_are_passed_through():
    features = torch.randn(8, 3)
    ids = torch.zeros(8, dtype=torch.long)
    options = {"kernel": "gaussian:sigma=0.7"}
    metric = PerConditionVendiScore(num_conditions=1, q=1, **options)
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


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({"kernel": "gaussian", "sigma": 2.0, "tolerance": 1e-9}, Kernel("gaussian", sigma=2.0)),
        ({"kernel": "linear"}, "linear"),
    ],
)
def test_kernel_kwargs_warn_once_and_give_identical_scores(options, value) -> None:
    features, ids = torch.randn(24, 3), torch.arange(24) % 4
    tolerance = options.get("tolerance")
    with pytest.warns(FutureWarning, match="`kernel_kwargs` is deprecated") as caught:
        by_keyword = PerConditionVendiScore(4, q=[1, 2], kernel_kwargs=options)
    assert len(caught) == 1 and "pass kernel=Kernel(" in str(caught[0].message)
    with pytest.warns(FutureWarning, match="`kernel_kwargs` is deprecated"):
        positional = PerConditionVendiScore(4, [1, 2], options)  # 0.1's third argument
    new = PerConditionVendiScore(4, q=[1, 2], kernel=value, tolerance=tolerance)
    for metric in (by_keyword, positional, new):
        metric.update(features, ids)
    expected = new.compute()
    for metric in (by_keyword, positional):
        assert all(torch.equal(metric.compute()[key], expected[key]) for key in expected)
    reference = per_condition_vendi_score(features, ids, [1, 2], kernel=value, tolerance=tolerance)
    assert torch.equal(new.per_condition, reference)
