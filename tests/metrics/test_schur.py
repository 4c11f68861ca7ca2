"""SchurComplementEntropy metric: streaming equals the functional API, DDP, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from diversity_callbacks import Kernel, SchurComplementEntropy
from diversity_callbacks.functional import normalize_rows, schur_complement_entropy, vendi_score
from diversity_callbacks.functional import schur as schur_functional
from diversity_callbacks.functional.schur import DegenerateSchurComplementWarning
from diversity_callbacks.metrics import schur as schur_module
from tests.helpers.distributed import run_distributed

GAUSSIAN = {"kernel": "gaussian", "sigma": 4.0, "num_features": 30, "seed": 3}


def pairs(num_prompts: int = 6, per_prompt: int = 10, dim: int = 12):
    """(images, prompts) with images depending on their (repeated) prompt plus noise."""
    generator = torch.Generator().manual_seed(1)
    prompts = 3 * torch.randn(num_prompts, dim, generator=generator)
    images = prompts @ torch.randn(dim, dim, generator=generator) / math.sqrt(dim)
    images = images.repeat_interleave(per_prompt, 0)
    images = images + torch.randn(images.shape, generator=generator)
    return images, prompts.repeat_interleave(per_prompt, 0)


def expected(options):
    images, prompts = pairs()
    return schur_complement_entropy(images, prompts, path="primal", **options)._asdict()


def assert_same(result, reference, rtol):
    assert set(result) == {"sce", "text_part", "image_vendi"}
    for key, value in reference.items():
        assert result[key].dtype == torch.float64
        torch.testing.assert_close(result[key], value, rtol=rtol, atol=0)


@pytest.mark.parametrize("options", [GAUSSIAN, {"kernel": "cosine"}, {"kernel": "linear"}])
def test_batches_give_the_functional_value(options):
    images, prompts = pairs()
    metric = SchurComplementEntropy(**options)
    for rows in (slice(0, 7), slice(7, 7), slice(7, 41), slice(41, 60)):
        metric.update(images[rows], prompts[rows])
    assert_same(metric.compute(), expected(options), rtol=1e-10)


def distributed_schur(rank: int, world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Two metrics: uneven shards with different update counts, and an empty rank."""
    images, prompts = pairs()
    uneven = SchurComplementEntropy(**GAUSSIAN)
    shards = [(0, 9), (9, 11), (11, 37)] if rank == 0 else [(37, 60)]
    for start, stop in shards:
        uneven.update(images[start:stop], prompts[start:stop])
    empty = SchurComplementEntropy(kernel="cosine")
    if rank == 0:
        empty.update(images, prompts)
    return {"uneven": uneven.compute(), "empty": empty.compute()}


def test_ddp_equals_one_process_with_uneven_and_empty_ranks():
    results = run_distributed(distributed_schur)
    for result in results:
        assert_same(result["uneven"], expected(GAUSSIAN), rtol=1e-9)
        assert_same(result["empty"], expected({"kernel": "cosine"}), rtol=1e-9)


def test_mismatched_rows_raise():
    metric = SchurComplementEntropy()
    with pytest.raises(ValueError, match=r"same number of rows.*5 and 4"):
        metric.update(torch.randn(5, 8), torch.randn(4, 8))


def test_feature_dimension_must_not_change():
    metric = SchurComplementEntropy()
    metric.update(torch.randn(5, 8), torch.randn(5, 6))
    with pytest.raises(ValueError, match="`text_features` must have feature dimension 6"):
        metric.update(torch.randn(5, 8), torch.randn(5, 7))


def test_loaded_states_refuse_features_of_another_dimension():
    source = SchurComplementEntropy(**GAUSSIAN)
    source.persistent(True)
    images, prompts = pairs()
    source.update(images, prompts)
    loaded = SchurComplementEntropy(**GAUSSIAN)
    loaded.load_state_dict(source.state_dict())
    assert_same(loaded.compute(), source.compute(), rtol=0)
    # random features map any input size to 2m columns: only the kept input size can refuse it
    with pytest.raises(ValueError, match="`image_features` must have feature dimension 12"):
        loaded.update(torch.randn(5, 9), torch.randn(5, 9))


