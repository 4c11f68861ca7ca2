"""KEN novelty: the paper's block-matrix definition, lost and gained modes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diversity_callbacks.functional.kernels import Kernel, gaussian_kernel, normalize_rows
from diversity_callbacks.functional.novelty import ken_score, novelty
from tests.helpers.modes import WEIGHTS, mode_features, mode_labels, reference_novelty

FEATURE_KERNELS = [
    {"kernel": "cosine"},
    {"kernel": "linear"},
    {"kernel": Kernel("gaussian", sigma=0.8, num_features=128)},
]


def two_sets(dropped: tuple[int, ...] = (1, 4)) -> tuple[torch.Tensor, ...]:
    """A baseline with 6 modes and an evaluation of the same seeds without ``dropped``: their
    samples are drawn from the surviving modes instead. Returns both sets' true modes and
    features."""
    labels = mode_labels(600)
    before = mode_features(labels)
    kept = [m for m in range(6) if m not in dropped]
    generator = torch.Generator().manual_seed(1)
    moved = labels.clone()
    lost = torch.isin(labels, torch.tensor(dropped))
    moved[lost] = torch.tensor(kept)[
        torch.randint(len(kept), (int(lost.sum()),), generator=generator)
    ]
    return labels, moved, before, mode_features(moved, seed=2)


def reference_kernels(a: torch.Tensor, b: torch.Tensor, kwargs: dict) -> tuple[np.ndarray, ...]:
    if isinstance(kwargs["kernel"], Kernel):
        k = lambda x, y: gaussian_kernel(x, y, sigma=kwargs["kernel"].sigma).numpy()  # noqa: E731
    else:
        f = normalize_rows if kwargs["kernel"] == "cosine" else (lambda x: x)
        k = lambda x, y: (f(x) @ f(y).T).numpy()  # noqa: E731
    return k(a, a), k(a, b), k(b, b)


@pytest.mark.parametrize(
    "kwargs",
    [{"kernel": "cosine"}, {"kernel": "linear"}, {"kernel": Kernel("gaussian", sigma=0.8)}],
)
@pytest.mark.parametrize("eta", [1.0, 1.5])
def test_matches_kens_block_matrix(kwargs: dict, eta: float) -> None:
    _, _, before, after = two_sets()
    before, after = before[::6], after[::8]  # unequal sizes: the block matrix weighs them
    found = novelty(before, after, eta=eta, num_modes=3, top=5, **kwargs)
    mass, values, tops = reference_novelty(*reference_kernels(before, after, kwargs), eta, 5)
    assert found.mass == pytest.approx(mass, abs=1e-8)
    torch.testing.assert_close(found.eigenvalues[:3], torch.from_numpy(values[:3].copy()))
    # The two lost modes (the third is noise, whose vectors are not unique)
    for mode, expected in zip(found.modes[:2], tops[:2], strict=True):
        assert mode.samples.tolist() == expected.tolist()


def test_lost_modes_are_the_dropped_ones_with_their_mass() -> None:
    labels, _, before, after = two_sets(dropped=(1, 4))
    lost = novelty(before, after, num_modes=2, top=16)
    assert lost.mass == pytest.approx(WEIGHTS[1] + WEIGHTS[4], abs=0.03)
    for mode, true_mode in zip(lost.modes, (1, 4), strict=True):
        assert set(labels[mode.samples].tolist()) == {true_mode}
        assert mode.share == pytest.approx(WEIGHTS[true_mode], abs=0.02)


def test_gained_mass_equals_lost_mass_and_lies_on_surviving_modes() -> None:
    _, moved, before, after = two_sets(dropped=(1, 4))
    gained = novelty(after, before, num_modes=4)
    assert gained.mass == pytest.approx(novelty(before, after).mass, abs=1e-9)
    for mode in gained.modes:  # each on one mode that survived
        assert len(set(moved[mode.samples].tolist()) - {1, 4}) == 1


@pytest.mark.parametrize("kwargs", FEATURE_KERNELS)
def test_covariance_of_b_gives_what_its_features_give(kwargs: dict) -> None:
    _, _, before, after = two_sets()
    from diversity_callbacks.functional.kernels import resolve_kernel

    phi = resolve_kernel(**kwargs).features(after)
    by_sum = novelty(before, covariance_b=7.0 * phi.T @ phi, num_modes=2, **kwargs)
    by_rows = novelty(before, after, num_modes=2, **kwargs)
    assert by_sum.mass == pytest.approx(by_rows.mass, abs=1e-12)
    assert [m.samples.tolist() for m in by_sum.modes] == [m.samples.tolist() for m in by_rows.modes]


def test_identical_sets_have_no_novelty() -> None:
    _, _, before, _ = two_sets()
    found = novelty(before, before.clone())
    assert (found.mass, found.score, found.modes) == (0.0, 0.0, [])


def test_ken_score_is_mass_times_entropy() -> None:
    mass, score = ken_score(torch.tensor([0.2, 0.1, 0.1], dtype=torch.float64))
    weights = np.array([0.5, 0.25, 0.25])
    assert mass == pytest.approx(0.4)
    assert score == pytest.approx(0.4 * -(weights * np.log(weights)).sum())


def test_indices_name_the_samples() -> None:
    _, _, before, after = two_sets()
    plain = novelty(before, after, num_modes=1, top=3)
    named = novelty(before, after, num_modes=1, top=3, indices=torch.arange(600) + 1000)
    assert named.modes[0].samples.tolist() == [i + 1000 for i in plain.modes[0].samples.tolist()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of `features_b` and `covariance_b`, got neither"),
        ({"features_b": torch.ones(3, 4), "covariance_b": torch.eye(4)}, "got both"),
        ({"features_b": torch.ones(3, 5)}, "feature dimension 4"),
        ({"covariance_b": torch.eye(3)}, r"\(4, 4\) tensor"),
        ({"covariance_b": torch.zeros(4, 4)}, "positive trace"),
        ({"features_b": torch.ones(3, 4), "eta": 0}, "`eta` must be a finite number > 0"),
        ({"features_b": torch.ones(3, 4), "top": 0}, "`top` must be an integer >= 1"),
        (
            {"covariance_b": torch.eye(4), "kernel": Kernel("gaussian", sigma=1.0)},
            "needs a kernel with a feature map",
        ),
    ],
)
def test_bad_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        novelty(torch.randn(5, 4), **kwargs)


@pytest.mark.parametrize("eta", [1.0, 1.3])
def test_both_ways_equal_two_one_way_calls(eta: float) -> None:
    from diversity_callbacks.functional.modes import KernelMoments
    from diversity_callbacks.functional.novelty import (
        covariance_novelty,
        covariance_novelty_both_ways,
    )

    _, _, before, after = two_sets()
    a, b = (KernelMoments.of(normalize_rows(x)) for x in (before, after))
    both = covariance_novelty_both_ways(a.covariance, b.covariance, eta, 3, a.first, b.first)
    one = covariance_novelty(a.covariance, b.covariance, eta, 3, a.first)
    other = covariance_novelty(b.covariance, a.covariance, eta, 3, b.first)
    for (values, vectors), (expected_values, expected_vectors) in zip(
        both, (one, other), strict=True
    ):
        torch.testing.assert_close(values, expected_values)
        torch.testing.assert_close(vectors[:, :2], expected_vectors[:, :2])
