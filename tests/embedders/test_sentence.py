"""SentenceEmbedder on a tiny random BERT saved as a sentence-transformers folder, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("sentence_transformers")

from diversity_callbacks import DiversityEvaluator, SentenceEmbedder
from tests.helpers.text import tiny_sentence_transformer


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sentence_transformer(tmp_path_factory.mktemp("st"))


def test_texts_and_prompts_get_one_row_each_from_the_same_model(folder: Path):
    state = torch.random.get_rng_state()
    embedder = SentenceEmbedder(folder, normalize=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # building drew nothing globally
    texts = ["the cat sat", "a dog ran far", "the cat sat"]
    rows = embedder.embed_samples(texts)
    assert rows.shape == (3, 32) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(rows[0], rows[2])
    assert not torch.allclose(rows[0], rows[1])
    torch.testing.assert_close(embedder.embed_texts(texts[:2]), rows[:2], atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in embedder.parameters())
    assert SentenceEmbedder(embedder.model).model_name == "SentenceTransformer"


def test_the_evaluator_scores_text_to_text_with_the_prompt_aware_metrics(folder: Path):
    def sample(prompts, generators):
        words = ["cat", "dog", "bird", "fish", "owl"]
        return [
            f"{p} {words[int(torch.randint(5, (1,), generator=g))]}"
            for p, g in zip(prompts, generators, strict=True)
        ]

    evaluator = DiversityEvaluator(
        ["a red", "the blue"], 4, embedder=SentenceEmbedder(folder), value_range=None
    )
    scalars = evaluator.evaluate(sample, progress=False).scalars
    for key in ("sce", "cond_vendi_q1", "info_vendi_q1", "per_prompt_vendi_q1"):
        assert scalars[f"diversity/{key}"] > 1.0, key


def test_a_model_of_another_kind_is_refused():
    with pytest.raises(TypeError, match=r"`model` must be a sentence-transformers .* got int"):
        SentenceEmbedder(3)