def test_gaussian_needs_equal_text_and_image_dimensions():
    metric = SchurComplementEntropy(**GAUSSIAN)
    with pytest.raises(ValueError, match="same dimension, got 8 and 6"):
        metric.update(torch.randn(5, 8), torch.randn(5, 6))


def test_compute_without_samples_raises():
    metric = SchurComplementEntropy()
    metric.update(torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="needs at least one sample"):
        metric.compute()


def test_one_prompt_per_sample_warns_and_gives_nan():
    images, prompts = pairs(num_prompts=20, per_prompt=1, dim=32)
    metric = SchurComplementEntropy()
    metric.update(images, prompts)
    with pytest.warns(DegenerateSchurComplementWarning):
        result = metric.compute()
    assert math.isnan(result["sce"]) and math.isnan(result["text_part"])
    torch.testing.assert_close(result["image_vendi"], vendi_score(images))  # was only "> 1"


def test_reset_forgets_samples_and_dimensions():
    metric = SchurComplementEntropy()
    metric.update(torch.randn(5, 8), torch.randn(5, 8))
    metric.reset()
    images, prompts = pairs()
    metric.update(images, prompts[:, :5])
    reference = schur_complement_entropy(images, prompts[:, :5], "cosine", path="primal")
    assert_same(metric.compute(), reference._asdict(), rtol=1e-10)


def test_skipping_image_vendi_keeps_the_scores():
    images, prompts = pairs()
    metric = SchurComplementEntropy(compute_image_vendi=False)
    metric.update(images, prompts)
    result = metric.compute()
    reference = expected({"kernel": "cosine"})
    torch.testing.assert_close(result["sce"], reference["sce"], rtol=1e-10, atol=0)
    assert math.isnan(result["image_vendi"])


def test_noise_in_repeated_prompts_below_their_precision_does_not_move_sce():
    # the functional test's setting, streamed: rows of one prompt re-encoded with 1e-4 noise
    images, prompts = pairs(num_prompts=4, per_prompt=8, dim=64)
    noisy = prompts.clone()
    noise = torch.randn(noisy[:8].shape, generator=torch.Generator().manual_seed(5))
    noisy[:8] *= 1 + 1e-4 * noise
    results = []
    for text in (prompts, noisy):
        metric = SchurComplementEntropy()
        metric.update(images[:20], text[:20])
        metric.update(images[20:], text[20:])
        results.append(metric.compute()["sce"].item())
    assert abs(results[1] / results[0] - 1) < 0.01  # tolerance: 1% of SCE (4.2% before)


def test_the_coarsest_text_precision_seen_is_kept_and_merged():
    images, prompts = pairs()
    fine, coarse = SchurComplementEntropy(), SchurComplementEntropy()
    fine.update(images[:30], prompts[:30].double() + 1e-9)  # float64 values: 2^-52
    assert fine.text_eps.item() == 2.0**-52
    coarse.update(images[30:], prompts[30:].to(torch.bfloat16))
    assert coarse.text_eps.item() == 2.0**-7
    fine.merge_state(coarse)
    assert fine.text_eps.item() == 2.0**-7
    fine.update(images[:5], prompts[:5])  # float32 does not refine what was seen
    assert fine.text_eps.item() == 2.0**-7


def test_bf16_text_gives_the_functional_value():
    images, prompts = pairs()
    metric = SchurComplementEntropy()
    metric.update(images[:25], prompts[:25].to(torch.bfloat16))
    metric.update(images[25:], prompts[25:].to(torch.bfloat16))
    reference = schur_complement_entropy(images, prompts.to(torch.bfloat16), path="primal")
    assert_same(metric.compute(), reference._asdict(), rtol=1e-10)


def distributed_precision(rank: int, world_size: int) -> float:
    images, prompts = pairs()
    metric = SchurComplementEntropy()
    text = prompts.to(torch.bfloat16) if rank == 1 else prompts
    metric.update(images[rank::2], text[rank::2])
    metric.compute()
    with metric.sync_context():
        return metric.text_eps.item()


def test_ddp_ranks_agree_on_the_coarsest_precision():
    assert run_distributed(distributed_precision) == [2.0**-7, 2.0**-7]


