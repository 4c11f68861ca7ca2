"""Orders, the eigenvalue tolerance and the entropies of a spectrum."""

from __future__ import annotations

import math
import re

import pytest
import torch

from diversity_callbacks.functional import vendi_score
from diversity_callbacks.functional.spectrum import (
    check_tolerance,
    default_tolerance,
    normalized_spectrum,
    order_key,
    parse_order,
    parse_orders,
    schur_block_score,
    symmetric_eigenvalues,
    vendi_from_spectrum,
)


@pytest.mark.parametrize(
    ("order", "parsed"),
    [
        (0, 0.0),
        (0.5, 0.5),
        (1, 1.0),
        (2, 2.0),
        ("inf", math.inf),
        (" INF ", math.inf),
        (math.inf, math.inf),
        ("infinity", math.inf),
    ],
)
def test_parse_order_accepts_numbers_and_infinity(order: object, parsed: float) -> None:
    assert parse_order(order) == parsed


@pytest.mark.parametrize("order", [-0.5, math.nan, "two", True, None])
def test_parse_order_rejects_with_the_value(order: object) -> None:
    with pytest.raises(ValueError, match=r'`q` must be a number >= 0 or "inf", got'):
        parse_order(order)


def test_parse_orders_tells_a_single_order_from_a_sequence() -> None:
    assert parse_orders(2) == ([2.0], False)
    assert parse_orders("inf") == ([math.inf], False)
    assert parse_orders([0.5, 1, 2, "inf"]) == ([0.5, 1.0, 2.0, math.inf], True)
    with pytest.raises(ValueError, match="non-empty sequence of orders, got an empty one"):
        parse_orders([])
    with pytest.raises(ValueError, match=r"`q` must not repeat an order, got \[1, 1.0\]"):
        parse_orders([1, 1.0])


def test_order_keys_name_results() -> None:
    assert [order_key(q) for q in (0.0, 0.5, 1.0, 2.0, math.inf)] == [
        "q0",
        "q0.5",
        "q1",
        "q2",
        "qinf",
    ]


def test_distinct_orders_get_distinct_keys_even_when_they_print_alike() -> None:
    orders, _ = parse_orders([2, 2.0000001, 1e-7, 1.00000000001e-7])
    keys = [order_key(q) for q in orders]
    assert keys == ["q2", "q2.0000001", "q1e-07", "q1.00000000001e-07"]
    assert order_key(parse_order(-0.0)) == "q0"
    scores = vendi_score(torch.eye(3), q=[2, 2.0000001])
    assert list(scores) == ["q2", "q2.0000001"]


@pytest.mark.parametrize(
    ("q", "shown"),
    [
        (b"inf", "b'inf' of type bytes"),
        (bytearray(b"2"), "of type bytearray"),
        (None, "None of type NoneType"),
        ({1, 2}, "of type set"),
        ({"q": 1}, "of type dict"),
        (torch.tensor([1.0, 2.0]), "of type Tensor"),
    ],
)
def test_parse_orders_rejects_bytes_and_other_non_orders(q: object, shown: str) -> None:
    # bytes are a sequence of ints: b"inf" used to be read as the orders 105, 110, 102
    with pytest.raises(ValueError, match=r"`q` must be an order .* or a list or tuple of orders"):
        parse_orders(q)
    with pytest.raises(ValueError, match=re.escape(shown)):
        vendi_score(torch.eye(3), q=q)


def test_spectrum_of_a_low_rank_matrix_keeps_its_rank_only() -> None:
    factor = torch.randn(40, 7, dtype=torch.float64)
    spectrum = normalized_spectrum(factor @ factor.T)
    assert spectrum.numel() == 7
    assert spectrum.dtype == torch.float64
    assert spectrum.sum().item() == pytest.approx(1.0, abs=1e-14)
    assert bool((spectrum[:-1] >= spectrum[1:]).all())
    reference = torch.linalg.eigvalsh(factor.T @ factor).flip(0)
    torch.testing.assert_close(spectrum, reference / reference.sum(), rtol=1e-10, atol=0)


def test_tolerance_is_relative_to_the_largest_eigenvalue() -> None:
    matrix = torch.diag(torch.tensor([1.0, 1e-3, 1e-9], dtype=torch.float64)) * 1e6
    assert normalized_spectrum(matrix).numel() == 3  # 1e-9 relative is well above 3 * eps
    assert normalized_spectrum(matrix, tolerance=1e-6).numel() == 2
    assert normalized_spectrum(matrix, tolerance=0.01).numel() == 1
    assert default_tolerance(3) == 3 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize("tolerance", [-1e-3, 1.0, math.nan, True, "small"])
