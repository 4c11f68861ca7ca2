"""The evaluator's options as one value, and its kernels as Kernel values (the flat 0.1
arguments still work, with a FutureWarning, and give the same numbers)."""

from __future__ import annotations

import warnings

import pytest
import torch

from diversity_callbacks import (
    ConditionSet,
    DiversityEvaluator,
    EvaluatorOptions,
    Kernel,
    evaluate_existing,
)
from diversity_callbacks.evaluation.options import kernel_settings

ROWS = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
IDS = [0] * 6 + [1] * 6


class Texts:
    def embed_samples(self, samples):
        return samples

    def embed_texts(self, prompts):
        return torch.eye(5, dtype=torch.float64)[[ord(p[0]) - ord("a") for p in prompts]]


def scores(**options) -> dict[str, float]:
    evaluator = DiversityEvaluator(["a", "b"], 6, embedder=Texts(), value_range=None, **options)
    result = evaluate_existing(evaluator, [(ROWS, IDS)], progress=False)
    return {k: v for k, v in result.scalars.items() if not k.endswith("eval_seconds")}


def test_a_kernel_value_its_text_and_the_flat_0_1_arguments_give_the_same_numbers():
    kernel = Kernel("gaussian", sigma=2.0, num_features=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        by_value = scores(vendi_kernel=kernel)
        assert scores(vendi_kernel="gaussian:sigma=2.0,features=64") == by_value
    with pytest.warns(FutureWarning, match=r"`vendi_sigma`, `vendi_num_features` is deprecated"):
        flat = scores(vendi_kernel="gaussian", vendi_sigma=2.0, vendi_num_features=64)
    assert flat == by_value
    assert {"diversity/per_prompt_vendi_q1", "diversity/cond_vendi_q1", "diversity/sce"} <= set(
        flat
    )


def test_the_kernel_settings_keep_the_0_1_names_so_that_histories_resume():
    evaluator = DiversityEvaluator(["a"], 2, vendi_kernel=Kernel("gaussian", sigma=3.0))
    assert evaluator.kernel_kwargs == {"kernel": "gaussian", "sigma": 3.0, "num_features": None}
    assert DiversityEvaluator(["a"]).kernel_kwargs == {
        "kernel": "cosine",
        "sigma": None,
        "num_features": None,
    }
    seeded = kernel_settings(Kernel("gaussian", sigma=1.0, num_features=8, seed=3))
    assert seeded == {"kernel": "gaussian", "sigma": 1.0, "num_features": 8, "seed": 3}


def test_the_entropy_takes_its_kernel_as_sce_kernel_or_in_sce_kwargs():
    kernel = Kernel("gaussian", sigma=1.5, num_features=32)
    assert scores(sce_kernel=kernel) == scores(sce_kwargs={"kernel": kernel})
    assert scores(sce_kernel=kernel)["diversity/sce"] != scores()["diversity/sce"]
    with pytest.raises(TypeError, match=r"as `sce_kernel` or as `sce_kwargs\['kernel'\]`"):
        DiversityEvaluator(["a"], 2, sce_kernel=kernel, sce_kwargs={"kernel": "cosine"})


def test_bad_kernels_are_refused_in_the_evaluators_argument_names():
    with pytest.raises(ValueError, match=r"invalid Vendi kernel options \(vendi_kernel='rbf'"):
        DiversityEvaluator(["a"], vendi_kernel="rbf")
    with pytest.raises(TypeError, match=r"give the settings in `vendi_kernel`, not also"):
        DiversityEvaluator(["a"], vendi_kernel=Kernel("gaussian", sigma=1.0), vendi_sigma=2.0)


def test_options_are_one_value_the_evaluator_and_for_existing_share():
    options = EvaluatorOptions(embedder=Texts(), value_range=None, vendi_kernel="linear")
    conditions = ConditionSet.from_arguments(prompts=["a", "b"])
    existing = DiversityEvaluator.for_existing(conditions, [6, 6], options)
    assert existing.vendi_kernel == Kernel("linear") and existing.options is options
    with pytest.raises(TypeError, match=r"DiversityEvaluator\(\) got an unexpected keyword"):
        DiversityEvaluator(["a"], vendi_kernal="linear")
