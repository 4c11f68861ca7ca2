"""DistinctN and SelfBLEU: batches accumulate, and 2 gloo ranks give what one process gives on
all the texts (uneven shares, a rank without texts, texts that are not ASCII)."""

from __future__ import annotations

from typing import Any

import pytest

from diversity_callbacks import DistinctN, SelfBLEU
from diversity_callbacks.functional import distinct_n, self_bleu
from tests.helpers.distributed import run_distributed

TEXTS = [
    "the cat sat on the mat",
    "the cat sat on the hat",
    "ein Hund läuft im Park",
    "",
    "the dog ran , the cat sat",
    "naïve café ☕ the cat",
    "a b c d e",
]
# Texts per update call, per rank: uneven, a rank with an empty batch, a rank without update.
SHARDS = {
    "uneven": ([2, 0, 1], [4]),
    "rank1_empty_batch": ([7], [0]),
    "rank0_no_update": ([], [3, 4]),
}


def _updated(metrics: list[Any], texts: list[str], sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        for metric in metrics:
            metric.update(texts[start : start + size])
        start += size


def test_batches_accumulate_to_the_score_of_all_texts():
    distinct, bleu = DistinctN(), SelfBLEU(max_n=3, tokenizer=list)
    _updated([distinct, bleu], TEXTS, [3, 0, 4])
    values = distinct.compute()
    assert list(values) == ["1", "2", "3", "4"]
    for n in (1, 2, 3, 4):
        assert values[str(n)].item() == distinct_n(TEXTS, n).item()
    assert bleu.compute().item() == self_bleu(TEXTS, 3, tokenizer=list).item()
    assert bleu.texts() == TEXTS


def _on_ranks(rank: int, world_size: int) -> dict[str, Any]:
    results = {}
    for name, shards in SHARDS.items():
        start = sum(shards[0]) if rank else 0
        mine = TEXTS[start : start + sum(shards[rank])]
        distinct, bleu = DistinctN(n=(1, 2, 3)), SelfBLEU()
        _updated([distinct, bleu], mine, shards[rank])
        results[name] = (
            {k: v.item() for k, v in distinct.compute().items()},
            bleu.compute().item(),
            bleu.texts(),  # the local texts again after compute
        )
    return results


@pytest.mark.slow  # two processes
@pytest.mark.timeout(300)
def test_two_ranks_equal_one_process_on_all_texts():
    ranks = run_distributed(_on_ranks)
    for name, shards in SHARDS.items():
        texts = TEXTS[: sum(shards[0]) + sum(shards[1])]
        for rank, result in enumerate(ranks):
            distinct, bleu, local = result[name]
            assert distinct == {str(n): distinct_n(texts, n).item() for n in (1, 2, 3)}, name
            assert bleu == self_bleu(texts).item(), name
            start = sum(shards[0]) if rank else 0
            assert local == texts[start : start + sum(shards[rank])]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"`n` must be an integer >= 1 .* got \(1, 0\)"):
        DistinctN(n=(1, 0))
    with pytest.raises(ValueError, match=r"`max_n` must be an integer >= 1, got 0"):
        SelfBLEU(max_n=0)
    with pytest.raises(TypeError, match=r"`tokenizer` must be a callable .* got str"):
        DistinctN(tokenizer="words")
    with pytest.raises(TypeError, match=r"`texts\[0\]` must be a str, got int"):
        SelfBLEU().update([1])