def test_tolerance_must_lie_in_zero_one(tolerance: object) -> None:
    with pytest.raises(ValueError, match=r"`tolerance` must be None or a number in \[0, 1\), got"):
        check_tolerance(tolerance)
    with pytest.raises(ValueError, match="`tolerance`"):
        normalized_spectrum(torch.eye(2), tolerance=tolerance)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (torch.ones(2, 3), r"expected a square matrix, got shape \(2, 3\)"),
        (torch.zeros(0, 0), "no samples were given"),
        (torch.zeros(3, 3), "the kernel matrix is zero"),
    ],
)
def test_spectrum_rejects_matrices_without_one(matrix: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalized_spectrum(matrix)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 2.0, 7.5, math.inf])
def test_uniform_spectrum_scores_its_length_for_every_order(q: float) -> None:
    spectrum = torch.full((5,), 0.2, dtype=torch.float64)
    assert vendi_from_spectrum(spectrum, q).item() == pytest.approx(5.0, rel=1e-12)


def test_scores_follow_the_definitions_and_decrease_with_the_order() -> None:
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    shannon = math.exp(-sum(x * math.log(x) for x in p.tolist()))
    assert vendi_from_spectrum(p, 1.0).item() == pytest.approx(shannon, rel=1e-14)
    assert vendi_from_spectrum(p, 2.0).item() == pytest.approx(1 / (p**2).sum().item(), rel=1e-14)
    assert vendi_from_spectrum(p, 0.5).item() == pytest.approx(
        p.sqrt().sum().item() ** 2, rel=1e-14
    )
    assert vendi_from_spectrum(p, math.inf).item() == pytest.approx(2.0, rel=1e-14)
    assert vendi_from_spectrum(p, 0.0).item() == 4.0
    scores = [vendi_from_spectrum(p, q).item() for q in (0, 0.5, 1, 2, 10, math.inf)]
    assert scores == sorted(scores, reverse=True)


def test_orders_near_one_approach_the_shannon_score() -> None:
    p = torch.softmax(torch.randn(30, dtype=torch.float64), 0)
    shannon = vendi_from_spectrum(p, 1.0).item()
    for q in (1 - 1e-7, 1 + 1e-7):
        assert vendi_from_spectrum(p, q).item() == pytest.approx(shannon, rel=1e-6)


def test_large_orders_stay_finite_and_approach_the_infinite_order() -> None:
    p = torch.softmax(torch.randn(2000, dtype=torch.float64), 0)  # p^1000 underflows
    limit = vendi_from_spectrum(p, math.inf).item()
    large = vendi_from_spectrum(p, 1000.0).item()
    assert math.isfinite(large)
    assert limit <= large <= limit * 1.01


def test_schur_block_score_uses_unnormalised_weights() -> None:
    # l = 1/(2k) each: S = 1/2 and exp(-sum l log(l / S)) = exp(log(k) / 2) = sqrt(k).
    k = 9
    block = torch.eye(k, dtype=torch.float64) / (2 * k)
    assert schur_block_score(block).item() == pytest.approx(3.0, rel=1e-12)
    assert schur_block_score(block * 2).item() == pytest.approx(9.0, rel=1e-12)


def test_symmetric_eigenvalues_read_the_lower_triangle_like_eigvalsh() -> None:
    generator = torch.Generator().manual_seed(0)
    lower = torch.randn(6, 6, generator=generator, dtype=torch.float64).tril()
    matrix = lower + 100.0 * torch.ones(6, 6, dtype=torch.float64).triu(1)  # upper: ignored
    expected = torch.linalg.eigvalsh(lower + lower.tril(-1).T)
    torch.testing.assert_close(symmetric_eigenvalues(matrix), expected, rtol=0, atol=1e-12)


def test_a_symmetric_by_construction_matrix_is_read_from_its_lower_triangle() -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    gram = x @ x.T
    garbage = gram.tril() + torch.rand(6, 6, dtype=torch.float64).triu(1) * 50
    torch.testing.assert_close(
        normalized_spectrum(garbage, assume_symmetric=True), normalized_spectrum(gram)
    )


def test_an_asymmetric_matrix_is_averaged_with_its_transpose_by_default() -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    skew = torch.randn(6, 6, dtype=torch.float64).triu(1) * 0.01
    gram = x @ x.T
    torch.testing.assert_close(normalized_spectrum(gram + skew - skew.T), normalized_spectrum(gram))
