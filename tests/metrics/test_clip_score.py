"""EmbeddingCLIPScore: the mean and per-prompt CLIPScore, float64 sums, exact under DDP."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diversity_callbacks.functional import embedding_clip_score
from diversity_callbacks.metrics import EmbeddingCLIPScore
from tests.helpers.distributed import run_distributed

# Rows per update call on each rank: uneven, an empty batch, a rank that never updates.
SHARDS = {"uneven": ([7, 0, 13], [9]), "rank1_no_update": ([5, 5], [])}


def pairs(total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(total, 6, generator=generator)
    texts = torch.randn(total, 6, generator=generator)
    return images, texts, torch.randint(0, 4, (total,), generator=generator)


def test_the_mean_and_the_per_prompt_means_are_those_of_the_per_sample_scores():
    images, texts, ids = pairs(30)
    metric = EmbeddingCLIPScore(num_conditions=5)
    metric.update(images[:11], texts[:11], ids[:11])
    metric.update(images[11:], texts[11:], ids[11:])
    scores = embedding_clip_score(images, texts)
    assert float(metric.compute()) == pytest.approx(float(scores.mean()), rel=1e-12)
    table = metric.per_condition
    assert table.dtype == torch.float64 and table.shape == (5,)
    for condition in range(4):
        expected = float(scores[ids == condition].mean())
        assert float(table[condition]) == pytest.approx(expected, rel=1e-12)
    assert table[4].isnan()  # no samples, no score


def test_one_condition_needs_no_condition_ids_and_several_do():
    images, texts, _ = pairs(4)
    metric = EmbeddingCLIPScore()
    metric.update(images, texts)
    assert float(metric.compute()) == pytest.approx(
        float(embedding_clip_score(images, texts).mean())
    )
    with pytest.raises(ValueError, match="`condition_ids` must give each sample's condition"):
        EmbeddingCLIPScore(num_conditions=2).update(images, texts)


def test_compute_before_any_update_says_what_is_missing():
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(ValueError, match="needs at least one sample"),
    ):
        EmbeddingCLIPScore().compute()


def _on_ranks(rank: int, world_size: int) -> dict[str, Any]:
    results = {}
    for name, shards in SHARDS.items():
        images, texts, ids = pairs(sum(shards[0]) + sum(shards[1]))
        start = 0 if rank == 0 else sum(shards[0])
        metric = EmbeddingCLIPScore(num_conditions=4)
        for rows in shards[rank]:
            metric.update(
                images[start : start + rows], texts[start : start + rows], ids[start : start + rows]
            )
            start += rows
        results[name] = (float(metric.compute()), metric.per_condition.tolist())
    return results


@pytest.mark.timeout(180)
def test_two_uneven_ranks_equal_one_process_on_all_rows():
    ranks = run_distributed(_on_ranks)
    for name, shards in SHARDS.items():
        images, texts, ids = pairs(sum(shards[0]) + sum(shards[1]))
        single = EmbeddingCLIPScore(num_conditions=4)
        single.update(images, texts, ids)
        expected = float(single.compute())
        for result in ranks:
            mean, table = result[name]
            assert mean == pytest.approx(expected, rel=1e-12)
            assert table == pytest.approx(single.per_condition.tolist(), rel=1e-12, nan_ok=True)
