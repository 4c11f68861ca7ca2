"""ConditionalVendiScore and InformationVendiScore: batches, DDP ranks and the 0.1 signature."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks import ConditionalVendiScore, InformationVendiScore, Kernel
from diversity_callbacks.functional import conditional_vendi_score, information_vendi_score
from tests.helpers.distributed import run_distributed

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


# The streaming path (num_features=): float64 sum states whose size does not grow with n.

STREAMING = {
    "gaussian_pair": dict(OPTIONS["streaming"]),
    "cosine_tensor": {"num_features": 8},
    "labels_gaussian": {"kernel": "gaussian", "sigma": 2.0, "num_features": 16},
    "labels_cosine": {"num_features": 1},
}


def _streamed(name: str, metric_class: type, rows: torch.Tensor) -> tuple[Any, dict[str, Any]]:
    """A streaming metric and the conditions of ``rows`` for the case ``name``."""
    images, texts, labels = _data(30)
    conditions = labels[rows] if name.startswith("labels") else texts[rows]
    return metric_class(q=ORDERS, **STREAMING[name]), images[rows], conditions


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("case", STREAMING)
def test_streaming_states_are_sums_of_a_size_independent_of_the_samples(name, case):
    metric_class, _ = METRICS[name]
    metric, images, conditions = _streamed(case, metric_class, torch.arange(30))
    metric.update(images[:10], conditions[:10])
    shapes = {key: tuple(value.shape) for key, value in metric.metric_state.items()}
    metric.update(images[10:], conditions[10:])
    if case.startswith("labels"):  # labels 0..2 are all in the first ten rows
        assert set(conditions[:10].tolist()) == set(conditions.tolist())
    assert {key: tuple(value.shape) for key, value in metric.metric_state.items()} == shapes
    assert not hasattr(metric, "rows")
    assert all(
        fx in ("sum", "max") or getattr(fx, "__name__", "") in ("dim_zero_sum", "dim_zero_max")
        for fx in metric._reductions.values()
    )
    assert all(value.dtype in (torch.float64, torch.long) for value in metric.metric_state.values())


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric .* was called before")
@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("case", STREAMING)
def test_streaming_merge_state_with_other_labels_equals_one_metric(name, case):
    metric_class, _ = METRICS[name]
    images, _, labels = _data(30)
    order = torch.argsort(labels, stable=True)  # the first part lacks the largest labels
    whole, _, _ = _streamed(case, metric_class, order)
    first, first_images, first_conditions = _streamed(case, metric_class, order[:9])
    second, second_images, second_conditions = _streamed(case, metric_class, order[9:])
    whole.update(images[order], _streamed(case, metric_class, order)[2])
    first.update(first_images, first_conditions)
    second.update(second_images, second_conditions)
    fresh = metric_class(q=ORDERS, **STREAMING[case])
    fresh.merge_state(second)  # a fresh metric takes the larger label set
    fresh.merge_state(first)
    first.merge_state(second)
    first.merge_state(metric_class(q=ORDERS, **STREAMING[case]))  # an empty one adds nothing
    expected = whole.compute()
    for merged in (first, fresh):
        result = merged.compute()
        for key in expected:
            assert float(result[key]) == pytest.approx(float(expected[key]), rel=1e-9), key


@pytest.mark.parametrize("name", METRICS)
def test_streaming_forward_with_a_new_label_keeps_the_earlier_samples(name):
    metric_class, score = METRICS[name]
    images, _, labels = _data(30)
    metric = metric_class(q=ORDERS, **STREAMING["labels_gaussian"])
    metric(images[:12], labels[:12].clamp_max(1))
    metric(images[12:], labels[12:] + 3)  # labels 3..5: new blocks
    conditions = torch.cat([labels[:12].clamp_max(1), labels[12:] + 3])
    expected = score(images.double(), condition_ids=conditions, q=ORDERS,
                     **STREAMING["labels_gaussian"])  # fmt: skip
    result = metric.compute()
    for key in expected:
        assert float(result[key]) == pytest.approx(float(expected[key]), rel=1e-9), key


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric .* was called before")
def test_streaming_state_dict_round_trip_into_a_fresh_metric():
    images, _, labels = _data(30)
    metric = InformationVendiScore(q=ORDERS, **STREAMING["labels_cosine"])
    metric.update(images[:20], labels[:20])
    metric.persistent(True)
    restored = InformationVendiScore(q=ORDERS, **STREAMING["labels_cosine"])
    restored.load_state_dict(metric.state_dict())
    restored.update(images[20:], labels[20:])
    expected = information_vendi_score(images.double(), condition_ids=labels, q=ORDERS,
                                       **STREAMING["labels_cosine"])  # fmt: skip
    for key, value in restored.compute().items():
        assert float(value) == pytest.approx(float(expected[key]), rel=1e-9), key


def test_streaming_refuses_negative_labels():
    metric = ConditionalVendiScore(num_features=1)
    with pytest.raises(ValueError, match=r"class labels >= 0 with num_features=.*got -1"):
        metric.update(torch.randn(3, 4), torch.tensor([0, -1, 2]))


def _label_shares(rank: int, world_size: int) -> dict[str, Any]:
    """Rank 0 sees labels 0 and 1, rank 1 labels 4 and 5 (uneven), or nothing at all."""
    images, _, labels = _data(30)
    labels = torch.where(labels > 0, labels + 3, labels)  # 0, 4, 5
    results = {}
    for case in ("labels_gaussian", "labels_cosine"):
        for name, (metric_class, _) in METRICS.items():
            for empty in (None, 0, 1):
                metric = metric_class(q=ORDERS, **STREAMING[case])
                mine = (labels <= 1) if rank == 0 else (labels > 1)
                if rank != empty:
                    metric.update(images[mine], labels[mine])
                values = metric.compute()
                results[f"{case}/{name}/{empty}"] = {k: v.item() for k, v in values.items()}
    return results


@pytest.mark.timeout(300)
def test_streaming_on_two_gloo_ranks_with_different_labels_equals_one_process():
    ranks = run_distributed(_label_shares)
    assert ranks[0] == ranks[1]
    images, _, labels = _data(30)
    labels = torch.where(labels > 0, labels + 3, labels)
    for key, result in ranks[0].items():
        case, name, empty = key.split("/")
        keep = torch.ones(30, dtype=torch.bool)
        if empty != "None":
            keep = (labels > 1) if empty == "0" else (labels <= 1)
        expected = METRICS[name][1](images[keep].double(), condition_ids=labels[keep], q=ORDERS,
                                    **STREAMING[case])  # fmt: skip
        for order, value in expected.items():
            assert result[order] == pytest.approx(float(value), rel=1e-9), (key, order)


@pytest.mark.parametrize("name", METRICS)
def test_a_kernel_value_gives_the_samples_kernel_and_its_random_features(name: str) -> None:
    metric_class, score = METRICS[name]
    torch.manual_seed(0)
    features, conditions = torch.randn(30, 3), torch.randn(30, 2)
    value = Kernel("gaussian", sigma=2.0, num_features=64)
    flat = {"condition_kernel": "gaussian", "condition_sigma": 1.5}
    old = metric_class(q=ORDERS, **OPTIONS["streaming"])
    new = metric_class(q=ORDERS, kernel=value, **flat)
    assert old._state_settings() == new._state_settings()
    for metric in (old, new):
        metric.update(features, conditions)
    expected = score(features, condition_features=conditions, q=ORDERS, kernel=value, **flat)
    got = new.compute()
    assert all(torch.equal(old.compute()[key], got[key]) for key in expected)
    for key in expected:
        assert got[key].item() == pytest.approx(expected[key].item(), rel=1e-9)
    with pytest.raises(TypeError, match="not also as `sigma`"):
        metric_class(kernel=value, sigma=2.0)
    with pytest.raises(ValueError, match="a cosine or Gaussian kernel by name"):
        metric_class(kernel=Kernel(feature_map=torch.tanh))


@pytest.mark.parametrize("name", METRICS)
@pytest.mark.parametrize("case", ["labels_gaussian", "labels_cosine"])
@pytest.mark.parametrize("held_back", [150, 10_000])  # rows both added and held back; all held
def test_streaming_compute_reads_held_back_rows_where_they_are(name, case, held_back, monkeypatch):
    import diversity_callbacks.metrics.conditional_vendi as module

    monkeypatch.setattr(module, "PENDING_LABELLED_ROWS", held_back)
    metric_class, score = METRICS[name]
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(240, 6, generator=generator)
    labels = torch.randint(0, 3, (240,), generator=generator) * 2  # label 1, 3 never seen
    metric = metric_class(q=ORDERS, **STREAMING[case])
    for rows, condition in zip(images.split(40), labels.split(40), strict=True):
        metric.update(rows, condition)
    expected = score(images.double(), condition_ids=labels, q=ORDERS, **STREAMING[case])
    for round in range(2):  # compute leaves the held-back rows held; a state dict adds them
        result = metric.compute()
        for key in expected:
            assert float(result[key]) == pytest.approx(float(expected[key]), rel=1e-9), key
        assert bool(metric._pending) == (round == 0)
        metric.state_dict()


@pytest.mark.parametrize("case", STREAMING)
def test_reset_frees_the_updates_scratch_buffers_and_forgets_every_sample(case):
    metric, images, conditions = _streamed(case, ConditionalVendiScore, torch.arange(30))
    metric.update(images, conditions)
    metric.reset()
    assert metric._scratch._buffers == {}
    metric.update(images[:12], conditions[:12])
    fresh, _, _ = _streamed(case, ConditionalVendiScore, torch.arange(30))
    fresh.update(images[:12], conditions[:12])
    for key, value in fresh.compute().items():
        assert float(metric.compute()[key]) == pytest.approx(float(value), rel=1e-12), key
