"""VendiScore as a torchmetrics metric, in one process: streaming, states and torchmetrics API."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torchmetrics import MetricCollection

from diversity_callbacks import Kernel, VendiScore
from diversity_callbacks.functional import vendi as vendi_functional
from diversity_callbacks.functional import vendi_score
from diversity_callbacks.metrics import vendi as vendi_module

KERNELS = {
    "cosine": {},
    "linear": {"kernel": "linear"},
    "gaussian": {"kernel": "gaussian", "sigma": 3.0},
    "random_features": {"kernel": "gaussian", "sigma": 3.0, "num_features": 16},
}
ORDERS = [0.5, 1, 2, "inf"]


def feed(metric: VendiScore, features: torch.Tensor, sizes: list[int]) -> VendiScore:
    for batch in features.split(sizes):
        metric.update(batch)
    return metric


def assert_scores_close(actual: dict, expected: dict, rel: float = 1e-9) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key].item() == pytest.approx(expected[key].item(), rel=rel, abs=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_streamed_batches_equal_the_functional_score_on_all_rows(kernel: str) -> None:
    features = torch.randn(45, 6)
    metric = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [10, 1, 0, 20, 14])
    assert_scores_close(metric.compute(), vendi_score(features, q=ORDERS, **KERNELS[kernel]))


@pytest.mark.parametrize("kernel", KERNELS)
def test_scores_do_not_depend_on_batch_split_or_row_order(kernel: str) -> None:
    features = torch.randn(30, 5)
    whole = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [30]).compute()
    split = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [7, 7, 16]).compute()
    shuffled = features[torch.randperm(30)]
    reordered = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), shuffled, [3, 27]).compute()
    assert_scores_close(split, whole)
    assert_scores_close(reordered, whole)


@pytest.mark.parametrize("kernel", ["cosine", "random_features"])
def test_rows_held_back_past_a_full_block_are_added_once_and_reset_drops_them(kernel: str) -> None:
    # 9,000 rows in batches of 1,000 fill the 8,192 held-back rows and start a second block.
    features = torch.randn(9000, 4, dtype=torch.float64)
    metric = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [1000] * 9)
    expected = vendi_score(features, q=ORDERS, **KERNELS[kernel])
    assert_scores_close(metric.compute(), expected, rel=1e-12)
    assert int(metric.num_samples) == 9000
    metric.update(features[:1000])  # held back, then dropped by reset
    metric.reset()
    feed(metric, features[:3000], [1000] * 3)
    assert_scores_close(metric.compute(), vendi_score(features[:3000], q=ORDERS, **KERNELS[kernel]))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric VendiScore was called before")
def test_state_dict_adds_the_rows_held_back_and_load_state_dict_drops_them() -> None:
    features = torch.randn(30, 4, dtype=torch.float64)
    metric = feed(VendiScore(q=ORDERS), features, [10, 20])  # cosine holds from the first batch
    metric.persistent(True)
    saved = metric.state_dict()
    assert saved["second_moment"].shape == (4, 4) and int(saved["num_samples"]) == 30
    assert torch.trace(saved["second_moment"]).item() == pytest.approx(30.0, rel=1e-12)
    restored = VendiScore(q=ORDERS)
    restored.persistent(True)
    restored.update(torch.randn(5, 4))  # held back, then replaced by the loaded states
    restored.load_state_dict(saved)
    assert_scores_close(restored.compute(), vendi_score(features, q=ORDERS), rel=1e-12)


def test_a_first_batch_with_a_zero_row_leaves_the_metric_empty() -> None:
    metric = VendiScore()
    with pytest.raises(ValueError, match="nonzero norm"):
        metric.update(torch.zeros(3, 4))
    assert metric.second_moment.shape == (0, 0) and int(metric.num_samples) == 0
    features = torch.randn(6, 5)
    assert metric.update(features) is None
    assert metric.compute().item() == pytest.approx(vendi_score(features).item(), rel=1e-12)


def test_compute_returns_a_float64_tensor_or_a_dict_of_orders() -> None:
    single = feed(VendiScore(q=2), torch.randn(8, 3), [8]).compute()
    assert isinstance(single, torch.Tensor) and single.dtype == torch.float64 and single.ndim == 0
    several = feed(VendiScore(q=[0.5, 1, 2, "inf"]), torch.randn(8, 3), [8]).compute()
    assert list(several) == ["q0.5", "q1", "q2", "qinf"]


def test_state_is_a_float64_second_moment_independent_of_the_number_of_rows() -> None:
    metric = feed(VendiScore(), torch.randn(500, 7, dtype=torch.float16), [100] * 5)
    assert metric.second_moment.shape == (7, 7)
    assert metric.second_moment.dtype == torch.float64
    assert int(metric.num_samples) == 500


def test_exact_gaussian_keeps_float64_rows() -> None:
    features = torch.randn(9, 4, dtype=torch.bfloat16)
    metric = feed(VendiScore(kernel="gaussian:sigma=2.0"), features, [4, 5])
    assert [rows.dtype for rows in metric.rows] == [torch.float64, torch.float64]
    expected = vendi_score(features.to(torch.float64), kernel="gaussian:sigma=2.0")
    assert metric.compute().item() == pytest.approx(expected.item(), rel=1e-12)


def test_rows_are_copied_so_reused_buffers_do_not_change_the_score() -> None:
    buffer = torch.randn(6, 3, dtype=torch.float64)
    expected = vendi_score(buffer, kernel="gaussian:sigma=1.0")
    metric = VendiScore(kernel="gaussian:sigma=1.0")
    metric.update(buffer)
    buffer.zero_()
    assert metric.compute().item() == expected.item()


def test_low_precision_module_casts_keep_the_states_float64() -> None:
    for kwargs in ({}, {"kernel": "gaussian", "sigma": 1.0}):
        metric = VendiScore(**kwargs)
        first, second = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3).half()
        metric.update(first)
        metric.to(torch.bfloat16)  # what Lightning does under precision="bf16-true"
        metric.half()
        metric.update(second)
        states = metric.rows if metric.kernel.feature_map is None else [metric.second_moment]
        assert all(state.dtype == torch.float64 for state in states)
        # states rounded through bf16 and back would keep the dtype but not the value
        expected = vendi_score(torch.cat([first, second.double()]), **kwargs)
        assert metric.compute().item() == pytest.approx(expected.item(), rel=1e-12)


def test_spectrum_gives_the_effective_dimension_and_num_samples_the_count() -> None:
    features = torch.randn(40, 3) @ torch.randn(3, 10)  # rank 3
    metric = feed(VendiScore(q=0), features, [25, 15])
    spectrum = metric.spectrum()
    assert spectrum.numel() == 3 == int(metric.compute())
    assert spectrum.sum().item() == pytest.approx(1.0, abs=1e-14)
    assert int(metric.num_samples) == 40


def test_one_sample_scores_one_and_empty_batches_count_nothing() -> None:
    for kwargs in KERNELS.values():
        metric = VendiScore(**kwargs)
        metric.update(torch.randn(0, 4))
        metric.update(torch.randn(1, 4))
        assert int(metric.num_samples) == 1
        assert metric.compute().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_compute_without_rows_says_what_to_do(kernel: str) -> None:
    metric = VendiScore(**KERNELS[kernel])
    metric.update(torch.randn(0, 4))
    with pytest.raises(ValueError, match=r"needs at least one sample, got none: call update\(\)"):
        metric.compute()


@pytest.mark.parametrize("kernel", KERNELS)
def test_changing_the_feature_dimension_between_updates_fails(kernel: str) -> None:
    metric = VendiScore(**KERNELS[kernel])
    metric.update(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"must have feature dimension 4 .* got shape \(2, 5\)"):
        metric.update(torch.randn(2, 5))


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.tensor([[0.0, 1.0], [math.nan, 1.0]]), "`features` must be finite, got NaN or Inf"),
        (torch.ones(3), r"`features` must be 2-D with shape \(N, D\), got 1-D"),
        (torch.ones(2, 2, 2), r"got 3-D shape \(2, 2, 2\)"),
    ],
)
def test_bad_updates_are_named_in_the_error(features: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VendiScore().update(features)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": -0.5}, r'`q` must be a number >= 0 or "inf", got -0.5'),
        ({"q": []}, "non-empty sequence of orders"),
        ({"q": b"inf"}, r"or a list or tuple of orders, got b'inf' of type bytes"),
        ({"q": None}, "or a list or tuple of orders, got None"),
        ({"kernel": "gaussian", "sigma": 0.0}, r"`sigma` must be a finite number > 0, got 0.0"),
        ({"kernel": "gaussian"}, "needs a bandwidth `sigma`"),
        ({"tolerance": -1.0}, r"`tolerance` must be None or a number in \[0, 1\), got -1.0"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VendiScore(**kwargs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_reset_forgets_the_rows_and_their_dimension(kernel: str) -> None:
    metric = feed(VendiScore(**KERNELS[kernel]), torch.randn(10, 4), [10])
    metric.reset()
    assert int(metric.num_samples) == 0
    features = torch.randn(12, 6)
    metric.update(features)
    expected = vendi_score(features, **KERNELS[kernel])
    assert metric.compute().item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric VendiScore was called before")
@pytest.mark.parametrize("kernel", KERNELS)
def test_merge_state_adds_samples_also_into_a_fresh_metric(kernel: str) -> None:
    # torchmetrics warns that the fresh metric had no update() call: expected here.
    features = torch.randn(20, 5)
    expected = vendi_score(features, q=ORDERS, **KERNELS[kernel])
    first = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features[:8], [8])
    second = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features[8:], [5, 7])
    first.merge_state(second)
    assert_scores_close(first.compute(), expected)
    fresh = VendiScore(q=ORDERS, **KERNELS[kernel])
    fresh.merge_state(first)
    assert_scores_close(fresh.compute(), expected)
    first.merge_state(VendiScore(q=ORDERS, **KERNELS[kernel]))  # an empty metric adds nothing
    assert_scores_close(first.compute(), expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_merge_state_refuses_other_feature_dimensions(kernel: str) -> None:
    # Random features map both inputs to the same 2m: the input dimension is compared too.
    first = feed(VendiScore(**KERNELS[kernel]), torch.randn(4, 3), [4])
    second = feed(VendiScore(**KERNELS[kernel]), torch.randn(4, 5), [4])
    with pytest.raises(ValueError, match=r"cannot merge states of feature dimensions \(5, "):
        first.merge_state(second)


@pytest.mark.parametrize(
    ("mine", "theirs", "message"),
    [
        ("gaussian", "cosine", "with kernel='cosine' into one with kernel='gaussian', sigma=3.0"),
        ("cosine", "gaussian", "with kernel='gaussian', sigma=3.0 into one with kernel='cosine'"),
        ("cosine", "linear", "with kernel='linear' into one with kernel='cosine'"),
        ("random_features", "other_seed", "with .*, seed=1 into one with .*, seed=0"),
    ],
)
def test_merge_state_refuses_a_metric_with_other_kernel_settings(
    mine: str, theirs: str, message: str
) -> None:
    # exact.merge_state(cosine) used to raise KeyError: 'rows'; cosine and linear merged silently
    kernels = {**KERNELS, "other_seed": {**KERNELS["random_features"], "seed": 1}}
    first = feed(VendiScore(**kernels[mine]), torch.randn(4, 3), [4])
    second = feed(VendiScore(**kernels[theirs]), torch.randn(4, 3), [4])
    with pytest.raises(ValueError, match=f"cannot merge the states of a metric {message}"):
        first.merge_state(second)
    with pytest.raises(ValueError, match=r"cannot merge states without \['rows'\]"):
        feed(VendiScore(**KERNELS["gaussian"]), torch.randn(4, 3), [4]).merge_state(
            feed(VendiScore(), torch.randn(4, 3), [4]).metric_state
        )


@pytest.mark.parametrize("kernel", KERNELS)
def test_forward_returns_the_batch_score_and_accumulates(kernel: str) -> None:
    features = torch.randn(16, 4)
    metric = VendiScore(**KERNELS[kernel])
    first, second = metric(features[:6]), metric(features[6:])
    assert first.item() == pytest.approx(vendi_score(features[:6], **KERNELS[kernel]).item())
    assert second.item() == pytest.approx(vendi_score(features[6:], **KERNELS[kernel]).item())
    expected = vendi_score(features, **KERNELS[kernel])
    assert metric.compute().item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
def test_forward_on_an_empty_batch_raises_and_keeps_the_samples_seen(kernel: str) -> None:
    # torchmetrics' forward sets the states aside to score the batch: a raise there lost them
    features = torch.randn(12, 4)
    metric = VendiScore(q=ORDERS, **KERNELS[kernel])
    with pytest.raises(ValueError, match=r"forward\(\) needs at least one sample .* \(0, 4\)"):
        metric(torch.randn(0, 4))
    metric(features[:5])
    with pytest.raises(ValueError, match="the states are unchanged"):
        metric(torch.randn(0, 4))
    metric.update(features[5:])
    assert int(metric.num_samples) == 12
    assert_scores_close(metric.compute(), vendi_score(features, q=ORDERS, **KERNELS[kernel]))


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric VendiScore was called before")
@pytest.mark.parametrize("kernel", KERNELS)
def test_state_dict_round_trip_into_a_fresh_metric(kernel: str) -> None:
    # torchmetrics warns that the loaded metric had no update() call: expected here.
    features = torch.randn(24, 5)
    metric = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features[:15], [6, 9])
    assert metric.state_dict() == {}  # torchmetrics' default: states are not persistent
    metric.persistent(True)
    state = metric.state_dict()
    assert "num_samples" in state

    restored = VendiScore(q=ORDERS, **KERNELS[kernel])
    restored.load_state_dict(state)
    assert int(restored.num_samples) == 15
    assert_scores_close(restored.compute(), metric.compute(), rel=1e-12)
    with pytest.raises(ValueError, match="5"):  # the dimension of the loaded states
        restored.update(torch.randn(3, 7))
    restored.update(features[15:])
    assert_scores_close(restored.compute(), vendi_score(features, q=ORDERS, **KERNELS[kernel]))


def test_metric_collection_computes_each_metric_on_the_same_batches() -> None:
    features = torch.randn(30, 6) + 1
    collection = MetricCollection(
        {
            "cosine": VendiScore(q=[1, 2]),
            "cosine_again": VendiScore(q="inf"),
            "linear": VendiScore(kernel="linear"),
            "gaussian": VendiScore(kernel="gaussian:sigma=2.0"),
        }
    )
    for batch in features.split([10, 20]):
        collection.update(batch)
    results = collection.compute()  # torchmetrics flattens dict results, prefixing duplicates only
    assert results["q1"].item() == pytest.approx(vendi_score(features).item(), rel=1e-9)
    assert results["q2"].item() == pytest.approx(vendi_score(features, q=2).item(), rel=1e-9)
    assert results["cosine_again"].item() == pytest.approx(
        vendi_score(features, q="inf").item(), rel=1e-9
    )
    linear = vendi_score(features, kernel="linear").item()
    assert results["linear"].item() == pytest.approx(linear, rel=1e-9)
    gaussian = vendi_score(features, kernel="gaussian:sigma=2.0").item()
    assert results["gaussian"].item() == pytest.approx(gaussian, rel=1e-9)


def test_plot_draws_single_values_dicts_and_sequences() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for q in (1, [1, 2, "inf"]):
        metric = feed(VendiScore(q=q), torch.randn(10, 4), [10])
        figure, axis = metric.plot()
        assert figure is axis.figure
        values = [metric.compute(), metric.compute()]
        _, axis = metric.plot(values)
        assert len(axis.lines) >= 1
        plt.close("all")


def test_sparse_features_are_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"`features` must be a dense tensor, got layout"):
        VendiScore().update(torch.eye(3).to_sparse())


VALUES = {
    "cosine": Kernel(),
    "linear": "linear",
    "gaussian": Kernel("gaussian", sigma=3.0),
    "random_features": "gaussian:sigma=3.0,features=16",
}


@pytest.mark.parametrize("kernel", KERNELS)
def test_flat_kernel_arguments_warn_and_build_the_same_states(kernel: str) -> None:
    features = torch.randn(20, 4)
    flat = {name: value for name, value in KERNELS[kernel].items() if name != "kernel"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = feed(VendiScore(q=ORDERS, kernel=VALUES[kernel]), features, [7, 13])
    if flat:
        with pytest.warns(FutureWarning, match="VendiScore: passing `sigma`"):
            old = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [7, 13])
    else:
        old = feed(VendiScore(q=ORDERS, **KERNELS[kernel]), features, [7, 13])
    assert old._state_settings() == new._state_settings()
    old.merge_state(new)  # same settings: the states add
    expected = feed(VendiScore(q=ORDERS, kernel=VALUES[kernel]), features, [7, 13]).compute()
    for key, value in new.compute().items():
        assert torch.equal(value, expected[key])


@pytest.mark.parametrize("kernel", KERNELS)
def test_compute_runs_the_functional_code(kernel: str, monkeypatch) -> None:
    # docs/architecture.md: the Metric only accumulates states and calls the functional form's
    features = torch.randn(20, 4)
    metric = feed(VendiScore(q=ORDERS, kernel=VALUES[kernel]), features, [7, 13])
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return vendi_functional._vendi_compute(*args, **kwargs)

    monkeypatch.setattr(vendi_module, "_vendi_compute", spy)
    assert_scores_close(metric.compute(), vendi_score(features, q=ORDERS, kernel=VALUES[kernel]))
    assert len(calls) == 1 and calls[0][1] is metric.kernel
