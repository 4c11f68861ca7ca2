"""embedding_clip_score: torchmetrics' CLIPScore formula, on embeddings a caller already has."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.functional import embedding_clip_score


def test_it_is_100_times_the_cosine_clamped_at_zero_per_sample():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(50, 8, generator=generator, dtype=torch.float64) * 3
    texts = torch.randn(50, 8, generator=generator, dtype=torch.float64)
    cosine = torch.nn.functional.cosine_similarity(images, texts, dim=1)
    expected = 100 * torch.maximum(cosine, torch.zeros_like(cosine))
    scores = embedding_clip_score(images, texts)
    assert scores.dtype == torch.float64 and scores.shape == (50,)
    assert torch.allclose(scores, expected, rtol=1e-12, atol=1e-12)
    assert (cosine < 0).any() and (scores == 0).any()  # the clamp was exercised


def test_it_equals_torchmetrics_clip_score_on_the_same_models_embeddings():
    """torchmetrics' own update (`_clip_score_update`) runs a tiny CLIP model; ours takes that
    model's embeddings. Per sample, torchmetrics does not clamp (it clamps the mean): equal
    where the cosine is positive, which is every sample of a real CLIP model."""
    transformers = pytest.importorskip("transformers")
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update

    model, processor = _tiny_clip(transformers)
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    prompts = [f"prompt number {i} {'x' * (i % 5)}" for i in range(24)]
    with torch.no_grad():
        theirs, _ = _clip_score_update(list(images.double()), prompts, model, processor)
        image_embeddings = model.get_image_features(images.double())
        text_embeddings = model.get_text_features(**processor(text=prompts))
    ours = embedding_clip_score(image_embeddings, text_embeddings)
    assert (theirs > 0).all()  # as with real CLIP models (the clamp: the test above)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    # torchmetrics' clip_score and CLIPScore.compute: max(mean, 0) of its per-sample scores
    expected = torch.max(theirs.mean(0), torch.zeros(()))
    assert float(ours.mean()) == pytest.approx(float(expected), rel=1e-6)


def _tiny_clip(transformers):
    """A randomly initialised 2-layer Hugging Face CLIP in float64, with a character processor.

    The adapter returns tensors from ``get_*_features``: transformers 5 returns model outputs,
    which torchmetrics 1.9's ``_clip_score_update`` cannot normalise (AttributeError).
    """
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": 64,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    clip = transformers.CLIPModel(config).double().eval()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip, self.config = clip, clip.config

        def get_image_features(self, pixels):
            return _tensor(self.clip.get_image_features(pixels))

        def get_text_features(self, input_ids, attention_mask):
            return _tensor(self.clip.get_text_features(input_ids, attention_mask))

    def processor(images=None, text=None, **_):
        if images is not None:
            return {"pixel_values": torch.stack(images).double()}
        ids = [[3 + ord(c) % 60 for c in prompt] + [2] for prompt in text]
        width = max(map(len, ids))
        return {
            "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
            "attention_mask": torch.tensor(
                [[1] * len(row) + [0] * (width - len(row)) for row in ids]
            ),
        }

    return Features(), processor


def _tensor(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize(
    ("images", "texts", "match"),
    [
        (torch.ones(3, 4), torch.ones(2, 4), "same number of rows"),
        (torch.ones(3, 4), torch.ones(3, 5), "`text_embeddings` must have feature dimension 4"),
        ([[1.0]], torch.ones(1, 1), "`image_embeddings` must be a torch.Tensor"),
    ],
)
def test_bad_embeddings_are_refused_naming_the_argument(images, texts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        embedding_clip_score(images, texts)