def test_feature_map_is_accepted_like_vendi_score():
    images, prompts = pairs()
    metric = SchurComplementEntropy(feature_map=normalize_rows)
    metric.update(images, prompts)
    assert_same(metric.compute(), expected({"kernel": "cosine"}), rtol=1e-12)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"kernel": lambda x, y: x @ y.T}, "needs an explicit feature map"),
        ({"kernel": "rbf"}, r"`kernel` must be one of \('cosine', 'linear', 'gaussian'\)"),
        ({"kernel": "gaussian", "sigma": 1.0, "seed": 1.5}, r"`seed` must be an integer"),
        ({"kernel": "gaussian", "sigma": 1e-300}, "`sigma` must be a bandwidth"),
        ({"rtol": -1e-3}, r"`rtol` must be None"),
    ],
)
def test_bad_arguments_fail_at_construction(options, match):
    with pytest.raises(ValueError, match=match):
        SchurComplementEntropy(**options)


def test_feature_map_dropping_rows_is_named():
    metric = SchurComplementEntropy(feature_map=lambda x: x[1:].double())
    with pytest.raises(ValueError, match=r"`feature_map` must map .* `text_features` to an"):
        metric.update(torch.randn(5, 8), torch.randn(5, 8))


def test_zero_feature_columns_are_rejected():
    metric = SchurComplementEntropy()
    with pytest.raises(ValueError, match="`text_features` must have at least one feature column"):
        metric.update(torch.randn(5, 0), torch.randn(5, 0))


def test_forward_on_an_empty_batch_raises_and_keeps_the_pairs_seen():
    images, prompts = pairs()
    metric = SchurComplementEntropy()
    metric(images[:30], prompts[:30])
    with pytest.raises(ValueError, match=r"forward\(\) needs at least one sample"):
        metric(images[:0], prompts[:0])
    metric.update(images[30:], prompts[30:])
    assert_same(metric.compute(), expected({"kernel": "cosine"}), rtol=1e-10)


@pytest.mark.parametrize(
    ("mine", "theirs", "message"),
    [
        ({}, {"kernel": "linear"}, "with kernel='linear' into one with kernel='cosine'"),
        (
            {"kernel": "gaussian", "sigma": 1.0},
            {"kernel": "gaussian", "sigma": 2.0},
            "with kernel='gaussian', sigma=2.0 into one with kernel='gaussian', sigma=1.0",
        ),
        (
            {"kernel": "gaussian", "frequencies": torch.ones(3, 4)},
            {"kernel": "gaussian", "frequencies": torch.zeros(3, 4)},
            r"with frequencies='\(3, 4\) sha1 .*' into one with frequencies=",
        ),
    ],
)
def test_merge_state_refuses_a_metric_with_other_kernel_settings(mine, theirs, message):
    # a cosine and a linear SCE used to merge silently into nonsense
    images, texts = torch.randn(8, 3), torch.randn(8, 3)
    first, second = SchurComplementEntropy(**mine), SchurComplementEntropy(**theirs)
    first.update(images, texts)
    second.update(images, texts)
    with pytest.raises(ValueError, match=f"cannot merge the states of a metric {message}"):
        first.merge_state(second)
    same = SchurComplementEntropy(**mine)
    same.update(images, texts)
    first.merge_state(same)  # equal settings (equal frequencies by content) merge
    assert int(first.num_samples) == 16


def test_each_distinct_prompt_of_a_batch_is_featurised_once():
    images, prompts = pairs()  # 6 prompts x 10 images
    rows = []

    def counting(x):
        rows.append(x.shape[0])
        return normalize_rows(x)

    metric = SchurComplementEntropy(feature_map=counting)
    metric.update(images[:30], prompts[:30])
    metric.update(images[30:], prompts[30:])
    assert sorted(rows) == [3, 3, 30, 30]  # 3 distinct prompts per batch (was 30 text rows)
    assert_same(metric.compute(), expected({"kernel": "cosine"}), rtol=1e-10)


