"""Conditional-Vendi and Information-Vendi against a float64 NumPy version of the definition.

The reference below is written from the paper (Jalali, Ospanov, Gohari & Farnia, arXiv
2411.02817): n x n kernels, the Hadamard product, ``numpy.linalg.eigvalsh``, Rényi entropies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diversity_callbacks.functional import (
    Kernel,
    conditional_vendi_score,
    information_vendi_score,
    vendi_score,
)

ORDERS = [0.5, 1, 2, "inf"]
KERNELS = {
    "cosine": {},
    "gaussian": {"kernel": "gaussian", "sigma": 1.5},
}
CONDITION_KERNELS = {
    "cosine": {},
    "gaussian": {"condition_kernel": "gaussian", "condition_sigma": 0.8},
}


def _kernel(rows: np.ndarray, name: str, sigma: float | None) -> np.ndarray:
    if name == "cosine":
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        return unit @ unit.T
    squared = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    return np.exp(-squared / (2 * sigma**2))


def _entropy(kernel: np.ndarray, q: float) -> float:
    eigenvalues = np.linalg.eigvalsh(kernel / kernel.shape[0])
    eigenvalues = eigenvalues[
        eigenvalues > kernel.shape[0] * np.finfo(float).eps * eigenvalues.max()
    ]
    eigenvalues = eigenvalues / eigenvalues.sum()
    if q == 1:
        return float(-(eigenvalues * np.log(eigenvalues)).sum())
    if math.isinf(q):
        return float(-np.log(eigenvalues.max()))
    return float(np.log((eigenvalues**q).sum()) / (1 - q))


def reference(x, t=None, ids=None, *, q, kernel="cosine", sigma=None, condition_kernel="cosine",
              condition_sigma=None):  # fmt: skip
    """(Conditional-Vendi, Information-Vendi) by the paper's definition."""
    q = math.inf if q == "inf" else float(q)
    k_x = _kernel(x.double().numpy(), kernel, sigma)
    if ids is not None:
        labels = ids.numpy()
        k_t = (labels[:, None] == labels[None, :]).astype(float)
    else:
        k_t = _kernel(t.double().numpy(), condition_kernel, condition_sigma)
    h_x, h_t, h_joint = _entropy(k_x, q), _entropy(k_t, q), _entropy(k_x * k_t, q)
    return math.exp(h_joint - h_t), math.exp(h_x + h_t - h_joint)


def _modes(counts: list[int], dim: int, generator: torch.Generator) -> torch.Tensor:
    """Samples that are noisy copies of a few modes: ``counts[m]`` samples of mode m."""
    centres = torch.randn(len(counts), dim, generator=generator, dtype=torch.float64)
    return torch.cat(
        [c + 0.05 * torch.randn(n, dim, generator=generator, dtype=torch.float64)
         for c, n in zip(centres, counts, strict=True)]
    )  # fmt: skip


def _orthogonal_prompts(generator):
    """Four prompts with orthogonal text embeddings, 3-8 samples each, 1-4 image modes each."""
    shapes = [[3], [2, 2, 2], [2, 3, 1, 2], [1, 4]]
    images = torch.cat([_modes(modes, 12, generator) for modes in shapes])
    sizes = [sum(modes) for modes in shapes]
    texts = torch.cat(
        [torch.eye(4, dtype=torch.float64)[p].expand(n, 4) for p, n in enumerate(sizes)]
    )
    return images, texts, sizes


