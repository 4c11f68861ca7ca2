"""The Vendi score: closed forms, the reference package, random features and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from vendi_score import vendi

from diversity_callbacks.functional import Kernel, vendi_score, vendi_score_from_kernel
from diversity_callbacks.functional.kernels import gaussian_kernel, normalize_rows

# The reference package warns about SciPy namespaces and its own q = inf handling.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:vendi_score", "ignore::RuntimeWarning:vendi_score"
)

ORDERS = [0, 0.5, 1, 2, "inf"]
ALL_KERNELS = [
    {"kernel": "cosine"},
    {"kernel": "linear"},
    {"kernel": Kernel("gaussian", sigma=0.7)},
    {"kernel": Kernel("gaussian", sigma=0.7, num_features=64)},
]


def clusters(k: int, size: int, dim: int, spread: float = 1e-5) -> torch.Tensor:
    """k tight clusters of ``size`` rows around orthogonal centres of norm 10."""
    centres = 10 * torch.eye(dim, dtype=torch.float64)[:k]
    return centres.repeat_interleave(size, 0) + spread * torch.randn(
        k * size, dim, dtype=torch.float64
    )


@pytest.mark.parametrize("kwargs", ALL_KERNELS)
def test_identical_rows_score_one(kwargs: dict) -> None:
    scores = vendi_score(torch.randn(1, 6).repeat(9, 1), q=ORDERS, **kwargs)
    for value in scores.values():
        assert value.item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kwargs", ALL_KERNELS)
def test_one_sample_scores_one(kwargs: dict) -> None:
    assert vendi_score(torch.randn(1, 6), **kwargs).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", ["cosine", "linear"])
@pytest.mark.parametrize("n", [5, 12])  # Gram-matrix path (n <= D) and second-moment path (n > D)
def test_orthonormal_rows_score_their_number(kernel: str, n: int) -> None:
    rows = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))[0][:n]
    for value in vendi_score(rows, q=ORDERS, kernel=kernel).values():
        assert value.item() == pytest.approx(n, rel=1e-10)


@pytest.mark.parametrize(
    "kwargs",
    [{"kernel": "cosine"}, {"kernel": Kernel("gaussian", sigma=1.0)}],
    ids=["cos", "gauss"],
)
def test_separated_tight_clusters_of_equal_size_score_their_number(kwargs: dict) -> None:
    for value in vendi_score(clusters(4, 10, 8), q=[0.5, 1, 2, "inf"], **kwargs).values():
        assert value.item() == pytest.approx(4.0, rel=1e-3)


def test_scores_decrease_with_the_order_from_the_rank_to_one_over_the_top_eigenvalue() -> None:
    # 1 <= VS <= n holds for any exp(entropy): check the ends against NumPy's eigenvalues instead
    features = torch.randn(30, 10, dtype=torch.float64)
    scores = [vendi_score(features, q=q).item() for q in (0, 0.5, 1, 2, 5, "inf")]
    assert scores == sorted(scores, reverse=True)
    unit = features.numpy() / np.linalg.norm(features.numpy(), axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(unit @ unit.T / 30)
    assert scores[0] == 10  # the rank of 30 rows in 10 dimensions
    assert scores[-1] == pytest.approx(1 / eigenvalues.max(), rel=1e-10)
    assert scores[3] == pytest.approx(1 / np.sum(eigenvalues**2), rel=1e-10)


def test_order_zero_is_the_numerical_rank() -> None:
    features = torch.randn(300, 32, dtype=torch.float64) @ torch.randn(32, 512, dtype=torch.float64)
    assert vendi_score(features, q=0).item() == 32
    unit = normalize_rows(features)
    assert vendi_score_from_kernel(unit @ unit.T, q=0).item() == 32
    # The reference keeps every positive eigenvalue of the 300 x 300 kernel: round-off counts.
    assert vendi.score_K((unit @ unit.T).numpy(), q=0) > 100


def reference_kernels(features: torch.Tensor, sigma: float) -> dict[str, np.ndarray]:
    """Kernel matrices built with NumPy/SciPy, independently of our kernels module."""
    x = features.numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return {
        "cosine": unit @ unit.T,
        "gaussian": np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma**2)),
    }


@pytest.mark.parametrize("q", [0.5, 1, 2, "inf"])
def test_matches_the_reference_package(q: float | str) -> None:
    features = clusters(4, 5, 24, spread=3.0)  # n = 20 <= d: full-rank kernels, no round-off
    sigma = 4.0
    kernels = reference_kernels(features, sigma)
    ours = {
        "cosine": vendi_score(features, q=q),
        "gaussian": vendi_score(features, q=q, kernel=Kernel("gaussian", sigma=sigma)),
    }
    for name, kernel_matrix in kernels.items():
        # The reference takes only the string "inf"; np.inf gives NaN there.
        expected = vendi.score_K(kernel_matrix, q=q)
        assert ours[name].item() == pytest.approx(expected, rel=1e-8, abs=0)
        kernel_score = vendi_score_from_kernel(torch.from_numpy(kernel_matrix), q=q)
        assert kernel_score.item() == pytest.approx(expected, rel=1e-8, abs=0)
    assert ours["cosine"].item() == pytest.approx(vendi.score_dual(features.numpy(), q=q), rel=1e-8)


def test_the_reference_score_x_ignores_the_order_but_ours_does_not() -> None:
    features = torch.randn(20, 6, dtype=torch.float64)
    x = features.numpy()
    assert vendi.score_X(x, q=2) == vendi.score_X(x, q=1)
    ours = vendi_score(features, q=2).item()
    assert ours == pytest.approx(vendi.score_dual(x, q=2), rel=1e-8)
    assert abs(ours - vendi.score_X(x, q=2)) > 0.1
    assert math.isnan(vendi.score_dual(x, q=np.inf))  # ours accepts float("inf") and "inf"
    assert math.isinf(vendi.score_dual(x, q=1000))  # p ** q underflows there
    assert 1 <= vendi_score(features, q=1000).item() < 6
    assert vendi_score(features, q=math.inf).item() == vendi_score(features, q="inf").item()


def test_linear_kernel_scores_the_spectrum_of_k_over_its_trace() -> None:
    for n in (6, 20):  # both sides of the Gram / second-moment switch at D = 10
        features = torch.randn(n, 10, dtype=torch.float64) * torch.rand(n, 1)
        expected = vendi_score_from_kernel(features @ features.T, q=[1, 2])
        scores = vendi_score(features, q=[1, 2], kernel="linear")
        for key, value in scores.items():
            assert value.item() == pytest.approx(expected[key].item(), rel=1e-10)


def test_user_feature_map_and_kernel_function_equal_the_matrix_path() -> None:
    features = torch.randn(15, 4, dtype=torch.float64)

    def feature_map(x: torch.Tensor) -> torch.Tensor:
        return normalize_rows(torch.cat([x, x**2], dim=1))

    phi = feature_map(features)
    expected = vendi_score_from_kernel(phi @ phi.T).item()
    assert vendi_score(features, kernel=Kernel(feature_map=feature_map)).item() == pytest.approx(
        expected, rel=1e-10
    )

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return feature_map(x) @ feature_map(y).T

    assert vendi_score(features, kernel=kernel).item() == pytest.approx(expected, rel=1e-10)


def test_random_features_converge_to_the_exact_gaussian() -> None:
    features = clusters(6, 30, 8, spread=0.6)
    exact = vendi_score(features, q=[1, 2], kernel=Kernel("gaussian", sigma=1.0))
    errors = {}
    for m in (16, 256, 4096):
        approx = vendi_score(
            features, q=[1, 2], kernel=Kernel("gaussian", sigma=1.0, num_features=m)
        )
        errors[m] = {key: abs(approx[key].item() / exact[key].item() - 1) for key in exact}
    for key in ("q1", "q2"):
        assert errors[16][key] > errors[256][key] > errors[4096][key]
        assert errors[4096][key] < 0.02


def test_random_features_are_reproducible_by_seed() -> None:
    features = torch.randn(40, 5)
    kwargs = {"name": "gaussian", "sigma": 2.0, "num_features": 32}
    first = vendi_score(features, kernel=Kernel(seed=1, **kwargs))
    torch.manual_seed(99)
    assert vendi_score(features, kernel=Kernel(seed=1, **kwargs)).item() == first.item()
    assert vendi_score(features, kernel=Kernel(seed=2, **kwargs)).item() != first.item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kwargs", ALL_KERNELS)
def test_low_precision_features_are_scored_in_float64(dtype: torch.dtype, kwargs: dict) -> None:
    features = torch.randn(12, 6).to(dtype)
    score = vendi_score(features, **kwargs)
    assert score.dtype == torch.float64
    assert score.item() == pytest.approx(
        vendi_score(features.to(torch.float64), **kwargs).item(), rel=1e-12
    )


def test_large_finite_half_precision_rows_are_accepted() -> None:
    # Their sum overflows float16: the cheap finiteness check must fall back to the exact one.
    features = torch.full((40, 30), 60_000.0, dtype=torch.float16)
    assert not torch.isfinite(features.sum())
    assert vendi_score(features, q=[1, 2], kernel="linear")["q1"].item() == pytest.approx(1.0)


def test_default_tolerance_can_be_overridden() -> None:
    features = torch.cat([torch.eye(3), 1e-5 * torch.eye(3)], dim=1).to(torch.float64)
    features = torch.cat([features, torch.tensor([[0.0, 0, 0, 0, 0, 1e-7]], dtype=torch.float64)])
    kernel = features @ features.T
    assert vendi_score_from_kernel(kernel, q=0).item() == 4
    assert vendi_score_from_kernel(kernel, q=0, tolerance=1e-6).item() == 3
    assert vendi_score(features, q=0, kernel="linear", tolerance=1e-6).item() == 3


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "message"),
    [
        (torch.tensor([[1.0, math.nan], [0.0, 1.0]]), {}, ValueError, "got NaN or Inf in 1 row"),
        (torch.tensor([[1.0, 0.0], [math.inf, 1.0]]), {}, ValueError, "first at row 1"),
        (torch.ones(4), {}, ValueError, r"`features` must be 2-D with shape \(N, D\), got 1-D"),
        (torch.ones(2, 3, 4), {}, ValueError, r"got 3-D shape \(2, 3, 4\)"),
        (torch.ones(3, 2, dtype=torch.long), {}, TypeError, "must have a floating dtype, got"),
        ([[1.0, 2.0]], {}, TypeError, "must be a torch.Tensor of shape"),
        (torch.ones(0, 3), {}, ValueError, r"at least one row, got shape \(0, D\)"),
        (torch.ones(2, 3), {"q": -1}, ValueError, '`q` must be a number >= 0 or "inf", got -1'),
        (torch.ones(2, 3), {"kernel": "gaussian:sigma=0"}, ValueError, "`sigma` must be"),
        (torch.ones(2, 3), {"tolerance": 2}, ValueError, r"`tolerance` must be None or a"),
    ],
)
def test_bad_input_is_named_in_the_error(
    features: object, kwargs: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        vendi_score(features, **kwargs)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (torch.ones(3), r"`kernel_matrix` must be a 2-D \(N, N\) tensor, got Tensor"),
        (torch.ones(2, 3), r"`kernel_matrix` must be square, got shape \(2, 3\)"),
        (torch.tensor([[1.0, math.nan], [math.nan, 1.0]]), "`kernel_matrix` must be finite"),
    ],
)
def test_bad_kernel_matrix_is_named_in_the_error(matrix: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vendi_score_from_kernel(matrix)


def test_exact_gaussian_is_full_rank_beyond_the_input_dimension() -> None:
    # n = 10 points in 3 dimensions: a feature-map (dual) path would cap the rank at 3
    features = torch.randn(10, 3, dtype=torch.float64)
    kernel = reference_kernels(features, sigma=0.9)["gaussian"]
    scores = vendi_score(features, q=[0, 2], kernel=Kernel("gaussian", sigma=0.9))
    assert scores["q0"].item() == 10
    assert scores["q2"].item() == pytest.approx(vendi.score_K(kernel, q=2), rel=1e-10)
    torch.testing.assert_close(gaussian_kernel(features, sigma=0.9), torch.from_numpy(kernel))


@pytest.mark.parametrize("kernel", ["cosine", "linear"])
def test_more_rows_than_a_block_stream_into_the_same_score(
    kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diversity_callbacks.functional import kernels, vendi

    features = torch.randn(40, 5, dtype=torch.float64)
    phi = normalize_rows(features) if kernel == "cosine" else features
    expected = vendi_score_from_kernel(phi @ phi.T, q=[1, 2])
    for module in (kernels, vendi):
        monkeypatch.setattr(module, "ROW_BLOCK", 16)  # 40 rows: three blocks
    scores = vendi_score(features, q=[1, 2], kernel=kernel)
    for key, value in expected.items():
        assert scores[key].item() == pytest.approx(value.item(), rel=1e-12)
