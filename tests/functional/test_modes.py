"""Leading modes: FKEA's definition on K / n, pure modes with their true shares, bad input."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.functional import vendi_score
from diversity_callbacks.functional.kernels import Kernel, gaussian_kernel, normalize_rows
from diversity_callbacks.functional.modes import KernelMoments, leading_modes, top_samples
from tests.helpers.modes import WEIGHTS, mode_features, mode_labels, reference_modes


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel": "cosine"},
        {"kernel": "linear"},
        {"kernel": Kernel("gaussian", sigma=0.5)},
        {"kernel": Kernel("gaussian", sigma=0.5, num_features=256)},
    ],
)
def test_six_modes_are_pure_with_their_true_shares(kwargs: dict) -> None:
    labels = mode_labels(600)
    modes = leading_modes(mode_features(labels), 6, top=16, **kwargs)
    assert len(modes) == 6
    for mode, share in zip(modes, WEIGHTS, strict=True):  # unequal weights: ordered by share
        assert len(set(labels[mode.samples].tolist())) == 1
        assert mode.share == pytest.approx(share, abs=0.02)
    assert [int(labels[m.samples[0]]) for m in modes] == list(range(6))


@pytest.mark.parametrize("kernel", ["cosine", "linear", "gaussian"])
def test_matches_the_eigendecomposition_of_k_over_n(kernel: str) -> None:
    x = torch.randn(80, 6, dtype=torch.float64)
    if kernel == "gaussian":
        k = gaussian_kernel(x, sigma=1.5)
        kwargs = {"kernel": Kernel(kernel, sigma=1.5)}
    else:
        phi = normalize_rows(x) if kernel == "cosine" else x
        k, kwargs = phi @ phi.T, {"kernel": kernel}
    values, tops = reference_modes(k.numpy(), 4, 10)
    modes = leading_modes(x, 4, top=10, **kwargs)
    shares = torch.tensor([m.share for m in modes], dtype=torch.float64)
    torch.testing.assert_close(shares, torch.from_numpy(values.copy()))
    assert [m.samples.tolist() for m in modes] == [t.tolist() for t in tops]


def test_shares_are_the_vendi_spectrum() -> None:
    x = torch.randn(50, 5, dtype=torch.float64)
    shares = torch.tensor([m.share for m in leading_modes(x, 5)], dtype=torch.float64)
    entropy = -(shares * shares.log()).sum()
    assert float(entropy.exp()) == pytest.approx(float(vendi_score(x, q=1)), rel=1e-10)


def test_loadings_are_largest_first_and_summed_moments_give_the_same_modes() -> None:
    x = normalize_rows(torch.randn(40, 5, dtype=torch.float64))
    whole = KernelMoments.of(x)
    halves = KernelMoments.of(x[:15]) + KernelMoments.of(x[15:])
    torch.testing.assert_close(halves.covariance, whole.covariance)
    mode = leading_modes(x, 1, top=40)[0]
    assert bool((mode.loadings[:-1] >= mode.loadings[1:]).all())
    assert float(mode.loadings.sum()) > 0  # the sign puts the mode where the samples are


def test_top_of_tops_is_the_top_and_ties_go_to_the_lower_index() -> None:
    loadings = torch.tensor([[1.0], [3.0], [3.0], [2.0]], dtype=torch.float64)
    indices = torch.tensor([7, 9, 4, 1])
    samples, values = top_samples(loadings, indices, 3)
    assert samples.tolist() == [[4, 9, 1]] and values.tolist() == [[3.0, 3.0, 2.0]]
    # Two ranks' tops, merged: the top of all four samples
    tops = [top_samples(loadings[part], indices[part], 3) for part in (slice(0, 2), slice(2, 4))]
    merged_samples = torch.cat([t[0] for t in tops], 1).flatten()
    merged_loadings = torch.cat([t[1] for t in tops], 1).T
    assert top_samples(merged_loadings, merged_samples, 3)[0].tolist() == samples.tolist()


def test_fewer_modes_than_asked_when_the_rank_is_lower() -> None:
    x = torch.eye(3, dtype=torch.float64).repeat(4, 1)
    assert len(leading_modes(x, 8)) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_modes": 0}, "`num_modes` must be an integer >= 1"),
        ({"top": 0}, "`top` must be an integer >= 1"),
        ({"indices": [1, 2]}, "`indices` must be 5 integers"),
        ({"kernel": "gaussian"}, "needs a bandwidth `sigma`"),
    ],
)
def test_bad_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        leading_modes(torch.randn(5, 3), **kwargs)


def spectrum_matrix(values: list[float], dim: int = 64, rest: float = 1e-3) -> torch.Tensor:
    """A symmetric (dim, dim) matrix with these leading eigenvalues (the others evenly from
    ``rest`` down to ``-rest``) in a random basis."""
    rest = torch.linspace(rest, -rest, dim - len(values), dtype=torch.float64)
    spectrum = torch.cat([torch.tensor(values, dtype=torch.float64), rest])
    basis = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64)).Q
    return (basis * spectrum) @ basis.T


def same_columns(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to each column's sign."""
    assert torch.allclose((a.T @ b).diagonal().abs(), torch.ones(a.shape[1], dtype=a.dtype))


def test_few_eigenvectors_come_from_subspace_iteration_equal_to_eigh(monkeypatch) -> None:
    from diversity_callbacks.functional import modes

    torch.manual_seed(0)
    matrix = spectrum_matrix([0.4, 0.25, -0.3, -0.1])
    values = modes.descending_eigvalsh(matrix)
    exact = modes.descending_eigh(matrix)[1]

    def no_eigh(matrix: torch.Tensor) -> None:
        raise AssertionError("eigh was called: the subspace iteration should have sufficed")

    monkeypatch.setattr(modes, "descending_eigh", no_eigh)
    top, bottom = modes.extreme_eigenvectors(matrix, values, 2, 2)
    same_columns(top, exact[:, :2])
    same_columns(bottom, exact.flip(1)[:, :2])


def test_a_slow_spectrum_falls_back_to_eigh(monkeypatch) -> None:
    from diversity_callbacks.functional import modes

    torch.manual_seed(0)
    matrix = spectrum_matrix([0.30], rest=0.29)  # every other |value| near: slow to converge
    values = modes.descending_eigvalsh(matrix)
    calls = []
    full = modes.descending_eigh

    def counted(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        return full(m)

    monkeypatch.setattr(modes, "descending_eigh", counted)
    top, _ = modes.extreme_eigenvectors(matrix, values, 1)
    assert calls == [1]
    exact = torch.linalg.eigh(matrix)[1].flip(1)[:, :1]
    same_columns(top, exact)


def test_modes_below_the_threshold_get_no_vector() -> None:
    from diversity_callbacks.functional.modes import descending_eigvalsh, keep_leading

    torch.manual_seed(0)
    matrix = spectrum_matrix([0.5, 0.3, 0.005])
    values = descending_eigvalsh(matrix)
    shares, vectors = keep_leading(matrix, values, 8, threshold=0.01)
    assert shares.tolist() == pytest.approx([0.5, 0.3]) and vectors.shape == (64, 2)
