"""distinct-n and self-BLEU against NLTK (the reference) on hand-made cases."""

from __future__ import annotations

import random

import pytest

from diversity_callbacks.functional import distinct_n, self_bleu

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
from nltk.util import ngrams  # noqa: E402

CASES = {
    "varied": ["the cat sat on the mat", "a dog ran in the park", "the cat ran in the park"],
    "repeated": ["the cat sat on the mat"] * 4,
    "short and empty": ["the", "", "the cat", "cat the cat the", "a"],
    "ties in length": ["a b c", "a b d", "b c d e", "a b", "c d"],
    "punctuation": ["hello , world !", "hello world", "world , hello !"],
}


def reference_distinct(texts: list[str], n: int) -> float:
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def reference_self_bleu(texts: list[str], max_n: int = 4) -> float:
    """Texygen's self-BLEU: NLTK sentence BLEU of each text against all the others."""
    smoothing = nltk_bleu.SmoothingFunction().method1
    tokens = [text.split() for text in texts]
    scores = [
        nltk_bleu.sentence_bleu(tokens[:i] + tokens[i + 1 :], hyp, (1 / max_n,) * max_n, smoothing)
        for i, hyp in enumerate(tokens)
    ]
    return sum(scores) / len(scores)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_distinct_n_equals_counting_nltk_ngrams(case: str, n: int):
    texts = CASES[case]
    assert distinct_n(texts, n).item() == pytest.approx(reference_distinct(texts, n), abs=1e-15)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("max_n", [1, 2, 4])
def test_self_bleu_equals_nltk_sentence_bleu_against_the_others(case: str, max_n: int):
    texts = CASES[case]
    expected = reference_self_bleu(texts, max_n)
    assert self_bleu(texts, max_n).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_self_bleu_equals_nltk_on_random_texts_with_repeated_words():
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "e", "f"]
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(30)]
    assert self_bleu(texts).item() == pytest.approx(reference_self_bleu(texts), rel=1e-12)
    assert distinct_n(texts, 2).item() == pytest.approx(reference_distinct(texts, 2))


def test_a_tokenizer_replaces_whitespace_words():
    texts = ["abab", "abba"]
    assert distinct_n(texts, 2, tokenizer=list).item() == pytest.approx(3 / 6)  # ab, ba, bb
    assert distinct_n(texts, 1).item() == 1.0  # two distinct words


def test_extremes_and_bad_input_name_the_argument():
    assert distinct_n(["a b c"], 4).item() == 0.0  # no 4-gram at all
    assert self_bleu(["w x y z", "w x y z"]).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"needs at least 2 texts, got 1"):
        self_bleu(["only one"])
    with pytest.raises(ValueError, match=r"`n` must be an integer >= 1, got 0"):
        distinct_n(["a"], 0)
    with pytest.raises(TypeError, match=r"`texts` must be a sequence of strings .* got str"):
        distinct_n("a b", 1)
    with pytest.raises(TypeError, match=r"`texts\[1\]` must be a str, got int"):
        self_bleu(["a", 3])
