"""Nearest-training-neighbour search and the memorization scores, against brute force and
against dgm-eval's authenticity (re-implemented here in float64: the package is not installed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from diversity_callbacks.functional.memorization import (
    authenticity,
    calibrated_l2,
    copy_rate,
    l2_memorization,
    memorization_scores,
    nearest_neighbours,
    quantile_key,
    unit_rows,
)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows.to(torch.float64), dim=1)


def _dgm_eval_authpct(train: torch.Tensor, gen: torch.Tensor) -> float:
    """dgm-eval ``metrics/authpct.py``'s computation, step for step, in float64: a full
    train x train cdist with an infinite diagonal, then a sample is authentic when its nearest
    training point's own nearest-neighbour distance is below the sample's distance to it."""
    real = torch.cdist(train, train)
    real.fill_diagonal_(float("inf"))
    to_gen = torch.cdist(train, gen)
    real_min = real.min(dim=0).values
    gen_min, gen_arg = to_gen.min(dim=0)
    authentic = real_min[gen_arg] < gen_min
    return float(100 * authentic.sum() / len(authentic))


def _hand_made_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Six unit training points in 3-D (two close pairs, two loners) and five samples: an exact
    copy, a near copy, a sample between a pair, and two far from everything."""
    train = _unit(
        torch.tensor(
            [
                [1.0, 0.0, 0.0],
                [0.98, 0.2, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.97, 0.25],
                [0.0, 0.0, 1.0],
                [-1.0, 0.0, 0.0],
            ]
        )
    )
    samples = _unit(
        torch.tensor(
            [
                [1.0, 0.0, 0.0],  # exact copy of 0
                [0.0, 0.01, 1.0],  # near copy of 4 (a loner)
                [0.99, 0.1, 0.0],  # between 0 and 1
                [-0.6, -0.6, -0.5],  # far from all
                [0.5, -0.5, -0.7],  # far from all
            ]
        )
    )
    return train, samples


def test_authenticity_equals_dgm_eval_authpct_on_a_hand_made_case():
    train, samples = _hand_made_case()
    found = nearest_neighbours(samples, unit_rows(train, "train", torch.float64))
    own = nearest_neighbours(
        train[found.indices[:, 0]],
        unit_rows(train, "train", torch.float64),
        exclude=found.indices[:, 0],
    )
    ours = 100 * float(authenticity(found.distances[:, 0], own.distances[:, 0]))
    assert ours == pytest.approx(_dgm_eval_authpct(train, samples), abs=1e-12)
    flags = own.distances[:, 0] < found.distances[:, 0]
    assert flags[:3].tolist() == [False, False, False]  # the copy, the near copy, in-between


def test_nearest_neighbours_match_the_full_similarity_matrix_whatever_the_chunk_size():
    generator = torch.Generator().manual_seed(0)
    reference = unit_rows(torch.randn(300, 16, generator=generator), "reference")
    samples = torch.randn(70, 16, generator=generator)
    full = _unit(samples) @ _unit(reference).T
    top = full.topk(5, dim=1)
    results = [nearest_neighbours(samples, reference, 5, chunk_size=c) for c in (1, 7, None)]
    for found in results:
        assert torch.equal(found.indices, top.indices)
        torch.testing.assert_close(found.similarities, top.values, atol=1e-6, rtol=0)
        assert torch.equal(found.similarities, results[0].similarities)  # chunking-independent
        assert torch.equal(found.distances, results[0].distances)
    distances = torch.cdist(_unit(samples), _unit(reference)).gather(1, top.indices)
    torch.testing.assert_close(results[0].distances, distances, atol=1e-6, rtol=0)


def test_copy_rate_l2_memorization_and_quantiles_follow_their_definitions():
    generator = torch.Generator().manual_seed(1)
    reference = torch.randn(40, 8, generator=generator, dtype=torch.float64)
    samples = torch.cat(
        [reference[[3, 3, 9]], torch.randn(7, 8, generator=generator, dtype=torch.float64)]
    )
    found = nearest_neighbours(samples, unit_rows(reference, "r", torch.float64), 10)
    similarities = found.similarities[:, 0]
    assert float(copy_rate(similarities, 0.95)) == pytest.approx(0.3)
    assert found.indices[:3, 0].tolist() == [3, 3, 9]
    brute = torch.cdist(_unit(samples), _unit(reference)).sort(dim=1).values[:, :10]
    ratio = brute[:, 0] / (0.5 * brute.mean(dim=1))
    torch.testing.assert_close(calibrated_l2(found.distances), ratio, atol=1e-9, rtol=1e-9)
    assert float(l2_memorization(found.distances)) == float((ratio < 1 / 3).double().mean())
    scores = memorization_scores(
        similarities, found.distances, torch.ones(10, dtype=torch.float64), threshold=0.95
    )
    assert float(scores["nn_similarity_q50"]) == float(similarities.quantile(0.5))
    assert float(scores["nn_similarity_q99"]) == float(similarities.quantile(0.99))
    expected = float((found.distances[:, 0] > 1).double().mean())  # authentic: 1 < d_1
    assert float(scores["authenticity"]) == expected


