"""ConditionalVendiScore and InformationVendiScore: batches, DDP ranks and the 0.1 signature."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks import ConditionalVendiScore, InformationVendiScore
from diversity_callbacks.functional import conditional_vendi_score, information_vendi_score
from tests.distributed import run_distributed

ORDERS = [0.5, 1, 2, "inf"]
METRICS = {
    "conditional": (ConditionalVendiScore, conditional_vendi_score),
    "information": (InformationVendiScore, information_vendi_score),
}
OPTIONS = {
    "cosine": {},
    "gaussian": {"kernel": "gaussian", "sigma": 2.0, "condition_kernel": "gaussian",
                 "condition_sigma": 1.5},
    "streaming": {"kernel": "gaussian", "sigma": 2.0, "condition_kernel": "gaussian",
                  "condition_sigma": 1.5, "num_features": 64},
}  # fmt: skip
# Rows per update call, per rank: uneven shares, an empty batch, a rank that never updates.
SHARDS = {
    "uneven": ([7, 0, 13], [4]),
    "rank1_no_update": ([6, 9], []),
    "rank0_no_update": ([], [3, 12]),
}


def _data(rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    images = torch.randn(rows, 6, generator=generator)
    texts = torch.randn(rows, 4, generator=generator)
    labels = torch.randint(0, 3, (rows,), generator=generator)
    return images, texts, labels


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("condition", ["features", "labels"])
def test_batches_give_the_functional_score_of_all_rows(name, options, condition):
    metric_class, score = METRICS[name]
    kwargs = dict(OPTIONS[options])
    images, texts, labels = _data(30)
    conditions = texts if condition == "features" else labels
    if condition == "labels":
        kwargs.pop("condition_kernel", None), kwargs.pop("condition_sigma", None)
    metric = metric_class(q=ORDERS, **kwargs)
    for part in torch.arange(30).split([5, 0, 17, 8]):
        metric.update(images[part], conditions[part])
    given = {"condition_features": texts} if condition == "features" else {"condition_ids": labels}
    expected = score(images.double(), q=ORDERS, **given, **kwargs)
    result = metric.compute()
    assert list(result) == list(expected)
    for key in expected:
        assert float(result[key]) == pytest.approx(float(expected[key]), rel=1e-12)


def test_one_order_gives_a_scalar():
    metric = ConditionalVendiScore(q=2)
    metric.update(torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 1]))
    assert metric.compute().ndim == 0


def test_the_0_1_signature_names_the_per_condition_metric():
    with pytest.raises(TypeError, match="PerConditionVendiScore"):
        ConditionalVendiScore(num_conditions=3, q=[1, 2])
    with pytest.raises(TypeError, match="PerConditionVendiScore"):
        ConditionalVendiScore(3)
    with pytest.raises(TypeError, match="PerConditionVendiScore"):
        ConditionalVendiScore(q=1, kernel_kwargs={"kernel": "cosine"})
    with pytest.raises(TypeError, match="keyword arguments only"):
        InformationVendiScore(1)


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError, match="`kernel` must be one of"):
        ConditionalVendiScore(kernel="linear")
    with pytest.raises(ValueError, match="`condition_sigma`"):
        InformationVendiScore(condition_kernel="gaussian")


def test_the_kind_of_condition_is_fixed_by_the_first_update():
    metric = ConditionalVendiScore()
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"\(N,\) integer labels as in earlier updates"):
        metric.update(torch.randn(4, 3), torch.randn(4, 2))


def test_compute_before_any_update_says_what_is_missing():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="needs at least one sample"):
        InformationVendiScore().compute()


def _scenarios(rank: int, world_size: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for shard_name, shards in SHARDS.items():
        images, texts, labels = _data(sum(shards[0]) + sum(shards[1]))
        start, stop = (0, sum(shards[0])) if rank == 0 else (sum(shards[0]), None)
        for name, (metric_class, _) in METRICS.items():
            for options, kwargs in OPTIONS.items():
                for condition, conditions in (("features", texts), ("labels", labels)):
                    kwargs = dict(kwargs)
                    if condition == "labels":
                        kwargs.pop("condition_kernel", None), kwargs.pop("condition_sigma", None)
                    metric = metric_class(q=ORDERS, **kwargs)
                    rows = torch.arange(len(images))[start:stop]
                    for part in rows.split(shards[rank]) if shards[rank] else []:
                        metric.update(images[part], conditions[part])
                    key = f"{shard_name}/{name}/{options}/{condition}"
                    results[key] = {k: v.item() for k, v in metric.compute().items()}
    return results


@pytest.mark.timeout(300)
def test_two_gloo_ranks_with_uneven_and_empty_shares_equal_one_process():
    ranks = run_distributed(_scenarios)
    assert ranks[0] == ranks[1]  # every rank gets the same result
    for key, result in ranks[0].items():
        shard_name, name, options, condition = key.split("/")
        shards = SHARDS[shard_name]
        images, texts, labels = _data(sum(shards[0]) + sum(shards[1]))
        kwargs = dict(OPTIONS[options])
        if condition == "labels":
            kwargs.pop("condition_kernel", None), kwargs.pop("condition_sigma", None)
        given = (
            {"condition_features": texts} if condition == "features" else {"condition_ids": labels}
        )
        expected = METRICS[name][1](images.double(), q=ORDERS, **given, **kwargs)
        for order, value in expected.items():
            assert result[order] == pytest.approx(float(value), rel=1e-9), (key, order)
