"""Kernels and feature maps: the formulas, float64 results, seeding and argument checks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy.spatial.distance import cdist

from diversity_callbacks.functional import kernels
from diversity_callbacks.functional.kernels import (
    FRESH,
    Kernel,
    RandomFourierFeatures,
    ScratchBuffers,
    gaussian_kernel,
    gaussian_kernel_triangle,
    normalize_rows,
    random_fourier_features,
    random_fourier_frequencies,
    resolve_kernel,
    second_moment,
)
from diversity_callbacks.functional.spectrum import symmetric_eigenvalues


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
    exact = resolve_kernel(Kernel("gaussian", sigma=2.0))
    assert exact.feature_map is None
    assert torch.equal(exact.kernel_function(x, x), gaussian_kernel(x, sigma=2.0))
    approximate = resolve_kernel(Kernel("gaussian", sigma=2.0, num_features=8, seed=1))
    assert isinstance(approximate.feature_map, RandomFourierFeatures)
    assert approximate.feature_map.seed == 1 and approximate.kernel_function is None

    def own_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    assert resolve_kernel(own_kernel).kernel_function is own_kernel
    assert resolve_kernel(Kernel(feature_map=torch.tanh)).feature_map is torch.tanh


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


@pytest.mark.parametrize("rows", [10, 100])  # one in-place GEMM, NumPy's SYRK
@pytest.mark.parametrize("contiguous", [True, False])
def test_second_moment_into_out_adds_or_overwrites_and_reuses_scratch(rows, contiguous) -> None:
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(rows, 30, generator=generator, dtype=torch.float64)
    full = phi.T @ phi
    blocks = torch.full((2, 30, 30), float("nan"), dtype=torch.float64)
    out = blocks[1] if contiguous else blocks.transpose(1, 2)[1]
    scratch = ScratchBuffers()
    assert second_moment(phi, out=out, alpha=-0.5, overwrite=True, scratch=scratch) is out
    torch.testing.assert_close(out, -0.5 * full, rtol=0, atol=1e-12)  # NaN ignored
    second_moment(phi, out=out, scratch=scratch)
    torch.testing.assert_close(out, 0.5 * full, rtol=0, atol=1e-12)
    assert blocks[0].isnan().all()


def test_scratch_buffers_are_reused_up_to_their_rows_and_fresh_kept_nothing() -> None:
    scratch = ScratchBuffers()
    first = scratch.get("a", 8, 3, torch.device("cpu"))
    assert scratch.get("a", 5, 3, torch.device("cpu")).data_ptr() == first.data_ptr()
    assert scratch.get("a", 9, 3, torch.device("cpu")).shape == (9, 3)  # grown
    values = torch.ones(2, 3)
    assert torch.equal(scratch.float64("b", values), values.double())
    already = values.double()
    assert scratch.float64("b", already) is already  # no copy
    kept = FRESH.get("a", 8, 3, torch.device("cpu"))
    assert FRESH.get("a", 8, 3, torch.device("cpu")).data_ptr() != kept.data_ptr()


@pytest.mark.parametrize("sigma", [1e-300, 1e-160, 1e160, 1e300])
def test_bandwidths_that_break_the_float64_kernel_are_rejected(sigma: float) -> None:
    message = r"`sigma` must be a bandwidth whose 1 / \(2 sigma\^2\) is a normal float64"
    with pytest.raises(ValueError, match=message):
        resolve_kernel("gaussian", sigma=sigma)
    with pytest.raises(ValueError, match=message):
        gaussian_kernel(torch.randn(3, 2), sigma=sigma)
    with pytest.raises(ValueError, match=message):
        RandomFourierFeatures(sigma=sigma, num_features=4)


def test_extreme_but_valid_bandwidths_give_a_finite_kernel() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    assert bool(torch.isfinite(gaussian_kernel(x * 1e-150, sigma=1e-150)).all())
    assert bool(torch.isfinite(gaussian_kernel(x * 1e150, sigma=1e150)).all())


@pytest.mark.parametrize("seed", [2**64, -1, 1.5, None, True, "0"])
def test_random_feature_seeds_are_checked_at_construction(seed: object) -> None:
    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 2\*\*64\), got"):
        resolve_kernel("gaussian", sigma=1.0, num_features=4, seed=seed)
    with pytest.raises(ValueError, match=r"`seed` must be an integer"):
        RandomFourierFeatures(sigma=1.0, num_features=4, seed=seed)


def test_the_largest_seed_draws() -> None:
    frequencies = random_fourier_frequencies(3, 4, sigma=1.0, seed=2**64 - 1)
    assert bool(torch.isfinite(frequencies).all())


@pytest.mark.parametrize("scale", [1e200, 1e-170, 1e-310])
def test_cosine_normalises_finite_rows_whose_squared_norm_overflows_or_underflows(
    scale: float,
) -> None:
    rows = torch.tensor([[3.0, -4.0, 0.0], [1.0, 2.0, 2.0]], dtype=torch.float64)
    unit = normalize_rows(rows * scale)
    expected = torch.tensor([[0.6, -0.8, 0.0], [1 / 3, 2 / 3, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(unit, expected, rtol=1e-12, atol=0)


def test_given_frequencies_must_be_finite() -> None:
    frequencies = torch.randn(3, 4, dtype=torch.float64)
    frequencies[1, 2] = math.nan
    with pytest.raises(ValueError, match="`frequencies` must be finite, got NaN or Inf"):
        RandomFourierFeatures(frequencies=frequencies)
    with pytest.raises(ValueError, match="`frequencies` must be a floating 2-D"):
        RandomFourierFeatures(frequencies=torch.zeros(3, 0))


@pytest.mark.parametrize(
    ("feature_map", "message"),
    [
        (
            lambda x: x.sum(1),
            r"`feature_map` must map \(N, d\) `features` to an \(N, D\) tensor "
            r"with N = 5 and D >= 1, got a tensor of shape \(5,\)",
        ),
        (lambda x: x[:3], "with N = 5 and D >= 1, got a tensor of shape \\(3, 4\\)"),
        (lambda x: x[:, :0], "with N = 5 and D >= 1, got a tensor of shape \\(5, 0\\)"),
        (lambda x: x.tolist(), "got list"),
        (lambda x: x * math.nan, "`feature_map` returned NaN or Inf features for finite"),
    ],
)
def test_feature_map_outputs_are_checked(feature_map, message: str) -> None:
    resolved = resolve_kernel(Kernel(feature_map=feature_map))
    with pytest.raises(ValueError, match=message):
        resolved.features(torch.randn(5, 4))


@pytest.mark.parametrize(
    ("kernel", "message"),
    [
        (lambda x, y: (x @ y.T) * math.nan, "the `kernel` callable returned NaN or Inf kernel"),
        (lambda x, y: x @ x.T[:, :2], r"must return the \(5, 5\) kernel matrix"),
    ],
)
def test_kernel_callable_outputs_are_checked(kernel, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_kernel(kernel).matrix(torch.randn(5, 4))


@pytest.mark.parametrize("kernel", [None, "linear", "gaussian"])
def test_zero_feature_columns_are_rejected(kernel: str | None) -> None:
    resolved = resolve_kernel(Kernel(kernel, sigma=1.0 if kernel == "gaussian" else None))
    compute = resolved.features if resolved.feature_map is not None else resolved.matrix
    with pytest.raises(ValueError, match=r"`features` must have at least one feature column"):
        compute(torch.randn(5, 0))


def test_frequencies_resolve_to_the_given_draw() -> None:
    frequencies = torch.randn(3, 6, dtype=torch.float64)
    resolved = resolve_kernel(Kernel("gaussian", frequencies=frequencies))
    x = torch.randn(4, 3)
    assert torch.equal(resolved.features(x), random_fourier_features(x, frequencies))
    with pytest.raises(ValueError, match="`frequencies` only applies to kernel='gaussian'"):
        Kernel("cosine", frequencies=frequencies)
    with pytest.raises(ValueError, match="pass either `num_features` or `frequencies`"):
        Kernel("gaussian", num_features=3, frequencies=frequencies)


def test_the_vendi_score_names_zero_columns_and_bad_callables() -> None:
    from diversity_callbacks import VendiScore
    from diversity_callbacks.functional import vendi_score

    with pytest.raises(ValueError, match="`features` must have at least one feature column"):
        vendi_score(torch.randn(5, 0), kernel=Kernel("gaussian", sigma=1.0))
    with pytest.raises(ValueError, match="`features` must have at least one feature column"):
        VendiScore(kernel=Kernel("gaussian", sigma=1.0)).update(torch.randn(5, 0))
    with pytest.raises(ValueError, match="the `kernel` callable returned NaN"):
        vendi_score(torch.randn(5, 3), kernel=lambda x, y: (x @ y.T) / 0 * 0)
    with pytest.raises(ValueError, match="`feature_map` must map"):
        VendiScore(kernel=Kernel(feature_map=lambda x: x[0])).update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        Kernel("gaussian", sigma=1.0, num_features=4, seed=None)


def test_normalize_rows_writes_into_a_given_buffer() -> None:
    features = torch.randn(5, 4)
    buffer = torch.empty(5, 4, dtype=torch.float64)
    assert normalize_rows(features, out=buffer) is buffer
    torch.testing.assert_close(
        buffer, features.double() / features.double().norm(dim=1, keepdim=True)
    )


@pytest.mark.parametrize("kernel", ["cosine", "linear"])
def test_moment_streams_blocks_of_rows_into_the_full_product(
    kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernels, "ROW_BLOCK", 4)  # 11 rows: blocks of 4, 4 and 3
    resolved = resolve_kernel(kernel)
    features = torch.randn(11, 3)
    phi = resolved.features(features)
    out = torch.eye(3, dtype=torch.float64)
    assert resolved.moment(features, out=out) is out
    torch.testing.assert_close(out, torch.eye(3, dtype=torch.float64) + phi.T @ phi)


def test_moment_names_a_zero_row_by_its_index_in_the_whole_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernels, "ROW_BLOCK", 4)
    features = torch.randn(11, 3)
    features[9] = 0
    with pytest.raises(ValueError, match="all-zero row at index 9"):
        resolve_kernel("cosine").moment(features)


def test_moment_refuses_features_of_another_dimension_than_out() -> None:
    resolved = resolve_kernel(Kernel(feature_map=lambda x: torch.cat([x, x], dim=1)))
    with pytest.raises(ValueError, match="map to 6 kernel features, but the moment"):
        resolved.moment(torch.randn(4, 3), out=torch.zeros(3, 3, dtype=torch.float64))


def test_only_the_built_in_gaussian_is_built_as_one_triangle() -> None:
    x = torch.randn(5, 3, dtype=torch.float64)
    _, symmetric = resolve_kernel(Kernel("gaussian", sigma=1.0)).self_matrix(x)
    matrix, user_symmetric = resolve_kernel(lambda x, y: x @ y.T).self_matrix(x)
    assert symmetric
    assert not user_symmetric
    torch.testing.assert_close(matrix, x @ x.T)


@pytest.mark.parametrize("size", [300, 1100])  # NumPy's eigvalsh up to 1024 rows, torch's above
def test_the_gaussian_triangle_is_the_lower_triangle_the_eigensolvers_read(size: int) -> None:
    """Several row blocks (128 rows each); a wrong or asymmetric triangle changes the spectrum."""
    x = torch.randn(size, 8, dtype=torch.float64)
    full = gaussian_kernel(x, sigma=2.0)
    triangle = gaussian_kernel_triangle(x, sigma=2.0)
    torch.testing.assert_close(triangle.tril(), full.tril(), rtol=0, atol=1e-14)
    torch.testing.assert_close(
        symmetric_eigenvalues(triangle), torch.linalg.eigvalsh(full), rtol=0, atol=1e-10
    )


def test_the_gaussian_triangle_refuses_features_whose_norms_overflow() -> None:
    with pytest.raises(ValueError, match=r"NaN or Inf entries \(rows 0 onwards\)"):
        gaussian_kernel_triangle(torch.full((3, 2), 1e200, dtype=torch.float64), sigma=1.0)


def test_second_moment_of_a_transposed_view_is_the_gram_matrix() -> None:
    phi = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(second_moment(phi.T), phi @ phi.T, rtol=0, atol=1e-12)


# The Kernel value: construction, parsing, settings, and the deprecated flat arguments.


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"name": "gausian"}, ValueError, r"`kernel` must be one of .* got 'gausian'"),
        ({"name": "cosine", "sigma": 1.0}, ValueError, "`sigma` only applies to kernel='gaussian'"),
        (
            {"name": "linear", "num_features": 4},
            ValueError,
            "`num_features` only applies to kernel='gaussian', got kernel='linear'",
        ),
        ({"name": "gaussian"}, ValueError, "kernel='gaussian' needs a bandwidth `sigma` > 0"),
        ({"name": "gaussian", "sigma": -1.0}, ValueError, "`sigma` must be a finite number > 0"),
        (
            {"name": "gaussian", "sigma": 1.0, "num_features": 0},
            ValueError,
            "`num_features` must be",
        ),
        (
            {"name": "gaussian", "num_features": 4, "frequencies": torch.ones(3, 4)},
            ValueError,
            "pass either `num_features` or `frequencies`",
        ),
        (
            {"name": "gaussian", "frequencies": torch.ones(3)},
            ValueError,
            r"`frequencies` must be a floating 2-D \(d, m\) tensor",
        ),
        ({"name": "cosine", "feature_map": torch.tanh}, ValueError, "pass either `kernel` or"),
        ({"feature_map": 3}, TypeError, "`feature_map` must be callable, got int"),
        ({"feature_map": torch.tanh, "sigma": 1.0}, ValueError, "got a `feature_map`"),
        ({"seed": -1}, ValueError, r"`seed` must be an integer in \[0, 2\*\*64\), got -1"),
        ({"seed": None}, ValueError, "`seed` must be an integer"),
    ],
)
def test_kernel_values_are_checked_when_built(arguments: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        kernels.Kernel(**arguments)


def test_a_kernel_is_a_frozen_value_with_the_defaults_in_one_place() -> None:
    kernel = kernels.Kernel()
    assert kernel.name == kernels.DEFAULT_KERNEL == "cosine"
    with pytest.raises(AttributeError):
        kernel.sigma = 2.0  # type: ignore[misc]
    assert kernels.Kernel(feature_map=torch.tanh).name is None
    assert kernels.REMOVER_KERNEL == "linear"
    gaussian = kernels.Kernel("gaussian", sigma=3.5)
    assert gaussian.explicit("SCE").num_features == kernels.EXPLICIT_NUM_FEATURES == 2500
    assert gaussian.resolve().feature_map is None  # the Vendi score's exact Gaussian
    with pytest.raises(ValueError, match="SCE needs an explicit feature map"):
        kernels.Kernel(torch.cdist).explicit("SCE")


@pytest.mark.parametrize(
    "text",
    [
        "cosine",
        "linear",
        "gaussian:sigma=3.5",
        "gaussian:sigma=3.5,features=2048",
        "gaussian:sigma=0.001,features=8,seed=3",
    ],
)
def test_kernel_text_round_trips(text: str) -> None:
    kernel = kernels.Kernel.parse(text)
    assert str(kernel) == text
    assert kernels.Kernel.parse(str(kernel)) == kernel
    assert kernels.Kernel.parse(f" {text.replace(',', ', ')} ") == kernel  # spaces are allowed


def test_parsed_and_built_kernels_are_equal_values() -> None:
    parsed = kernels.Kernel.parse("gaussian:sigma=2,num_features=16,seed=4")
    assert parsed == kernels.Kernel("gaussian", sigma=2.0, num_features=16, seed=4)
    assert hash(parsed) == hash(kernels.Kernel("gaussian", sigma=2, num_features=16, seed=4))
    assert parsed != kernels.Kernel("gaussian", sigma=2.0, num_features=16, seed=5)
    assert repr(parsed) == "Kernel('gaussian', sigma=2.0, num_features=16, seed=4)"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("gausian", "must be one of"),
        ("gaussian:sigma=abc", "bad part 'sigma=abc' (sigma must be a number)"),
        ("gaussian:sigma=1,features=2.5", "bad part 'features=2.5' (features must be an integer)"),
        ("gaussian:sigma=1,width=2", "bad part 'width=2' (unknown setting 'width')"),
        ("gaussian:sigma", "bad part 'sigma' (expected key=value)"),
        ("cosine:sigma=1", "`sigma` only applies to kernel='gaussian'"),
        ("gaussian", "needs a bandwidth `sigma`"),
    ],
)
def test_kernel_text_errors_name_the_text_the_part_and_what_is_accepted(text, part) -> None:
    with pytest.raises(ValueError) as error:
        kernels.Kernel.parse(text)
    message = str(error.value)
    assert message.startswith(f"cannot read the kernel {text!r}: ")
    assert part in message
    assert "accepted: a kernel name (cosine, linear, gaussian)" in message
    assert "sigma=<number>, features=<int>, seed=<int>" in message


def test_settings_are_those_of_0_1_and_frequencies_compare_by_digest() -> None:
    frequencies = torch.randn(3, 4, dtype=torch.float64)
    assert kernels.Kernel().settings() == {"kernel": "cosine"}
    assert kernels.Kernel("cosine", seed=5).settings() == {"kernel": "cosine"}
    assert kernels.Kernel("gaussian", sigma=3.5).settings() == {"kernel": "gaussian", "sigma": 3.5}
    assert kernels.Kernel("gaussian", sigma=3.5, num_features=8, seed=2).settings() == {
        "kernel": "gaussian",
        "sigma": 3.5,
        "num_features": 8,
        "seed": 2,
    }
    assert kernels.Kernel(feature_map=torch.tanh).settings() == {"feature_map": torch.tanh}
    given = kernels.Kernel("gaussian", frequencies=frequencies)
    digest = given.settings()["frequencies"]
    assert digest.startswith("(3, 4) sha1 ") and len(digest) == len("(3, 4) sha1 ") + 12
    assert given == kernels.Kernel("gaussian", sigma=1.0, frequencies=frequencies.clone())
    assert given != kernels.Kernel("gaussian", frequencies=frequencies + 1e-12)


def test_resolve_kernel_takes_a_kernel_value_or_its_text() -> None:
    value = kernels.Kernel("gaussian", sigma=2.0, num_features=8, seed=1)
    for kernel in (value, "gaussian:sigma=2.0,features=8,seed=1"):
        resolved = resolve_kernel(kernel).feature_map
        assert isinstance(resolved, RandomFourierFeatures)
        assert torch.equal(
            resolved.frequencies(5, torch.device("cpu")),
            random_fourier_frequencies(5, 8, sigma=2.0, seed=1),
        )
    with pytest.raises(TypeError, match="not also as \\['sigma'\\]"):
        resolve_kernel(value, sigma=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sigmas'"):
        resolve_kernel("gaussian", sigmas=2.0)


def test_flat_kernel_arguments_warn_once_and_give_the_same_kernel() -> None:
    with pytest.warns(FutureWarning) as caught:
        flat = resolve_kernel("gaussian", sigma=2.0, num_features=8, seed=1)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "passing `sigma`, `num_features`, `seed` beside `kernel` is deprecated" in message
    assert "pass kernel=Kernel('gaussian', sigma=2.0, num_features=8, seed=1)" in message
    assert caught[0].filename == __file__  # the warning points at the caller
    features = torch.randn(6, 5)
    new = resolve_kernel(kernels.Kernel("gaussian", sigma=2.0, num_features=8, seed=1))
    assert torch.equal(flat.features(features), new.features(features))


def _scores(result: object) -> list[torch.Tensor]:
    """The numbers of any score's result, to compare two calls exactly."""
    if isinstance(result, dict):
        return [torch.as_tensor(value) for value in result.values()]
    if isinstance(result, tuple):
        return [torch.as_tensor(value) for value in result]
    if isinstance(result, list):  # modes
        return [torch.tensor([mode.share for mode in result])]
    if hasattr(result, "eigenvalues"):  # novelty
        return [result.eigenvalues, torch.tensor([result.mass, result.score])]
    return [torch.as_tensor(result)]


