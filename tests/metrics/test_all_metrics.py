"""Every metric class through the shared harness (tests/helpers/metric_tester.py).

A new metric registers one entry in :data:`CASES`: how to build it, its functional form and
how to draw its inputs. ``test_every_public_metric_class_is_registered`` fails until it does.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from diversity_callbacks.functional import (
    Kernel,
    conditional_vendi_score,
    distinct_n,
    embedding_clip_score,
    information_vendi_score,
    ken_novelty,
    memorization_scores,
    nearest_neighbours,
    per_condition_vendi_score,
    quality_weighted_vendi_score,
    schur_complement_entropy,
    self_bleu,
    vendi_score,
)
from diversity_callbacks.functional.memorization import unit_moment, unit_rows
from diversity_callbacks.metrics import (
    ConditionalVendiScore,
    DistinctN,
    EmbeddingCLIPScore,
    InformationVendiScore,
    MemorizationScore,
    PerConditionVendiScore,
    QualityWeightedVendiScore,
    SchurComplementEntropy,
    SelfBLEU,
    VendiScore,
)
from tests.helpers.metric_tester import (
    CHECKS,
    ONE_PROCESS_CHECKS,
    MetricCase,
    assert_close,
    ddp_results,
    ddp_run,
    ddp_runs,
    expected,
    one_process,
    public_metric_classes,
)

ORDERS = [0.5, 1, 2, "inf"]
GAUSSIAN = {"kernel": Kernel("gaussian", sigma=3.0)}
RANDOM_FEATURES = {"kernel": Kernel("gaussian", sigma=3.0, num_features=32, seed=1)}
PAIRED_GAUSSIAN = {"kernel": Kernel("gaussian", sigma=2.0), "condition_kernel": "gaussian",
                   "condition_sigma": 1.5}  # fmt: skip
STREAMING = {**PAIRED_GAUSSIAN, "kernel": Kernel("gaussian", sigma=2.0, num_features=32)}
LABELS_STREAMING = {"kernel": Kernel("gaussian", sigma=2.0, num_features=16)}
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "red", "blue"]


# ---------------------------------------------------------------- input generators


def features(n: int, generator: torch.Generator, dim: int = 6) -> Tensor:
    return torch.randn(n, dim, generator=generator)


def samples(n: int, generator: torch.Generator) -> tuple[Tensor]:
    return (features(n, generator),)


def with_labels(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return features(n, generator), torch.randint(0, 4, (n,), generator=generator)


def with_conditions(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return features(n, generator), features(n, generator, dim=4)


def with_qualities(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    return features(n, generator), torch.rand(n, generator=generator) + 0.5


def image_prompt_pairs(num_prompts: int) -> Any:
    """Images that depend on their prompt (one of ``num_prompts``, repeated) plus noise, and
    the prompts; more than D_T / 2 distinct prompts fold the metric's prompt groups into its
    dense sums."""

    def inputs(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        prompts = 3 * torch.randn(num_prompts, 8, generator=generator)
        texts = prompts[torch.randint(0, num_prompts, (n,), generator=generator)]
        images = texts @ torch.randn(8, 8, generator=generator) / 3
        return images + torch.randn(n, 8, generator=generator), texts

    return inputs


def clip_pairs(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    images, texts = features(n, generator), features(n, generator)
    return images, texts, torch.randint(0, 3, (n,), generator=generator)


TRAINING_SET = torch.randn(16, 6, generator=torch.Generator().manual_seed(5))


def near_the_training_set(n: int, generator: torch.Generator) -> tuple[Tensor]:
    """Half near-copies of training rows, half new rows, shuffled."""
    copies = TRAINING_SET[torch.randint(0, 16, (n // 2,), generator=generator)]
    copies = copies + 0.05 * torch.randn(copies.shape, generator=generator)
    rows = torch.cat([copies, features(n - n // 2, generator)])
    return (rows[torch.randperm(n, generator=generator)],)


def texts(n: int, generator: torch.Generator) -> tuple[list[str]]:
    """Texts of 3 to 7 words from a small vocabulary (so that n-grams repeat)."""
    lengths = torch.randint(3, 8, (n,), generator=generator).tolist()
    words = [torch.randint(0, len(WORDS), (length,), generator=generator) for length in lengths]
    return ([" ".join(WORDS[i] for i in text) for text in words],)


# ---------------------------------------------------------------- functional forms


def per_condition_mean(features: Tensor, ids: Tensor) -> dict[str, Tensor]:
    table = per_condition_vendi_score(features, ids, q=[1, 2], num_conditions=4)
    return dict(zip(["q1", "q2"], table.nanmean(dim=0), strict=True))


def paired(score: Any, condition: str, **options: Any) -> Any:
    """The Conditional/Information-Vendi functional form, conditioned on labels or features."""

    def functional(features: Tensor, conditions: Tensor) -> Any:
        return score(features, q=ORDERS, **{condition: conditions}, **options)

    return functional


def schur(**options: Any) -> Any:
    def functional(images: Tensor, prompts: Tensor) -> dict[str, Tensor]:
        return schur_complement_entropy(images, prompts, **options)._asdict()

    return functional


def mean_clip_score(images: Tensor, texts: Tensor, ids: Tensor) -> Tensor:
    return embedding_clip_score(images, texts).mean()


def memorization(samples: Tensor) -> dict[str, Tensor]:
    """MemorizationScore(TRAINING_SET, k=3) by its functional parts, on all samples at once."""
    reference = unit_rows(TRAINING_SET, "reference", torch.float32)
    found = nearest_neighbours(samples, reference, k=3)
    own = torch.arange(reference.shape[0])
    nearest_other = nearest_neighbours(reference, reference, 1, exclude=own).distances[:, 0]
    scores = memorization_scores(
        found.similarities[:, 0],
        found.distances,
        nearest_other[found.indices[:, 0]],
        threshold=0.95,
    )
    mass, novelty = ken_novelty(unit_moment(samples), unit_moment(TRAINING_SET))
    scores["novel_mass"] = torch.tensor(mass, dtype=torch.float64)
    scores["ken_novelty"] = torch.tensor(novelty, dtype=torch.float64)
    return scores


# ---------------------------------------------------------------- the registry

CASES: dict[str, MetricCase] = {
    "vendi/cosine": MetricCase(
        lambda: VendiScore(q=ORDERS, kernel="cosine"),
        lambda x: vendi_score(x, q=ORDERS, kernel="cosine"),
        samples,
    ),
    "vendi/gaussian": MetricCase(
        lambda: VendiScore(q=ORDERS, **GAUSSIAN),
        lambda x: vendi_score(x, q=ORDERS, **GAUSSIAN),
        samples,
    ),
    "vendi/random_features": MetricCase(
        lambda: VendiScore(q=ORDERS, **RANDOM_FEATURES),
        lambda x: vendi_score(x, q=ORDERS, **RANDOM_FEATURES),
        samples,
    ),
    "per_condition_vendi": MetricCase(
        lambda: PerConditionVendiScore(num_conditions=4, q=[1, 2]), per_condition_mean, with_labels
    ),
    "conditional_vendi/labels": MetricCase(
        lambda: ConditionalVendiScore(q=ORDERS),
        paired(conditional_vendi_score, "condition_ids"),
        with_labels,
    ),
    "conditional_vendi/gaussian": MetricCase(
        lambda: ConditionalVendiScore(q=ORDERS, **PAIRED_GAUSSIAN),
        paired(conditional_vendi_score, "condition_features", **PAIRED_GAUSSIAN),
        with_conditions,
    ),
    "conditional_vendi/streaming": MetricCase(
        lambda: ConditionalVendiScore(q=ORDERS, **STREAMING),
        paired(conditional_vendi_score, "condition_features", **STREAMING),
        with_conditions,
    ),
    "conditional_vendi/streaming_labels": MetricCase(
        lambda: ConditionalVendiScore(q=ORDERS, **LABELS_STREAMING),
        paired(conditional_vendi_score, "condition_ids", **LABELS_STREAMING),
        with_labels,
    ),
    "information_vendi/labels": MetricCase(
        lambda: InformationVendiScore(q=ORDERS),
        paired(information_vendi_score, "condition_ids"),
        with_labels,
    ),
    "information_vendi/streaming": MetricCase(
        lambda: InformationVendiScore(q=ORDERS, **STREAMING),
        paired(information_vendi_score, "condition_features", **STREAMING),
        with_conditions,
    ),
    "schur/cosine": MetricCase(
        lambda: SchurComplementEntropy(kernel="cosine"),
        schur(kernel="cosine"),
        image_prompt_pairs(4),
    ),
    "schur/cosine_many_prompts": MetricCase(
        lambda: SchurComplementEntropy(kernel="cosine"),
        schur(kernel="cosine"),
        image_prompt_pairs(7),
    ),
    "schur/random_features": MetricCase(
        lambda: SchurComplementEntropy(**RANDOM_FEATURES),
        schur(**RANDOM_FEATURES),
        image_prompt_pairs(4),
    ),
    "clip_score": MetricCase(
        lambda: EmbeddingCLIPScore(num_conditions=3), mean_clip_score, clip_pairs
    ),
    "quality_vendi": MetricCase(
        lambda: QualityWeightedVendiScore(q=ORDERS, **GAUSSIAN),
        lambda x, quality: quality_weighted_vendi_score(x, quality, q=ORDERS, **GAUSSIAN),
        with_qualities,
    ),
    "memorization": MetricCase(
        lambda: MemorizationScore(TRAINING_SET, k=3), memorization, near_the_training_set
    ),
    "distinct_n": MetricCase(
        lambda: DistinctN(n=(1, 2, 3)),
        lambda t: {str(n): distinct_n(t, n) for n in (1, 2, 3)},
        texts,
    ),
    "self_bleu": MetricCase(SelfBLEU, self_bleu, texts),
}


def params(checks: tuple[str, ...]) -> list[Any]:
    """(case, check) pairs; a check a case is known to fail is a strict xfail with its reason."""
    return [
        pytest.param(
            name,
            check,
            id=f"{name}-{check}",
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail[check])]
            if check in case.xfail
            else [],
        )
        for name, case in CASES.items()
        for check in checks
    ]


def test_every_public_metric_class_is_registered():
    registered = {type(case.metric()) for case in CASES.values()}
    missing = public_metric_classes() - registered
    assert not missing, f"register {sorted(c.__name__ for c in missing)} in CASES"


# torchmetrics counts updates, not merges: a metric that only merged states warns at compute.
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric .* was called before")
@pytest.mark.parametrize(("name", "check"), params(ONE_PROCESS_CHECKS))
def test_one_process_equals_the_functional_form(name: str, check: str):
    case = CASES[name]
    for what, result, reference in one_process(case, check):
        assert_close(result, reference, case.rtol, case.atol, f"{name}: {what}")


def _on_ranks(rank: int, world_size: int, runs: list[str], folder: str) -> None:
    ddp_results(rank, world_size, CASES, runs, folder)


@pytest.fixture(scope="module")
def ranks() -> dict[str, Any]:
    return ddp_run(_on_ranks, ddp_runs(CASES))


@pytest.mark.slow  # two processes: their start-up is most of the harness's time
@pytest.mark.timeout(600)  # one launch, and one more after each run that kills it
@pytest.mark.parametrize(("name", "check"), params(CHECKS[len(ONE_PROCESS_CHECKS) :]))
def test_two_gloo_ranks_equal_the_functional_form(ranks: dict[str, Any], name: str, check: str):
    case, key = CASES[name], f"{name}/{check.removeprefix('ddp_')}"
    reference = expected(case)
    assert not isinstance(ranks[key], str), f"{key}: {ranks[key]}"
    for rank, result in enumerate(ranks[key]):
        assert_close(result, reference, case.rtol, case.atol, f"{key} on rank {rank}")
