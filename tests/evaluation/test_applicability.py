"""The one decision of which optional metrics apply, with the reasons of those that do not."""

from __future__ import annotations

import pytest

from diversity_callbacks import ConditionSet, DiversityEvaluator, FunctionEmbedder
from diversity_callbacks.evaluation import applicable_metrics
from diversity_callbacks.evaluation.applicability import SWITCHES, embeds_texts


class Texts:
    def embed_samples(self, samples):
        return samples

    def embed_texts(self, prompts):
        raise AssertionError("not called by the decision")


PROMPTS = ConditionSet.from_arguments(prompts=["a", "b"])
CLASSES = ConditionSet.from_arguments(class_labels=[0, 1])
NONE = ConditionSet.from_arguments()


def codes(choices, name):
    return [requirement.code for requirement in choices[name].unmet]


def on(choices):
    return [name for name, choice in choices.items() if choice.on]


def test_everything_applies_to_repeated_prompts_with_a_text_embedder():
    assert on(applicable_metrics(PROMPTS, 2, embedder=Texts())) == list(SWITCHES)
    assert on(applicable_metrics(PROMPTS, [1, 3], embedder=Texts())) == list(SWITCHES)


@pytest.mark.parametrize(
    ("conditions", "counts", "embedder", "kernel", "expected"),
    [
        (PROMPTS, [1, 1], Texts(), "cosine", {"per_condition": ["repeated"], "sce": ["repeated"]}),
        (
            PROMPTS,
            2,
            lambda s: s,
            "cosine",
            {
                "sce": ["text_embedder"],
                "clip_score": ["text_embedder"],
                "cond_vendi": ["text_embedder"],
                "info_vendi": ["text_embedder"],
            },
        ),
        (
            NONE,
            [4],
            lambda s: s,
            "linear",
            {
                "per_condition": ["conditions"],
                "sce": ["prompts", "text_embedder"],
                "clip_score": ["prompts", "text_embedder"],
                "cond_vendi": ["conditions", "text_embedder", "kernel"],
                "info_vendi": ["conditions", "text_embedder", "kernel"],
            },
        ),
        (
            CLASSES,
            3,
            lambda s: s,
            "gaussian",
            {"sce": ["prompts", "text_embedder"], "clip_score": ["prompts", "text_embedder"]},
        ),
    ],
)
def test_each_unmet_requirement_is_named_by_its_code(
    conditions, counts, embedder, kernel, expected
):
    choices = applicable_metrics(conditions, counts, embedder=embedder, vendi_kernel=kernel)
    assert {name: codes(choices, name) for name in SWITCHES if codes(choices, name)} == expected
    assert on(choices) == [name for name in SWITCHES if name not in expected]


def test_a_switch_decides_what_applies_and_true_where_it_does_not_is_refused_with_the_reason():
    choices = applicable_metrics(
        PROMPTS, 1, embedder=lambda s: s, requested={"per_condition": False, "sce": True}
    )
    assert choices["per_condition"].requested is False and not choices["per_condition"].on
    assert choices["sce"].refused and not choices["clip_score"].refused  # None never refuses
    assert choices["sce"].error() == (
        "`sce=True` needs `samples_per_condition` >= 2 (with one sample per prompt the prompts "
        "explain every sample; got 1) and an embedder with embed_texts(prompts) (got function)"
    )
    counted = applicable_metrics(NONE, [5], embedder=lambda s: s, requested={"per_condition": True})
    assert counted["per_condition"].error() == (
        "`per_condition=True` needs prompts or class labels with 2 or more samples in a condition "
        "(the within-condition diversity of one sample is always 1), got 'none' conditions with "
        "at most 5 samples per condition"
    )
    with pytest.raises(ValueError, match=r"takes the switches .* got \['spectrum'\]"):
        applicable_metrics(PROMPTS, 2, requested={"spectrum": True})


def test_the_default_embedder_embeds_texts_and_a_function_embedder_only_with_text_fn():
    assert embeds_texts(None) and embeds_texts(Texts()) and not embeds_texts(lambda s: s)
    assert not embeds_texts(FunctionEmbedder(lambda x: x))
    assert embeds_texts(FunctionEmbedder(lambda x: x, text_fn=lambda p: p))


def test_the_evaluator_keeps_what_was_asked_apart_from_what_is_computed():
    evaluator = DiversityEvaluator(["a", "b"], 2, embedder=lambda s: s, value_range=None)
    assert evaluator.choices["sce"].requested is None and evaluator.sce is False
    assert "sce" not in evaluator.metrics and "per_prompt_vendi" in evaluator.metrics
    # the default CLIP embedder is not built yet, and it embeds texts: decided at construction
    default = DiversityEvaluator(["a", "b"], 2, sce=True)
    assert default.sce and "sce" in default.metrics and default.embedder is None
