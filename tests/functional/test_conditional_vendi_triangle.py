"""The exact path with a Gaussian samples' kernel and prompt embeddings, which builds only the
lower triangle of the joint kernel and multiplies the prompts' kernel into it by row blocks,
against the definition with full float64 matrices and ``torch.linalg.eigvalsh``.

300 rows is not a multiple of the 128-row blocks, so the last, short block is covered; the
prompts repeat in a shuffled order, so every block gathers rows of several prompts.
"""

from __future__ import annotations

import math

import pytest
import torch

import diversity_callbacks.functional.conditional_vendi as conditional_vendi
from diversity_callbacks.functional.conditional_vendi import (
    LowerTriangle,
    conditional_vendi_score,
    information_vendi_score,
    paired_scores,
)
from diversity_callbacks.functional.spectrum import order_key, parse_order

ORDERS = [1, 2, "inf"]
SIGMA, CONDITION_SIGMA = 3.0, 1.2


def _gaussian(rows: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-torch.cdist(rows, rows).square() / (2 * sigma**2))


def _entropy(kernel: torch.Tensor, q: float) -> float:
    """``H_q`` of the eigenvalues of ``K / n``, round-off (as the package's tolerance) dropped."""
    eigenvalues = torch.linalg.eigvalsh(kernel / kernel.shape[0])
    eigenvalues = eigenvalues[eigenvalues > kernel.shape[0] * 2.0**-52 * eigenvalues.max()]
    p = eigenvalues / eigenvalues.sum()
    if q == 1:
        return float(-(p * p.log()).sum())
    if math.isinf(q):
        return float(-p.max().log())
    return float((p**q).sum().log() / (1 - q))


def _definition(x: torch.Tensor, t: torch.Tensor, q: float) -> tuple[float, float]:
    """(Conditional-Vendi, Information-Vendi): ``exp(H_q(K_X o K_T / n) - H_q(K_T / n))`` and
    ``exp(H_q(K_X / n) + H_q(K_T / n) - H_q(K_X o K_T / n))``, every kernel n x n."""
    image, condition = _gaussian(x, SIGMA), _gaussian(t, CONDITION_SIGMA)
    joint = _entropy(image * condition, q)
    conditional = _entropy(condition, q)
    return math.exp(joint - conditional), math.exp(_entropy(image, q) + conditional - joint)


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(22)
    prompts = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    which = torch.randint(0, 7, (300,), generator=generator)
    # each prompt's samples around their own centre: the prompts explain part of the diversity
    centres = 3 * torch.randn(7, 6, generator=generator, dtype=torch.float64)
    x = centres[which] + torch.randn(300, 6, generator=generator, dtype=torch.float64)
    return x, prompts[which]


@pytest.mark.parametrize("q", ORDERS)
def test_triangle_path_matches_the_definition(pairs, q, monkeypatch):
    x, t = pairs
    seen = []

    def spy(grams, orders, tolerance):
        seen.append({name: type(gram) for name, gram in grams.items()})
        return paired_scores(grams, orders, tolerance)

    monkeypatch.setattr(conditional_vendi, "paired_scores", spy)
    options = dict(condition_features=t, q=q, kernel="gaussian", sigma=SIGMA,
                   condition_kernel="gaussian", condition_sigma=CONDITION_SIGMA)  # fmt: skip
    conditional = conditional_vendi_score(x, **options)
    information = information_vendi_score(x, **options)
    expected = _definition(x, t, parse_order(q))
    assert conditional.item() == pytest.approx(expected[0], rel=1e-10)
    assert information.item() == pytest.approx(expected[1], rel=1e-10)
    # the triangle path was the one measured (the joint kernel, and the samples' kernel too)
    assert seen[0]["joint"] is LowerTriangle
    assert seen[1]["joint"] is LowerTriangle and seen[1]["image"] is LowerTriangle
    assert conditional.item() > 1.5 and information.item() > 1.5  # neither score degenerate


@pytest.mark.parametrize("q", ORDERS)
def test_a_lower_triangle_ignores_what_lies_above_its_diagonal(pairs, q):
    x, _ = pairs
    kernel = _gaussian(x, SIGMA)
    junk = torch.rand(300, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    order = parse_order(q)
    one = {"condition": torch.ones(1, 1, dtype=torch.float64)}  # a single prompt: VS_q(K_T) = 1
    for matrix in (kernel.tril() + junk.triu(1), (kernel.tril() + junk.triu(1)).T.contiguous().T):
        got = paired_scores({**one, "joint": LowerTriangle(matrix)}, [order], None)
        expected = math.exp(_entropy(kernel, order))
        assert got[order_key(order)].item() == pytest.approx(expected, rel=1e-10)
