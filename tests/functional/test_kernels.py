"""Kernels and feature maps: the formulas, float64 results, seeding and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import cdist

from diversity_callbacks.functional.kernels import (
    RandomFourierFeatures,
    gaussian_kernel,
    normalize_rows,
    random_fourier_features,
    random_fourier_frequencies,
    resolve_kernel,
    second_moment,
)


def test_normalize_rows_gives_unit_float64_rows_and_leaves_the_input_alone() -> None:
    features = torch.randn(6, 5, dtype=torch.float64) * 7
    original = features.clone()
    unit = normalize_rows(features)
    assert unit.dtype == torch.float64
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(unit * features.norm(dim=1, keepdim=True), features)
    assert torch.equal(features, original)


def test_normalize_rows_names_the_zero_row() -> None:
    features = torch.randn(4, 3)
    features[2] = 0
    with pytest.raises(ValueError, match="all-zero row at index 2"):
        normalize_rows(features)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_are_computed_in_float64(dtype: torch.dtype) -> None:
    features = torch.randn(5, 3).to(dtype)
    upcast = features.to(torch.float64)
    assert normalize_rows(features).dtype == torch.float64
    torch.testing.assert_close(normalize_rows(features), normalize_rows(upcast), rtol=0, atol=0)
    kernel = gaussian_kernel(features, sigma=1.5)
    assert kernel.dtype == torch.float64
    torch.testing.assert_close(kernel, gaussian_kernel(upcast, sigma=1.5), rtol=0, atol=0)


def test_gaussian_kernel_matches_the_textbook_formula() -> None:
    x, y, sigma = torch.randn(7, 4), torch.randn(5, 4), 1.3
    expected = torch.exp(
        torch.from_numpy(-cdist(x.double().numpy(), y.double().numpy(), "sqeuclidean"))
        / (2 * sigma**2)
    )
    torch.testing.assert_close(gaussian_kernel(x, y, sigma=sigma), expected, rtol=1e-12, atol=0)
    square = gaussian_kernel(x, sigma=sigma)
    torch.testing.assert_close(square.diagonal(), torch.ones(7, dtype=torch.float64))
    torch.testing.assert_close(square, square.T, rtol=0, atol=0)


@pytest.mark.parametrize("sigma", [0, -1.0, math.nan, math.inf, True, "1"])
def test_gaussian_bandwidth_must_be_positive(sigma: object) -> None:
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number > 0, got"):
        gaussian_kernel(torch.randn(3, 2), sigma=sigma)


def test_random_fourier_frequencies_depend_on_the_seed_only() -> None:
    first = random_fourier_frequencies(6, 10, sigma=2.0, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    torch.randn(100)
    assert torch.equal(first, random_fourier_frequencies(6, 10, sigma=2.0, seed=3))
    assert not torch.equal(first, random_fourier_frequencies(6, 10, sigma=2.0, seed=4))
    assert first.shape == (6, 10) and first.dtype == torch.float64


def test_random_fourier_frequencies_have_standard_deviation_one_over_sigma() -> None:
    frequencies = random_fourier_frequencies(50, 2000, sigma=4.0, seed=0)
    assert frequencies.std().item() == pytest.approx(0.25, rel=0.02)


def test_random_fourier_features_have_unit_rows_and_approximate_the_kernel() -> None:
    x = torch.randn(8, 3)
    phi = random_fourier_features(x, random_fourier_frequencies(3, 20_000, sigma=1.0, seed=0))
    assert phi.shape == (8, 40_000) and phi.dtype == torch.float64
    torch.testing.assert_close(phi.norm(dim=1), torch.ones(8, dtype=torch.float64))
    error = (phi @ phi.T - gaussian_kernel(x, sigma=1.0)).abs().max().item()
    assert error < 0.03  # Monte Carlo error ~ 1 / sqrt(m)


def test_random_fourier_features_check_the_frequency_shape() -> None:
    with pytest.raises(ValueError, match=r"`frequencies` must have shape \(d, m\) with d = 3"):
        random_fourier_features(torch.randn(2, 3), torch.randn(4, 5))


def test_random_fourier_feature_map_reuses_given_frequencies() -> None:
    frequencies = torch.randn(3, 16, dtype=torch.float64)
    feature_map = RandomFourierFeatures(frequencies=frequencies)
    assert feature_map.output_dim == 32
    x = torch.randn(5, 3)
    assert torch.equal(feature_map(x), random_fourier_features(x, frequencies))
    with pytest.raises(
        ValueError, match="`frequencies` has 3 rows but the features have dimension 4"
    ):
        feature_map(torch.randn(5, 4))


def test_seeded_feature_map_matches_the_frequency_draw() -> None:
    feature_map = RandomFourierFeatures(sigma=2.0, num_features=8, seed=5)
    x = torch.randn(4, 3)
    expected = random_fourier_features(x, random_fourier_frequencies(3, 8, sigma=2.0, seed=5))
    assert torch.equal(feature_map(x), expected)
    assert "num_features=8" in repr(feature_map)


def test_resolve_kernel_picks_a_feature_map_or_a_kernel_function() -> None:
    x = torch.randn(4, 3)
    cosine = resolve_kernel()
    assert cosine.kernel_function is None
    torch.testing.assert_close(cosine.feature_map(x), normalize_rows(x))
    linear = resolve_kernel("linear")
    assert torch.equal(linear.feature_map(x), x.double())
    exact = resolve_kernel("gaussian", sigma=2.0)
    assert exact.feature_map is None
    assert torch.equal(exact.kernel_function(x, x), gaussian_kernel(x, sigma=2.0))
    approximate = resolve_kernel("gaussian", sigma=2.0, num_features=8, seed=1)
    assert isinstance(approximate.feature_map, RandomFourierFeatures)
    assert approximate.feature_map.seed == 1 and approximate.kernel_function is None

    def own_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    assert resolve_kernel(own_kernel).kernel_function is own_kernel
    assert resolve_kernel(feature_map=torch.tanh).feature_map is torch.tanh


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel": "rbf"}, r"`kernel` must be one of \('cosine', 'linear', 'gaussian'\)"),
        ({"kernel": "gaussian"}, "needs a bandwidth `sigma` > 0, got None"),
        ({"kernel": "gaussian", "sigma": -2.0}, r"`sigma` must be a finite number > 0, got -2.0"),
        ({"kernel": "cosine", "sigma": 1.0}, "`sigma` only applies to kernel='gaussian'"),
        ({"kernel": "linear", "num_features": 8}, "`num_features` only applies"),
        ({"kernel": "gaussian", "sigma": 1.0, "num_features": 0}, "`num_features` must be an"),
        ({"kernel": "linear", "feature_map": torch.tanh}, "pass either `kernel` or `feature_map`"),
    ],
)
def test_resolve_kernel_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    kernel = kwargs.pop("kernel")
    with pytest.raises(ValueError, match=message):
        resolve_kernel(kernel, **kwargs)


def test_feature_map_must_be_callable() -> None:
    with pytest.raises(TypeError, match="`feature_map` must be callable, got int"):
        resolve_kernel(feature_map=3)


@pytest.mark.parametrize("dim", [3, 2100, 4100])  # one GEMM, 2 blocks, 4 blocks (uneven)
def test_second_moment_equals_the_full_product_and_accumulates(dim: int) -> None:
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(40, dim, generator=generator, dtype=torch.float64)
    full = phi.T @ phi
    torch.testing.assert_close(second_moment(phi), full, rtol=0, atol=1e-12)
    start = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    start = start + start.T
    out = start.clone()
    assert second_moment(phi, out=out, alpha=-0.5) is out
    torch.testing.assert_close(out, start - 0.5 * full, rtol=0, atol=1e-12)
