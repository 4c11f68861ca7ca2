"""The conditions (what samples are conditioned on) apart from the sampling plan (how a
generator is sampled on them), the 0.1 EvaluationSet that joins them, sample seeds and prompts
read from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diversity_callbacks import DiversityCallback
from diversity_callbacks.evaluation import ConditionSet, EvaluationSet, SamplingPlan, sample_seed
from diversity_callbacks.evaluation.conditions import share_of
from tests.helpers.callback import make_callback

CPU = torch.device("cpu")


def test_conditions_have_no_plan_and_give_what_the_generator_receives():
    prompts = ConditionSet.from_arguments(prompts=["a cat", "a dog"])
    assert (prompts.kind, prompts.values, prompts.names) == (
        "prompt",
        ("a cat", "a dog"),
        ("a cat", "a dog"),
    )
    assert not hasattr(prompts, "samples_per_condition") and not hasattr(prompts, "seed")
    assert prompts.values_for([1, 0, 1], CPU) == ["a dog", "a cat", "a dog"]
    classes = ConditionSet.from_arguments(class_labels={"goldfish": 1, "tabby cat": 281})
    assert classes.values_for([1, 1], CPU).tolist() == [281, 281]
    assert classes.names == ("goldfish", "tabby cat") and classes.describe([0, 1]) == (
        "classes 'goldfish', 'tabby cat'"
    )
    none = ConditionSet.from_arguments()
    assert (none.kind, none.num_conditions, none.is_conditional) == ("none", 1, False)
    assert none.values_for([0, 0], CPU) is None
    with pytest.raises(ValueError, match=r"at most one of `prompts`.*got both"):
        ConditionSet.from_arguments(prompts=["a"], class_labels=[1])


def test_the_plan_numbers_seeds_shards_and_batches_the_samples_of_its_conditions():
    conditions = ConditionSet.from_arguments(prompts=["a", "b", "c"])
    plan = SamplingPlan(conditions, samples_per_condition=2, seed=5)
    assert plan.num_samples == 6 and [plan.condition_index(i) for i in range(6)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert plan.conditions_for([3, 4], CPU) == ["b", "c"]
    assert plan.condition_ids([1, 5], CPU).tolist() == [0, 2]
    assert [plan.shard(r, 4) for r in range(4)] == [share_of(6, r, 4) for r in range(4)]
    assert plan.batches(1, 2, 2) == [range(3, 5), range(5, 6)]
    first = plan.generators([4], CPU)[0]
    assert torch.equal(
        torch.randn(3, generator=first),
        torch.randn(3, generator=torch.Generator().manual_seed(sample_seed(5, 4))),
    )
    assert plan.describe(range(6)) == "prompts 'a', 'b', 'c'"


def test_the_digest_is_the_conditions_alone_and_the_0_1_one_for_prompts():
    """0.1 checkpoints name the callback's state by this digest: it must not change."""
    conditions = ConditionSet.from_arguments(prompts=["a", "b"])
    plans = [EvaluationSet(conditions, n, seed) for n, seed in ((2, 0), (8, 3))]
    assert {plan.digest() for plan in plans} == {conditions.digest()} == {"fcd127ffa101"}


def test_the_evaluation_set_is_a_plan_that_answers_for_its_conditions():
    evaluation_set = EvaluationSet.from_arguments(class_labels=[3, 7], samples_per_condition=2)
    assert isinstance(evaluation_set, SamplingPlan)
    assert evaluation_set.condition_set == ConditionSet.from_arguments(class_labels=[3, 7])
    assert (evaluation_set.kind, evaluation_set.conditions, evaluation_set.names) == (
        "class",
        (3, 7),
        ("3", "7"),
    )
    assert evaluation_set.num_conditions == 2 and evaluation_set.is_conditional
    unconditional = EvaluationSet.from_arguments(num_samples=3, seed=1)
    assert unconditional.condition_set == ConditionSet.from_arguments()
    assert (unconditional.num_samples, unconditional.seed) == (3, 1)


def test_sample_seeds_are_pinned_across_versions():
    # Changing the derivation would silently change every user's evaluation set.
    assert DiversityCallback.sample_seed(0, 0) == 5857645148978988075
    assert DiversityCallback.sample_seed(3, 7) == 6983089048290858884


def test_prompts_load_from_a_text_file_one_per_line(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n\n  a dog  \n", encoding="utf-8")
    evaluation_set = make_callback(prompts=path, samples_per_condition=2).evaluation_set
    assert evaluation_set.conditions == ("a cat", "a dog") and evaluation_set.num_samples == 4
    assert make_callback(prompts=str(path)).evaluation_set.conditions == ("a cat", "a dog")


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\na dog\n", encoding="utf-8-sig")  # as Windows editors save
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert make_callback(prompts=path).evaluation_set.conditions == ("a cat", "a dog")


def test_an_empty_prompt_file_is_rejected(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no prompt"):
        make_callback(prompts=path)
