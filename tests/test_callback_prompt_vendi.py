"""PromptVendi: the per-prompt Vendi score behind the callback's conditional diversity."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks._conditional import PromptVendi
from diversity_callbacks.functional import vendi_score


def test_each_prompt_is_scored_on_its_own_samples_across_updates():
    features = torch.randn(10, 6, dtype=torch.float64)
    ids = torch.tensor([0, 0, 2, 2, 2, 0, 2, 0, 2, 2])
    metric = PromptVendi(num_prompts=4, q=[1, 2, "inf"], kernel_kwargs={"kernel": "cosine"})
    metric.update(features[:3], ids[:3])  # prompt 2's samples arrive in both batches
    metric.update(features[3:], ids[3:])
    scores = metric.compute()
    assert scores.shape == (4, 3) and scores.dtype == torch.float64
    for prompt in (0, 2):
        expected = vendi_score(features[ids == prompt], q=[1, 2, "inf"])
        assert torch.allclose(scores[prompt], torch.stack(list(expected.values())), rtol=1e-12)
    assert scores[1].isnan().all() and scores[3].isnan().all()  # no samples, no score
    assert metric.keys == ["q1", "q2", "qinf"]


def test_the_gaussian_kernel_options_are_passed_through():
    features = torch.randn(8, 3)
    ids = torch.zeros(8, dtype=torch.long)
    options = {"kernel": "gaussian", "sigma": 0.7}
    metric = PromptVendi(num_prompts=1, q=1, kernel_kwargs=options)
    metric.update(features, ids)
    expected = vendi_score(features.double(), q=1, **options)
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-12)  # (1, 1) squeezed


def test_before_any_update_every_prompt_is_nan():
    metric = PromptVendi(num_prompts=2)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert metric.compute().isnan().all()


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (torch.tensor([0, 3]), r"`prompt_ids` must lie in \[0, 2\], got values in \[0, 3\]"),
        (torch.tensor([-1, 0]), r"`prompt_ids` must lie in \[0, 2\], got values in \[-1, 0\]"),
        (torch.tensor([0, 1, 2]), r"`prompt_ids` must have shape \(2,\)"),
    ],
)
def test_prompt_ids_are_checked(ids: torch.Tensor, match: str):
    with pytest.raises(ValueError, match=match):
        PromptVendi(num_prompts=3).update(torch.randn(2, 4), ids)


def test_features_keep_their_dimension_across_updates():
    metric = PromptVendi(num_prompts=1)
    metric.update(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="feature dimension 4"):
        metric.update(torch.randn(2, 5), torch.zeros(2, dtype=torch.long))
