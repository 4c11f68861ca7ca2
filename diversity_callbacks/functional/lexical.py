"""Lexical diversity of generated texts: distinct-n and self-BLEU, on the strings themselves.

Embeddings see meaning; these see words. Preference tuning narrows both (Kirk et al. 2024), and
lexical scores are what the language-model literature reports, so they sit beside the Vendi
score of sentence embeddings.

- **distinct-n** (Li et al. 2016): the number of distinct n-grams over the number of n-grams of
  the whole set (1 when no n-gram repeats; it falls as completions repeat each other).
- **self-BLEU** (Zhu et al. 2018, Texygen): the mean over texts of the BLEU score of each text
  against all the others as references (1 when every text is repeated; lower is more diverse).
  Each BLEU is NLTK's ``sentence_bleu`` with uniform weights up to ``max_n`` and Chen & Cherry's
  smoothing method 1, as Texygen computes it: clipped n-gram counts (a hypothesis n-gram counts
  at most as often as it occurs in one reference), the closest reference length (the shorter one
  on a tie) in the brevity penalty, and 0 when no unigram matches. The clipping count of a text's
  n-gram is the largest count among the *other* texts, so keeping each n-gram's two largest
  counts makes the whole set one pass instead of a comparison of every pair.

Tokens are whitespace-separated words unless a ``tokenizer`` (a callable from a string to a
sequence of tokens, e.g. a Hugging Face tokenizer's ``tokenize``) is given.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence

import torch
from torch import Tensor

Tokenizer = Callable[[str], Sequence[Hashable]]
"""``tokenizer(text) -> tokens``; the default splits on whitespace."""


def tokenize_texts(
    texts: Sequence[str], tokenizer: Tokenizer | None = None
) -> list[list[Hashable]]:
    """Each text's tokens: ``tokenizer(text)``, or its whitespace-separated words.

    Raises:
        TypeError: when ``texts`` is not a sequence of strings, naming the first other item.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(
            f"`texts` must be a sequence of strings (wrap one text in a list), got "
            f"{type(texts).__name__}"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`texts[{index}]` must be a str, got {type(text).__name__}")
    split = str.split if tokenizer is None else tokenizer
    return [list(split(text)) for text in texts]


def ngrams(tokens: Sequence[Hashable], n: int) -> Iterable[tuple[Hashable, ...]]:
    """The ``n``-grams of ``tokens``, in order (none when there are fewer than ``n`` tokens)."""
    return zip(*(tokens[i:] for i in range(n)), strict=False)


def distinct_n(texts: Sequence[str], n: int, tokenizer: Tokenizer | None = None) -> Tensor:
    """Distinct-n: distinct ``n``-grams over all ``n``-grams of the texts (Li et al. 2016).

    Args:
        texts: the generated texts.
        n: the n-gram order (1: words, 2: word pairs, ...).
        tokenizer: ``tokenizer(text) -> tokens``; default: whitespace-separated words.

    Returns:
        A float64 scalar in ``[0, 1]``; 0 when the texts hold no ``n``-gram at all.

    Examples:
        >>> round(distinct_n(["the cat sat", "the cat ran"], n=1).item(), 4)  # 4 of 6 words
        0.6667
        >>> distinct_n(["the cat sat", "the cat ran"], n=2).item()  # the cat, cat sat, cat ran
        0.75
    """
    return distinct_n_of_tokens(tokenize_texts(texts, tokenizer), n)


def distinct_n_of_tokens(tokenized: Sequence[Sequence[Hashable]], n: int) -> Tensor:
    """:func:`distinct_n` of texts already split into tokens."""
    n = _check_order(n, "n")
    seen: set[tuple[Hashable, ...]] = set()
    total = 0
    for tokens in tokenized:
        grams = list(ngrams(tokens, n))
        seen.update(grams)
        total += len(grams)
    return torch.tensor(len(seen) / total if total else 0.0, dtype=torch.float64)


def self_bleu(
    texts: Sequence[str],
    max_n: int = 4,
    tokenizer: Tokenizer | None = None,
    epsilon: float = 0.1,
) -> Tensor:
    """Self-BLEU: the mean BLEU of each text against all the other texts (Zhu et al. 2018).

    Args:
        texts: at least two generated texts.
        max_n: the highest n-gram order, weighted uniformly (4: BLEU-4).
        tokenizer: ``tokenizer(text) -> tokens``; default: whitespace-separated words.
        epsilon: the numerator given to an order without any match (smoothing method 1).

    Returns:
        A float64 scalar in ``[0, 1]``: 1 when every text is repeated, lower is more diverse.

    Raises:
        ValueError: for fewer than two texts (a text has no others to be compared with).

    Examples:
        >>> self_bleu(["the cat sat on the mat"] * 3).item()
        1.0
        >>> self_bleu(["the cat sat", "a dog ran"]).item()  # no word in common
        0.0
    """
    return self_bleu_of_tokens(tokenize_texts(texts, tokenizer), max_n, epsilon)


def self_bleu_of_tokens(
    tokenized: Sequence[Sequence[Hashable]], max_n: int = 4, epsilon: float = 0.1
) -> Tensor:
    """:func:`self_bleu` of texts already split into tokens."""
    max_n = _check_order(max_n, "max_n")
    if len(tokenized) < 2:
        raise ValueError(
            f"self-BLEU compares each text with the others: it needs at least 2 texts, got "
            f"{len(tokenized)}"
        )
    matches = [_clipped_matches(tokenized, n) for n in range(1, max_n + 1)]
    lengths = [len(tokens) for tokens in tokenized]
    closest = _closest_other_lengths(lengths)
    total = math.fsum(
        _bleu([m[i] for m in matches], lengths[i], closest[i], max_n, epsilon)
        for i in range(len(tokenized))
    )
    return torch.tensor(total / len(tokenized), dtype=torch.float64)


def _bleu(
    matches: list[tuple[int, int]], length: int, reference: int, max_n: int, epsilon: float
) -> float:
    """One text's BLEU from its (clipped matches, n-grams) per order and the reference length."""
    if matches[0][0] == 0:
        return 0.0  # no unigram in common (or no token at all)
    log_precision = math.fsum(
        math.log((hits if hits else epsilon) / max(1, count)) / max_n for hits, count in matches
    )
    penalty = 1.0 if length > reference else math.exp(1 - reference / length)
    return penalty * math.exp(log_precision)


def _clipped_matches(tokenized: Sequence[Sequence[Hashable]], n: int) -> list[tuple[int, int]]:
    """Per text: its ``n``-grams clipped by the largest count in any other text, and its count."""
    counts = [Counter(ngrams(tokens, n)) for tokens in tokenized]
    best: dict[tuple[Hashable, ...], tuple[int, int, int]] = {}  # (largest, its text, second)
    for text, counter in enumerate(counts):
        for gram, count in counter.items():
            first, holder, second = best.get(gram, (0, -1, 0))
            if count > first:
                best[gram] = (count, text, first)
            elif count > second:
                best[gram] = (first, holder, count)
    matched = []
    for text, counter in enumerate(counts):
        hits = 0
        for gram, count in counter.items():
            first, holder, second = best[gram]
            hits += min(count, second if holder == text else first)
        matched.append((hits, sum(counter.values())))
    return matched


def _closest_other_lengths(lengths: list[int]) -> list[int]:
    """Per text, the length of the other text closest to its own (the shorter on a tie)."""
    tally = Counter(lengths)
    distinct = sorted(tally)
    closest = []
    for length in lengths:
        if tally[length] > 1:
            closest.append(length)
            continue
        at = bisect.bisect_left(distinct, length)
        candidates = [distinct[j] for j in (at - 1, at + 1) if 0 <= j < len(distinct)]
        closest.append(min(candidates, key=lambda other: (abs(other - length), other)))
    return closest


def _check_order(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {n!r}")
    return n