def test_many_distinct_prompts_fold_into_the_dense_sums():
    # 20 prompts of 12-d cosine features: past D_T / 2 = 6 groups the text side is D x D
    images, prompts = pairs(num_prompts=20, per_prompt=5)
    metric = SchurComplementEntropy()
    for start in range(0, 100, 17):
        metric.update(images[start : start + 17], prompts[start : start + 17])
        assert metric.prompt_groups[0].shape[0] <= 6
    assert bool(metric.text_text.any())
    reference = schur_complement_entropy(images, prompts, path="primal")
    assert_same(metric.compute(), reference._asdict(), rtol=1e-10)


def old_format_states(images, prompts):
    """The states as 0.2 saved them: the three D x D sums, no prompt groups."""
    phi_t, phi_i = normalize_rows(prompts.double()), normalize_rows(images.double())
    return {
        "text_text": phi_t.T @ phi_t,
        "text_image": phi_t.T @ phi_i,
        "image_image": phi_i.T @ phi_i,
        "input_dims": torch.tensor([prompts.shape[1], images.shape[1]]),
        "num_samples": torch.tensor(images.shape[0]),
        "text_eps": torch.tensor(2.0**-10, dtype=torch.float64),
    }


def test_states_saved_before_the_prompt_groups_load_and_keep_their_scores():
    images, prompts = pairs()
    metric = SchurComplementEntropy()
    metric.persistent(True)
    metric.load_state_dict(old_format_states(images[:40], prompts[:40]))
    reference = schur_complement_entropy(images[:40], prompts[:40], path="primal")
    assert_same(metric.compute(), reference._asdict(), rtol=1e-10)
    metric.update(images[40:], prompts[40:])  # new samples join the loaded sums
    assert_same(metric.compute(), expected({"kernel": "cosine"}), rtol=1e-10)


def test_grouping_is_exact_even_when_hashes_collide(monkeypatch):
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [0.0, 5.0], [3.0, 4.0]])
    first, group = schur_functional.group_rows(rows)
    assert torch.equal(rows[first][group], rows) and first.numel() == 3
    # every weight zero: all rows hash alike, and the check falls back to sorting the rows
    monkeypatch.setattr(schur_functional.torch, "randint", lambda *a, **k: torch.zeros(2).long())
    first, group = schur_functional.group_rows(rows)
    assert torch.equal(rows[first][group], rows) and first.numel() == 3