FLAT_CASES = {
    "exact gaussian": ({"kernel": "gaussian", "sigma": 2.0}, kernels.Kernel("gaussian", sigma=2.0)),
    "random features": (
        {"kernel": "gaussian", "sigma": 2.0, "num_features": 16, "seed": 3},
        "gaussian:sigma=2.0,features=16,seed=3",
    ),
    "feature map": ({"feature_map": torch.tanh}, kernels.Kernel(feature_map=torch.tanh)),
}


def _functional_scores(name: str, kernel_options: dict) -> object:
    from diversity_callbacks import functional as F

    torch.manual_seed(0)
    x, y = torch.randn(12, 4), torch.randn(10, 4)
    ids = torch.arange(12) % 3
    prompts = torch.eye(4)[ids]
    calls = {
        "vendi_score": lambda: F.vendi_score(x, q=[1, 2], **kernel_options),
        "per_condition_vendi_score": lambda: F.per_condition_vendi_score(x, ids, **kernel_options),
        "leading_modes": lambda: F.leading_modes(x, 3, **kernel_options),
        "novelty": lambda: F.novelty(x, y, **kernel_options),
        "schur_complement_entropy": lambda: F.schur_complement_entropy(
            x, prompts, **kernel_options
        ),
        "quality_weighted_vendi_score": lambda: F.quality_weighted_vendi_score(
            x, torch.rand(12), **kernel_options
        ),
    }
    return calls[name]()


@pytest.mark.parametrize("case", FLAT_CASES)
@pytest.mark.parametrize(
    "name",
    [
        "vendi_score",
        "per_condition_vendi_score",
        "leading_modes",
        "novelty",
        "schur_complement_entropy",
        "quality_weighted_vendi_score",
    ],
)
def test_flat_kernel_arguments_warn_and_give_identical_numbers(name: str, case: str) -> None:
    flat, value = FLAT_CASES[case]
    if name == "schur_complement_entropy" and case == "exact gaussian":
        value = kernels.Kernel("gaussian", sigma=2.0, num_features=2500)  # SCE's explicit map
    with pytest.warns(FutureWarning, match="beside `kernel` is deprecated") as caught:
        old = _scores(_functional_scores(name, flat))
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _scores(_functional_scores(name, {"kernel": value}))
    assert len(old) == len(new)
    for before, after in zip(old, new, strict=True):
        assert torch.equal(before, after)