def test_quantile_keys_name_the_percent():
    assert [quantile_key(q) for q in (0.5, 0.9, 0.99, 0.999, 0.05)] == [
        "nn_similarity_q50",
        "nn_similarity_q90",
        "nn_similarity_q99",
        "nn_similarity_q999",
        "nn_similarity_q05",
    ]


def test_bad_inputs_name_the_argument():
    reference = unit_rows(torch.eye(3), "reference")
    with pytest.raises(ValueError, match=r"`k` must be at most .*\(3\), got 4"):
        nearest_neighbours(torch.ones(1, 3), reference, 4)
    with pytest.raises(ValueError, match="feature dimension 3"):
        nearest_neighbours(torch.ones(1, 4), reference)
    with pytest.raises(ValueError, match=r"`samples` must have no zero row.*row 1"):
        nearest_neighbours(torch.tensor([[1.0, 0, 0], [0.0, 0, 0]]), reference)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from diversity_callbacks.functional.memorization import nearest_neighbours, unit_rows
    torch.manual_seed(0)
    reference = unit_rows(torch.randn(100_000, 64), "reference")
    samples = torch.randn(1_000, 64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = nearest_neighbours(samples, reference, 1, chunk_size=256)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024, found.indices.shape[0])
    """
)


@pytest.mark.timeout(120)
def test_a_100k_reference_is_searched_in_chunk_times_m_memory():
    # A fresh process: ru_maxrss is the peak of this search alone. The n x m similarity matrix
    # would take 1000 * 100k * 4 B = 400 MB; one 256-row block takes 102 MB.
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, check=True
    )
    grown, rows = map(int, done.stdout.split())
    assert rows == 1_000
    assert grown < 250 * 2**20, f"peak grew by {grown / 2**20:.0f} MiB"


def _float64_search(samples: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Every pair's float64 cosine, one reduction per pair (duplicate rows tie exactly), and
    the ``k`` largest per sample, ties to the lower row."""
    full = (_unit(samples)[:, None, :] * reference.to(torch.float64)[None]).sum(dim=2)
    return full.clamp(-1.0, 1.0).argsort(dim=1, descending=True, stable=True)[:, :k]


@pytest.mark.parametrize("k", [1, 7, 50])
def test_near_ties_and_duplicates_within_float32_error_are_ranked_in_float64(k: int):
    # 120 variants of one row, a few float32 ulps apart (float64 cosines ~1e-10 apart, below
    # the float32 search's ~1e-7 rounding), some of them exact duplicates, among 600 others:
    # the k-th nearest falls inside the group of near-ties.
    generator = torch.Generator().manual_seed(4)
    base = unit_rows(torch.randn(1, 64, generator=generator), "base")
    variants = base.repeat(120, 1)
    for row in range(0, 120, 2):  # odd rows stay exact duplicates of the base
        columns = torch.randint(64, (3,), generator=generator)
        steps = torch.where(torch.rand(3, generator=generator) < 0.5, -1.0, 1.0).mul(9.0)
        variants[row, columns] = torch.nextafter(variants[row, columns], steps)
    others = unit_rows(torch.randn(600, 64, generator=generator), "others")
    reference = torch.cat([others[:300], variants, others[300:]])
    samples = base.repeat(6, 1) + 1e-3 * torch.randn(6, 64, generator=generator)
    samples[0] = base[0]
    found = nearest_neighbours(samples, reference, k, chunk_size=4)
    expected = _float64_search(samples, reference, k)
    assert torch.equal(found.indices, expected)
    full = (_unit(samples)[:, None, :] * reference.to(torch.float64)[None]).sum(dim=2)
    torch.testing.assert_close(
        found.similarities, full.clamp(-1, 1).gather(1, expected), atol=1e-15, rtol=0
    )


def test_an_excluded_row_is_never_its_own_neighbour_even_among_duplicates():
    generator = torch.Generator().manual_seed(6)
    reference = unit_rows(torch.randn(40, 8, generator=generator), "reference")
    reference[[5, 17, 30]] = reference[9].clone()
    rows = torch.tensor([9, 5, 30, 2])
    found = nearest_neighbours(reference[rows], reference, 1, exclude=rows)
    assert found.indices[:, 0].tolist()[:3] == [5, 9, 5]  # the lowest other duplicate
    assert float(found.distances[:3, 0].max()) < 1e-6  # float32 rows normalised again
    assert int(found.indices[3, 0]) != 2


def test_the_search_runs_at_full_float32_precision_and_restores_the_setting():
    generator = torch.Generator().manual_seed(8)
    reference = unit_rows(torch.randn(200, 16, generator=generator), "reference")
    samples = torch.randn(9, 16, generator=generator)
    exact = nearest_neighbours(samples, reference, 5)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        found = nearest_neighbours(samples, reference, 5)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(found.indices, exact.indices)
    assert torch.equal(found.similarities, exact.similarities)
