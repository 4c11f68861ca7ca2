"""Embedders of embeddings computed elsewhere: rows pass through, prompts are looked up."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks import DiversityEvaluator, evaluate_existing
from diversity_callbacks.embedders import PrecomputedEmbedder, PrecomputedTextEmbedder


def test_rows_pass_through_unchanged():
    rows = torch.randn(4, 3, dtype=torch.float64)
    assert PrecomputedEmbedder().embed_samples(rows) is rows
    assert not hasattr(PrecomputedEmbedder(), "embed_texts")


def test_prompts_are_looked_up_in_the_saved_prompt_embeddings():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    embedder = PrecomputedTextEmbedder(["a cat", "a dog", "a cat"], text)
    assert embedder.embed_texts(["a dog", "a cat"]).tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_rows_of_one_prompt_that_disagree_are_refused_naming_the_row():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"saved: row 2 differs .* same prompt 'a cat'"):
        PrecomputedTextEmbedder(["a cat", "a dog", "a cat"], text, where="saved")


def test_precomputed_embeddings_turn_on_the_prompt_aware_scores():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(12, 6, generator=generator, dtype=torch.float64)
    prompts = ["a", "b", "c"]
    text = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    ids = [0, 1, 2] * 4
    embedder = PrecomputedTextEmbedder([prompts[i] for i in ids], text[ids])
    evaluator = DiversityEvaluator(prompts, embedder=embedder, value_range=None)
    result = evaluate_existing(evaluator, [(embeddings, ids)], progress=False)
    assert {"diversity/sce", "diversity/clip_score"} <= set(result.scalars)
