"""quality_weighted_vendi_score: mean quality times the Vendi score (Nguyen & Dieng, ICML 2024)."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.functional import Kernel, quality_weighted_vendi_score, vendi_score


def test_two_orthogonal_samples_of_quality_half_and_one_score_one_and_a_half():
    # VS = 2 (two orthonormal samples), mean quality 0.75: qVS = 1.5 at every order
    scores = quality_weighted_vendi_score(torch.eye(2), torch.tensor([0.5, 1.0]), q=[1, 2, "inf"])
    assert {key: round(float(value), 12) for key, value in scores.items()} == {
        "q1": 1.5,
        "q2": 1.5,
        "qinf": 1.5,
    }


def test_it_is_the_mean_quality_times_the_vendi_score_with_the_kernel_options():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    qualities = torch.rand(20, generator=generator, dtype=torch.float64)
    kernel = Kernel("gaussian", sigma=2.0)
    score = quality_weighted_vendi_score(features, qualities, q=2, kernel=kernel)
    expected = float(qualities.mean()) * float(vendi_score(features, q=2, kernel=kernel))
    assert float(score) == pytest.approx(expected, rel=1e-12)


def test_a_flat_kernel_argument_warns_once_at_the_caller():
    features, qualities = torch.eye(3), torch.ones(3)
    with pytest.warns(FutureWarning, match="beside `kernel` is deprecated") as caught:
        old = quality_weighted_vendi_score(features, qualities, kernel="gaussian", sigma=2.0)
    assert len(caught) == 1 and caught[0].filename == __file__
    new = quality_weighted_vendi_score(features, qualities, kernel=Kernel("gaussian", sigma=2.0))
    assert torch.equal(old, new)


@pytest.mark.parametrize(
    ("qualities", "error", "match"),
    [
        ([0.5, 1.0], TypeError, r"`qualities` must be a torch.Tensor of shape \(2,\)"),
        (
            torch.ones(3),
            ValueError,
            r"shape \(2,\), one score per sample, got torch.float32 of shape \(3,\)",
        ),
        (torch.ones(2, dtype=torch.long), ValueError, "must be a floating tensor"),
        (torch.tensor([1.0, float("nan")]), ValueError, "`qualities` must be finite.*first at 1"),
    ],
)
def test_bad_qualities_are_refused_naming_the_argument(qualities, error, match):
    with pytest.raises(error, match=match):
        quality_weighted_vendi_score(torch.eye(2), qualities)