def distributed_fold(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Rank 0 folds its 20 prompts into the sums, rank 1 keeps its 4 as groups."""
    images, prompts = pairs(num_prompts=24, per_prompt=4)
    metric = SchurComplementEntropy()
    rows = slice(0, 80) if rank == 0 else slice(80, 96)
    metric.update(images[rows], prompts[rows])
    return metric.compute()


def test_ddp_mixes_folded_and_grouped_ranks():
    images, prompts = pairs(num_prompts=24, per_prompt=4)
    reference = schur_complement_entropy(images, prompts, path="primal")._asdict()
    for result in run_distributed(distributed_fold):
        assert_same(result, reference, rtol=1e-9)


@pytest.mark.parametrize(
    ("flat", "value"),
    [
        (GAUSSIAN, Kernel("gaussian", sigma=4.0, num_features=30, seed=3)),
        ({"feature_map": normalize_rows}, Kernel(feature_map=normalize_rows)),
    ],
)
def test_flat_kernel_arguments_warn_and_give_identical_scores(flat, value):
    images, prompts = pairs()
    with pytest.warns(FutureWarning, match="SchurComplementEntropy: passing `") as caught:
        old = SchurComplementEntropy(**flat)
    assert len(caught) == 1
    new = SchurComplementEntropy(kernel=value)
    assert old._state_settings() == new._state_settings()
    for metric in (old, new):
        metric.update(images[:25], prompts[:25])
        metric.update(images[25:], prompts[25:])
    assert old.compute() == new.compute()
    functional = schur_complement_entropy(images, prompts, value, path="grouped")._asdict()
    assert_same(new.compute(), functional, rtol=1e-9)  # batched sums round differently


def test_the_gaussian_is_the_published_random_features_whichever_way_it_is_given():
    with pytest.warns(FutureWarning, match="pass kernel=Kernel\\('gaussian', sigma=4.0\\)"):
        old = SchurComplementEntropy(kernel="gaussian", sigma=4.0)
    for metric in (old, SchurComplementEntropy(kernel="gaussian:sigma=4.0")):
        assert metric.kernel.feature_map.num_features == 2500
        assert metric._state_settings() == {"kernel": "gaussian", "sigma": 4.0}  # as in 0.1


def test_compute_runs_the_functional_code(monkeypatch):
    images, prompts = pairs()
    metric = SchurComplementEntropy(kernel="linear")
    metric.update(images, prompts)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return schur_functional._schur_compute(*args, **kwargs)

    monkeypatch.setattr(schur_module, "_schur_compute", spy)
    reference = schur_complement_entropy(images, prompts, "linear")._asdict()
    assert_same(metric.compute(), reference, rtol=1e-9)
    assert len(calls) == 1


def held_pairs():
    """20 pairs (4 prompts x 5), fewer than the 60 Gaussian features of ``GAUSSIAN``: the metric
    holds them all back and scores them by the n x n dual path."""
    return pairs(num_prompts=4, per_prompt=5)


def held_expected(path="primal"):
    images, prompts = held_pairs()
    return schur_complement_entropy(images, prompts, path=path, **GAUSSIAN)._asdict()


def test_pairs_held_back_are_scored_like_the_functional_form_and_stay_held():
    images, prompts = held_pairs()
    metric = SchurComplementEntropy(**GAUSSIAN)
    for rows in (slice(0, 7), slice(7, 7), slice(7, 20)):
        metric.update(images[rows], prompts[rows])
    result = metric.compute()
    assert sum(image.shape[0] for image, _ in metric._held) == 20  # not added by compute
    assert_same(result, held_expected("dual"), rtol=1e-12)
    assert_same(result, held_expected("primal"), rtol=1e-9)
    metric.persistent(True)
    restored = SchurComplementEntropy(**GAUSSIAN)
    restored.load_state_dict(metric.state_dict())  # the state dict adds the held pairs
    assert not metric._held and not restored._held
    assert_same(restored.compute(), result, rtol=1e-9)
    assert_same(metric.compute(), result, rtol=1e-9)


def test_held_pairs_are_copies_of_the_callers_buffers():
    images, prompts = held_pairs()
    metric = SchurComplementEntropy(**GAUSSIAN)
    buffer_images, buffer_prompts = images.clone(), prompts.clone()
    metric.update(buffer_images, buffer_prompts)
    buffer_images.zero_()  # a caller reusing its batch buffers
    buffer_prompts.add_(1.0)
    assert_same(metric.compute(), held_expected(), rtol=1e-9)


def test_held_pairs_join_the_states_of_earlier_pairs():
    """A batch too big to hold goes to the states at once; pairs held after it, and pairs held
    around a forward(), are scored with it, not alone."""
    images, prompts = pairs(num_prompts=6, per_prompt=40)  # 240 pairs
    limit = 60  # max(HELD_ROWS, 60 features) pairs is 2048: lower it to see both ways
    metric = SchurComplementEntropy(**GAUSSIAN)
    original = schur_module.HELD_ROWS
    schur_module.HELD_ROWS = limit
    try:
        metric.update(images[:100], prompts[:100])  # over the limit: straight to the states
        metric.update(images[100:130], prompts[100:130])  # held
        metric(images[130:150], prompts[130:150])  # forward: its pairs are held
        for start in range(150, 240, 45):  # past the limit: flushed, then held again
            metric.update(images[start : start + 45], prompts[start : start + 45])
        assert 0 < sum(image.shape[0] for image, _ in metric._held) < limit
        result = metric.compute()
    finally:
        schur_module.HELD_ROWS = original
    reference = schur_complement_entropy(images, prompts, path="primal", **GAUSSIAN)._asdict()
    assert_same(result, reference, rtol=1e-9)


def distributed_held(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Every rank holds its pairs back (fewer than D_I); rank 1 has three, rank 0 the rest."""
    images, prompts = held_pairs()
    metric = SchurComplementEntropy(**GAUSSIAN)
    rows = slice(0, 17) if rank == 0 else slice(17, 20)
    metric.update(images[rows], prompts[rows])
    return metric.compute()


def test_ddp_adds_the_pairs_every_rank_holds_back():
    for result in run_distributed(distributed_held):
        assert_same(result, held_expected(), rtol=1e-9)
