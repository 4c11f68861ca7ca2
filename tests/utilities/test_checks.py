"""The shared input checks: each message names the argument, the expected and the actual."""

from __future__ import annotations

import math

import pytest
import torch

from diversity_callbacks.utilities.checks import (
    as_long_tensor,
    check_dense,
    check_features,
    check_paired,
    check_positive,
    check_positive_int,
    check_scores,
)


def test_good_features_come_back_unchanged():
    features = torch.randn(4, 3)
    assert check_features(features, dim=3) is features
    assert check_features(torch.zeros(0, 3, dtype=torch.float64)).shape == (0, 3)


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        ([[1.0, 2.0]], TypeError, r"`x` must be a torch.Tensor of shape \(N, D\), got list"),
        (torch.ones(3), ValueError, r"`x` must be 2-D with shape \(N, D\), got 1-D shape \(3,\)"),
        (torch.ones(2, 2).to_sparse(), TypeError, "`x` must be a dense tensor, got layout"),
        (torch.ones(2, 2, dtype=torch.long), TypeError, "`x` must have a floating dtype"),
        (torch.ones(2, 4), ValueError, r"feature dimension 3 .* got shape \(2, 4\)"),
        (
            torch.tensor([[1.0, 1.0, 1.0], [1.0, math.nan, 1.0], [math.inf, 1.0, 1.0]]),
            ValueError,
            r"`x` must be finite, got NaN or Inf in 2 row\(s\), first at row 1",
        ),
    ],
)
def test_bad_features_are_named_with_what_was_expected(features, error, match):
    with pytest.raises(error, match=match):
        check_features(features, "x", dim=3)


def test_features_whose_sum_overflows_are_still_finite():
    big = torch.full((2, 2), torch.finfo(torch.float32).max)
    assert check_features(big) is big  # the sum is inf, every entry finite


def test_positive_numbers_and_integers():
    assert check_positive(2, "sigma") == 2.0 and isinstance(check_positive(2, "sigma"), float)
    assert check_positive_int(3, "k") == 3
    for bad in (0, -1.5, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match=f"`sigma` must be a finite number > 0, got {bad!r}"):
            check_positive(bad, "sigma")
    for bad in (0, 1.0, True, None):
        with pytest.raises(ValueError, match=f"`k` must be an integer >= 1, got {bad!r}"):
            check_positive_int(bad, "k")


def test_paired_batches_need_the_same_number_of_rows():
    check_paired(torch.ones(3, 2), torch.ones(3, 5), "images", "texts")
    with pytest.raises(ValueError, match=r"`images` and `texts` .* got 3 and 2"):
        check_paired(torch.ones(3, 2), torch.ones(2, 2), "images", "texts")


def test_dense_tensors_pass_and_sparse_ones_are_named():
    dense = torch.eye(2)
    assert check_dense(dense, "m") is dense
    with pytest.raises(TypeError, match=r"`m` must be a dense tensor.*call .to_dense\(\) first"):
        check_dense(dense.to_sparse(), "m")


def test_integers_become_a_long_tensor_of_one_per_row():
    assert as_long_tensor([0, 2, 1], "ids", 3).tolist() == [0, 2, 1]
    ids = as_long_tensor(torch.tensor([1, 0], dtype=torch.int32), "ids", 2)
    assert ids.dtype == torch.long and ids.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (
            torch.tensor([0.0, 1.0]),
            TypeError,
            "`ids` must hold integers, got a tensor of torch.float32",
        ),
        (torch.tensor([True, False]), TypeError, "got a tensor of torch.bool"),
        ("01", TypeError, "`ids` must be a tensor or a sequence of 2 integers, got str"),
        (3, TypeError, "got int"),
        ([0, 1.0], TypeError, "`ids` must hold integers, got float 1.0 at position 1"),
        ([True, 0], TypeError, "got bool True at position 0"),
        ([0, 2**63], ValueError, "within int64, got 9223372036854775808 at position 1"),
        ([0, 1, 2], ValueError, r"`ids` must be 2 integers, one per sample, got shape \(3,\)"),
    ],
)
def test_bad_integers_are_refused_by_position(values, error, match):
    with pytest.raises(error, match=match):
        as_long_tensor(values, "ids", 2)


def test_scores_are_one_finite_float_per_sample():
    scores = torch.tensor([0.5, 1.0])
    assert check_scores(scores, 2, "qualities") is scores
    with pytest.raises(TypeError, match=r"`qualities` must be a torch.Tensor of shape \(2,\)"):
        check_scores([0.5, 1.0], 2, "qualities")
    with pytest.raises(ValueError, match=r"floating tensor of shape \(2,\).*torch.int64 of shape"):
        check_scores(torch.tensor([1, 2]), 2, "qualities")
    with pytest.raises(ValueError, match=r"got torch.float32 of shape \(3,\)"):
        check_scores(torch.ones(3), 2, "qualities")
    with pytest.raises(ValueError, match=r"NaN or Inf at 1 sample\(s\), first at 1"):
        check_scores(torch.tensor([1.0, math.nan]), 2, "qualities")
