"""MemorizationScore: a copying generator's true copy share, a novel one's zero, DDP exactness."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks.metrics.memorization import MemorizationScore
from tests.helpers.distributed import run_distributed

COPIED = (4, 17, 33)


def training_set() -> torch.Tensor:
    return torch.randn(50, 32, generator=torch.Generator().manual_seed(0))


def copying_draws(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples: about a quarter exact copies of training rows 4, 17, 33, the rest new;
    and each sample's copied row (-1: new)."""
    generator = torch.Generator().manual_seed(seed)
    train = training_set()
    copied = torch.full((n,), -1)
    samples = torch.randn(n, 32, generator=generator)
    for i in range(n):
        if torch.rand((), generator=generator) < 0.25:
            copied[i] = COPIED[int(torch.randint(3, (), generator=generator))]
            samples[i] = train[copied[i]]
    return samples, copied


def test_a_copying_generator_gets_the_true_share_of_copies_and_their_rows():
    samples, copied = copying_draws(200)
    metric = MemorizationScore(training_set())
    for batch in samples.split(33):
        metric.update(batch)
    scores = metric.compute()
    is_copy = copied >= 0
    assert 0.15 < float(is_copy.double().mean()) < 0.35
    assert float(scores["copy_rate"]) == float(is_copy.double().mean())
    assert torch.equal(metric.nearest_indices[is_copy], copied[is_copy])
    assert float(scores["l2_memorization"]) == float(is_copy.double().mean())
    assert float(scores["authenticity"]) <= 1 - float(is_copy.double().mean())


def test_a_generator_of_new_samples_copies_nothing():
    metric = MemorizationScore(training_set())
    metric.update(torch.randn(200, 32, generator=torch.Generator().manual_seed(5)))
    scores = metric.compute()
    assert float(scores["copy_rate"]) == 0.0
    assert float(scores["l2_memorization"]) == 0.0
    assert float(scores["nn_similarity_q99"]) < 0.8


def test_reset_empties_the_samples_but_keeps_the_reference():
    metric = MemorizationScore(training_set())
    metric.update(training_set()[:3])
    metric.compute()
    metric.reset()
    metric.update(torch.randn(4, 32, generator=torch.Generator().manual_seed(9)))
    assert float(metric.compute()["copy_rate"]) == 0.0
    assert metric.nearest_indices.shape == (4,)


def test_bad_options_name_the_argument():
    with pytest.raises(
        ValueError, match=r"`threshold` must be a cosine similarity in \[-1, 1\], got 2"
    ):
        MemorizationScore(torch.eye(3), threshold=2)
    with pytest.raises(ValueError, match="`quantiles`"):
        MemorizationScore(torch.eye(3), quantiles=(1.5,))
    with pytest.raises(ValueError, match=r"compute\(\) needs at least one sample"):
        MemorizationScore(torch.eye(3)).compute()


SHARDS = {"uneven": ([40, 23], [7]), "empty rank": ([50, 20], [])}


def _on_ranks(rank: int, world_size: int) -> dict:
    samples, _ = copying_draws(70)
    results = {}
    for name, shards in SHARDS.items():
        start = 0 if rank == 0 else sum(shards[0])
        metric = MemorizationScore(training_set(), k=5)
        for rows in shards[rank]:
            metric.update(samples[start : start + rows])
            start += rows
        scores = metric.compute()
        results[name] = ({k: float(v) for k, v in scores.items()}, metric.nearest_indices.tolist())
    return results


@pytest.mark.timeout(180)
def test_two_gloo_ranks_equal_one_process_to_1e_12():
    samples, _ = copying_draws(70)
    single = MemorizationScore(training_set(), k=5)
    single.update(samples)
    expected = {k: float(v) for k, v in single.compute().items()}
    for result in run_distributed(_on_ranks):
        for name in SHARDS:
            scores, nearest = result[name]
            assert scores == pytest.approx(expected, rel=1e-12, abs=1e-12), name
            assert nearest == single.nearest_indices.tolist()


def _ken_by_definition(
    samples: torch.Tensor, train: torch.Tensor, eta: float
) -> tuple[float, float]:
    """KEN (Zhang et al. 2024) from its definition, in float64: the positive eigenvalues of
    C_gen - eta C_ref, cosine-kernel covariances of trace 1; mass and mass x their entropy."""

    def covariance(rows: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize(rows.to(torch.float64), dim=1)
        return unit.T @ unit / unit.shape[0]

    values = torch.linalg.eigvalsh(covariance(samples) - eta * covariance(train))
    positive = values[values > 1e-12]
    mass = float(positive.sum())
    weights = positive / mass
    return mass, mass * float(-(weights * weights.log()).sum())


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_ken_novelty_against_the_training_set_follows_its_definition(eta: float):
    generator = torch.Generator().manual_seed(3)
    train = torch.cat([torch.randn(60, 16, generator=generator), torch.zeros(60, 16)], dim=1)
    off = torch.cat([torch.zeros(20, 16), torch.randn(20, 16, generator=generator)], dim=1)
    samples = torch.cat([train[:30], off])  # 40% lies where the training set has nothing
    metric = MemorizationScore(train, novelty_eta=eta)
    metric.update(samples)
    scores = metric.compute()
    mass, score = _ken_by_definition(samples, train, eta)
    assert float(scores["novel_mass"]) == pytest.approx(mass, abs=1e-10)
    assert float(scores["ken_novelty"]) == pytest.approx(score, abs=1e-10)
    assert float(scores["novel_mass"]) >= 0.4 - 1e-9


def test_the_training_set_itself_is_not_novel_and_an_orthogonal_one_entirely():
    generator = torch.Generator().manual_seed(4)
    train = torch.cat([torch.randn(40, 8, generator=generator), torch.zeros(40, 8)], dim=1)
    off = torch.cat([torch.zeros(40, 8), torch.randn(40, 8, generator=generator)], dim=1)
    for samples, expected in ((train, 0.0), (off, 1.0)):
        metric = MemorizationScore(train)
        metric.update(samples)
        assert float(metric.compute()["novel_mass"]) == pytest.approx(expected, abs=1e-9)
