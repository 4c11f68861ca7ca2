"""The embedder protocol and FunctionEmbedder."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.embedders import FunctionEmbedder, ImageEmbedder, TextEmbedder


def _pool(images: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=(2, 3))


def _one_row(prompts: list[str]) -> torch.Tensor:
    return torch.ones(1, 3)  # wrong: one row for any number of prompts


def test_function_embedder_satisfies_the_protocols() -> None:
    embedder = FunctionEmbedder(_pool, lambda prompts: torch.ones(len(prompts), 3))
    assert isinstance(embedder, ImageEmbedder) and isinstance(embedder, TextEmbedder)
    images = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(embedder.embed_images(images), _pool(images))
    assert embedder.embed_texts(("a", "b")).shape == (2, 3)


def test_embed_texts_without_text_fn_says_how_to_add_one() -> None:
    with pytest.raises(
        TypeError, match=r"no text_fn.*FunctionEmbedder\(image_fn, text_fn=\.\.\.\)"
    ):
        FunctionEmbedder(_pool).embed_texts(["a cat"])


@pytest.mark.parametrize(
    ("image_fn", "error", "match"),
    [
        (lambda x: x.mean(dim=(2, 3)).numpy(), TypeError, "image_fn must return a torch.Tensor"),
        (lambda x: x.mean(dim=(1, 2, 3)), ValueError, r"shape \(4, D\), got shape \(4,\)"),
        (lambda x: x.mean(dim=(2, 3))[:3], ValueError, r"shape \(4, D\), got shape \(3, 3\)"),
        (lambda x: x.mean(dim=(2, 3)).long(), TypeError, "floating embeddings, got torch.int64"),
        (lambda x: x.mean(dim=(2, 3)) / 0, ValueError, "returned 12 non-finite values"),
    ],
)
def test_function_embedder_checks_the_output(image_fn, error, match) -> None:
    with pytest.raises(error, match=match):
        FunctionEmbedder(image_fn).embed_images(torch.rand(4, 3, 8, 8))


def test_function_embedder_checks_text_output_rows() -> None:
    with pytest.raises(ValueError, match=r"text_fn must return .* shape \(2, D\)"):
        FunctionEmbedder(_pool, _one_row).embed_texts(["a", "b"])


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        ("a cat", "sequence of strings .* got str"),
        (["a", 3], r"prompts\[1\] must be a str, got int"),
    ],
)
def test_prompts_must_be_a_sequence_of_strings(prompts, match) -> None:
    with pytest.raises(TypeError, match=match):
        FunctionEmbedder(_pool, _one_row).embed_texts(prompts)


def test_function_embedder_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="image_fn must be callable"):
        FunctionEmbedder(torch.zeros(3))
    with pytest.raises(TypeError, match="text_fn must be callable or None"):
        FunctionEmbedder(_pool, "clip")


@pytest.mark.parametrize("value_range", ["[0,1]", None])
def test_a_model_name_given_as_the_embedder_gets_both_fixes(value_range) -> None:
    from diversity_callbacks import DiversityEvaluator

    # the hint used to name only embed_images, whatever the samples and the intent
    with pytest.raises(
        TypeError,
        match=r"got the string 'ViT-B-32' \(a model name is not an embedder: for CLIP, pass "
        r"CLIPEmbedder\('ViT-B-32'\)\)",
    ) as raised:
        DiversityEvaluator(["a cat"], 2, embedder="ViT-B-32", value_range=value_range)
    if value_range is not None:  # images expected: the way to score samples of another kind too
        assert "for samples that are not images, pass value_range=None" in str(raised.value)