def _assert_matches_reference(x, conditions, q, kwargs):
    expected_cond, expected_info = reference(x, q=q, **conditions, **kwargs)
    given = {
        ("condition_ids" if "ids" in conditions else "condition_features"): next(
            iter(conditions.values())
        )
    }
    cond = conditional_vendi_score(x, q=q, **given, **kwargs)
    info = information_vendi_score(x, q=q, **given, **kwargs)
    assert cond.dtype == torch.float64
    assert float(cond) == pytest.approx(expected_cond, rel=1e-9)
    assert float(info) == pytest.approx(expected_info, rel=1e-9)


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("condition_kernel", CONDITION_KERNELS)
def test_orthogonal_prompts_match_the_definition(q, kernel, condition_kernel):
    images, texts, _ = _orthogonal_prompts(torch.Generator().manual_seed(0))
    kwargs = {**KERNELS[kernel], **CONDITION_KERNELS[condition_kernel]}
    _assert_matches_reference(images, {"t": texts}, q, kwargs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_orthogonal_prompts_give_the_weighted_geometric_mean_of_per_prompt_scores(kernel):
    images, texts, sizes = _orthogonal_prompts(torch.Generator().manual_seed(1))
    image_kernel = Kernel("gaussian", sigma=1.5) if kernel == "gaussian" else Kernel("cosine")
    per_prompt = [vendi_score(part, kernel=image_kernel) for part in images.split(sizes)]
    expected = math.exp(
        sum(n / sum(sizes) * math.log(float(s)) for n, s in zip(sizes, per_prompt, strict=True))
    )
    score = conditional_vendi_score(images, condition_features=texts, **KERNELS[kernel])
    assert float(score) == pytest.approx(expected, rel=1e-9)
    # not the unweighted arithmetic mean of the per-prompt scores
    assert float(score) != pytest.approx(float(torch.stack(per_prompt).mean()), rel=1e-2)


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_paraphrased_prompts_each_collapsed_to_its_own_image_score_two(q, kernel):
    generator = torch.Generator().manual_seed(2)
    text = torch.randn(16, dtype=torch.float64, generator=generator)
    paraphrases = torch.stack(
        [text, text + 1e-4 * torch.randn(16, dtype=torch.float64, generator=generator)]
    )
    texts = paraphrases.repeat_interleave(4, dim=0)
    images = 20 * torch.eye(2, dtype=torch.float64).repeat_interleave(4, dim=0)  # far apart
    _assert_matches_reference(images, {"t": texts}, q, KERNELS[kernel])
    score = conditional_vendi_score(images, condition_features=texts, q=q, **KERNELS[kernel])
    assert float(score) == pytest.approx(2.0, rel=1e-3)  # the per-prompt mean says 1


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("condition_kernel", CONDITION_KERNELS)
def test_one_sample_per_prompt_still_measures(q, condition_kernel):
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    # related prompts (CLIP text embeddings of real prompts have cosines near 0.75)
    texts = torch.randn(6, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(
        20, 6, generator=generator, dtype=torch.float64
    )
    _assert_matches_reference(images, {"t": texts}, q, CONDITION_KERNELS[condition_kernel])
    score = conditional_vendi_score(
        images, condition_features=texts, q=q, **CONDITION_KERNELS[condition_kernel]
    )
    assert float(score) > 1.1  # a per-prompt score is 1 for every single sample


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_class_labels_use_the_label_kernel(q, kernel):
    generator = torch.Generator().manual_seed(4)
    images = _modes([3, 5, 2, 6, 4], 10, generator)
    labels = torch.tensor([2, 2, 0, 0, 0, 0, 7, 7, 7, 7, 2, 2, 0, 0, 0, 7, 7, 7, 2, 2])
    _assert_matches_reference(images, {"ids": labels}, q, KERNELS[kernel])
    # one-hot condition embeddings under the cosine kernel are the same label kernel
    one_hot = torch.nn.functional.one_hot(labels).double()
    by_features = conditional_vendi_score(
        images, condition_features=one_hot, q=q, **KERNELS[kernel]
    )
    by_labels = conditional_vendi_score(images, condition_ids=labels, q=q, **KERNELS[kernel])
    assert float(by_labels) == pytest.approx(float(by_features), rel=1e-9)


def test_a_sequence_of_orders_gives_a_dict_like_vendi_score():
    images, texts, _ = _orthogonal_prompts(torch.Generator().manual_seed(5))
    scores = conditional_vendi_score(images, condition_features=texts, q=[1, 2, "inf"])
    assert list(scores) == ["q1", "q2", "qinf"]
    assert float(scores["q2"]) == pytest.approx(
        float(conditional_vendi_score(images, condition_features=texts, q=2)), rel=1e-12
    )
    assert float(scores["q1"]) >= float(scores["q2"]) >= float(scores["qinf"])


def test_samples_that_ignore_the_condition_carry_no_information():
    generator = torch.Generator().manual_seed(6)
    images = torch.randn(6, 5, generator=generator, dtype=torch.float64).repeat(3, 1)
    labels = torch.arange(3).repeat_interleave(6)  # every class gets the same six images
    info = information_vendi_score(images, condition_ids=labels, q=[1, 2])
    assert float(info["q1"]) == pytest.approx(1.0, rel=1e-9)
    assert float(info["q2"]) == pytest.approx(1.0, rel=1e-9)


# The streaming path: exact where the joint's feature map is exact; random features otherwise.


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_streaming_with_labels_and_cosine_tensor_products_is_exact(kernel):
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    texts = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=generator)
    for conditions in ({"condition_ids": labels}, {"condition_features": texts}):
        if kernel == "gaussian" and "condition_features" in conditions:
            continue
        options = {"kernel": "gaussian", "sigma": 2.0} if kernel == "gaussian" else {}
        for score in (conditional_vendi_score, information_vendi_score):
            exact = score(images, q=ORDERS, **conditions, **options)
            # with labels and a cosine image kernel every feature map is exact; a Gaussian
            # image kernel is then approximated by random features in the marginal and the joint
            streamed = score(images, q=ORDERS, num_features=4096 if kernel == "gaussian" else 8,
                             **conditions, **options)  # fmt: skip
            rel = 3e-2 if kernel == "gaussian" else 1e-9
            for key in exact:
                assert float(streamed[key]) == pytest.approx(float(exact[key]), rel=rel), key


def test_streaming_gaussian_product_is_one_gaussian_on_the_concatenation():
    """Stated tolerance: 2% at q = 1, 2 with 4096 random frequencies (n = 200)."""
    generator = torch.Generator().manual_seed(8)
    images = _modes([40, 60, 50, 50], 16, generator)
    texts = torch.randn(4, 8, generator=generator, dtype=torch.float64).repeat_interleave(
        torch.tensor([40, 60, 50, 50]), dim=0
    ) + 0.1 * torch.randn(200, 8, generator=generator, dtype=torch.float64)
    options = {"kernel": "gaussian", "sigma": 2.0, "condition_kernel": "gaussian",
               "condition_sigma": 3.0}  # fmt: skip
    for score in (conditional_vendi_score, information_vendi_score):
        exact = score(images, condition_features=texts, q=[1, 2], **options)
        streamed = score(images, condition_features=texts, q=[1, 2], num_features=4096, **options)
        for key in exact:
            assert float(streamed[key]) == pytest.approx(float(exact[key]), rel=2e-2), key


def test_streaming_tensor_products_that_are_too_large_are_refused():
    images, texts = torch.randn(5, 100), torch.randn(5, 100)
    with pytest.raises(ValueError, match="100 x 100 = 10000 features"):
        conditional_vendi_score(images, condition_features=texts, num_features=16)


# Errors and the 0.1 call.


def test_the_0_1_positional_call_names_the_per_condition_score():
    features, ids = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(TypeError, match=r"per_condition_vendi_score.*PerConditionVendiScore"):
        conditional_vendi_score(features, ids, 1.0)
    with pytest.raises(TypeError):
        information_vendi_score(features, ids)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "exactly one of `condition_features`.*got neither"),
        ({"condition_ids": torch.zeros(4, dtype=torch.long), "condition_features": torch.ones(4, 2)},
         ValueError, "got both"),
        ({"condition_ids": torch.zeros(4)}, TypeError, "`condition_ids` must be an integer"),
        ({"condition_ids": torch.zeros(3, dtype=torch.long)}, ValueError, r"shape \(4,\)"),
        ({"condition_features": torch.ones(3, 2)}, ValueError, "same number of rows"),
        ({"condition_features": torch.ones(4, 2), "kernel": "linear"}, ValueError,
         "`kernel` must be one of"),
        ({"condition_features": torch.ones(4, 2), "condition_kernel": "gaussian"}, ValueError,
         "`condition_sigma`"),
        ({"condition_ids": torch.zeros(4, dtype=torch.long), "condition_sigma": 1.0}, ValueError,
         "label kernel"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        conditional_vendi_score(torch.randn(4, 3), **kwargs)


def test_distinct_rows_that_project_alike_are_still_told_apart(monkeypatch):
    """Conditions are grouped by one projection, then checked: rows the projection cannot tell
    apart fall back to an exact row-wise grouping."""
    from diversity_callbacks.functional import conditional_vendi as module

    rows = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rows = torch.cat([rows, rows[:2]])
    distinct, inverse, counts = module.distinct_rows(rows)
    assert torch.equal(distinct[inverse], rows) and counts.tolist().count(2.0) == 2
    # a projection under which every row collides: the check must catch it
    group = module.unique_with_first
    monkeypatch.setattr(module, "unique_with_first", lambda values: group(0 * values))
    distinct, inverse, counts = module.distinct_rows(rows)
    assert torch.equal(distinct[inverse], rows)
    assert distinct.shape[0] == 5 and sorted(counts.tolist()) == [1.0, 1.0, 1.0, 2.0, 2.0]


def test_repeated_prompts_give_the_score_of_their_n_x_n_kernels():
    """The exact conditions' kernel is built on the distinct prompts, weighted by their counts."""
    generator = torch.Generator().manual_seed(9)
    images = torch.randn(24, 6, generator=generator, dtype=torch.float64)
    prompts = torch.randn(4, 5, generator=generator, dtype=torch.float64)[torch.arange(24) % 4]
    for kwargs in ({}, {"condition_kernel": "gaussian", "condition_sigma": 1.3}):
        for q in ORDERS:
            _assert_matches_reference(images, {"t": prompts}, q, kwargs)
