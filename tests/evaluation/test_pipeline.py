"""One pipeline for both sources: run_evaluation fed by a plain iterable, the evaluator of
existing samples built from conditions and counts, and evaluate() through the same path."""

from __future__ import annotations

import pytest
import torch

from diversity_callbacks import (
    ConditionSet,
    DiversityCallback,
    DiversityEvaluator,
    EvaluationError,
    EvaluatorOptions,
    evaluate_existing,
)
from diversity_callbacks.evaluation import BatchSource, EvaluationParts, run_evaluation
from diversity_callbacks.evaluation.metrics import vendi_metrics
from diversity_callbacks.evaluation.samples import SampleEmbedder
from diversity_callbacks.functional import Kernel, per_condition_vendi_score, vendi_score

CPU = torch.device("cpu")
ROWS = torch.eye(5, dtype=torch.float64)[[0, 1, 2, 3, 3]]


def parts(conditions: ConditionSet, per_condition: bool = True) -> EvaluationParts:
    metrics = vendi_metrics(conditions, [1.0, 2.0], Kernel("linear"), per_condition, False)
    return EvaluationParts(conditions, SampleEmbedder(None, lambda s: s), metrics)


def test_a_plain_iterable_of_batches_is_scored_without_an_evaluator():
    conditions = ConditionSet.from_arguments(prompts=["a", "b"])
    ids = [0, 0, 1, 1, 1]
    batches = iter([(ROWS[:2], ids[:2]), (ROWS[2:], torch.tensor(ids[2:]))])  # read once
    source = BatchSource(batches, description="scoring")
    shared = parts(conditions)
    result = run_evaluation(source, shared, device=CPU, progress=False)
    expected = vendi_score(ROWS, q=(1.0, 2.0), kernel="linear")
    assert result.scalars["diversity/vendi_q1"] == pytest.approx(float(expected["q1"]), rel=1e-12)
    table = per_condition_vendi_score(ROWS, torch.tensor(ids), q=1.0, kernel="linear")
    assert result.scalars["diversity/per_prompt_vendi_q1"] == pytest.approx(
        float(table.mean()), rel=1e-12
    )
    assert result.num_samples == 5 and "diversity/eval_seconds" in result.scalars
    # the metrics are emptied: the same parts score the next source from nothing
    again = run_evaluation(
        BatchSource([(ROWS, ids)], description="again"), shared, device=CPU, progress=False
    )
    for key in ("diversity/vendi_q1", "diversity/vendi_q2", "diversity/per_prompt_vendi_q1"):
        assert again.scalars[key] == pytest.approx(result.scalars[key], rel=1e-12)


def test_a_failing_source_is_named_by_the_sources_own_words():
    def batches():
        yield ROWS[:2], None
        raise OSError("disk gone")

    unconditional = ConditionSet.from_arguments()
    with pytest.raises(
        EvaluationError, match=r"while reading.*batch 1 \(after 2 samples\): OSError"
    ):
        run_evaluation(
            BatchSource(batches(), description="x"),
            parts(unconditional, False),
            device=CPU,
            progress=False,
        )
    named = BatchSource(
        batches(),
        description="x",
        stage="decoding",
        name_failure=lambda i, n, e: EvaluationError(f"file {i}: {e}"),
    )
    with pytest.raises(EvaluationError, match=r"failed while decoding: file 1: disk gone"):
        run_evaluation(named, parts(unconditional, False), device=CPU, progress=False)


def test_the_evaluator_of_existing_samples_needs_no_sampling_plan():
    conditions = ConditionSet.from_arguments(prompts=["a", "b"])
    evaluator = DiversityEvaluator.for_existing(
        conditions, [2, 3], embedder=lambda s: s, value_range=None, vendi_kernel="linear"
    )
    assert evaluator.plan is None and evaluator.evaluation_set is None
    assert sorted(evaluator.metrics) == ["per_prompt_vendi", "vendi"]
    result = evaluate_existing(evaluator, [(ROWS, [0, 0, 1, 1, 1])], progress=False)
    generator_made = DiversityEvaluator(
        ["a", "b"], 2, embedder=lambda s: s, value_range=None, vendi_kernel="linear"
    )
    expected = evaluate_existing(generator_made, [(ROWS, [0, 0, 1, 1, 1])], progress=False)
    scores = {k: v for k, v in result.scalars.items() if not k.endswith("eval_seconds")}
    assert scores == pytest.approx({k: expected.scalars[k] for k in scores}, rel=1e-12)
    with pytest.raises(TypeError, match=r"scores existing samples .* no sampling plan"):
        evaluator.evaluate(lambda conditions, generators: ROWS[: len(generators)])
    with pytest.raises(ValueError, match=r"`evaluator` scores existing samples .* samples the"):
        DiversityCallback(evaluator=evaluator)


def test_counts_decide_the_optional_metrics_and_options_come_as_one_value():
    conditions = ConditionSet.from_arguments(prompts=["a", "b"])
    options = EvaluatorOptions(embedder=lambda s: s, value_range=None, per_condition=None)
    single = DiversityEvaluator.for_existing(conditions, [1, 1], options)
    assert list(single.metrics) == ["vendi"] and not single.choices["per_condition"].on
    with pytest.raises(ValueError, match=r"`per_condition=True` needs .*2 or more samples in a"):
        DiversityEvaluator.for_existing(
            conditions, [1, 1], embedder=lambda s: s, value_range=None, per_condition=True
        )
    with pytest.raises(ValueError, match=r"`counts` must hold one count per condition, 2 in all"):
        DiversityEvaluator.for_existing(conditions, [3], options)
    with pytest.raises(TypeError, match="give `options` or keyword options, not both"):
        DiversityEvaluator.for_existing(conditions, [2, 2], options, prefix="x")
    with pytest.raises(TypeError, match="unexpected keyword argument 'samples_per_condition'"):
        DiversityEvaluator.for_existing(conditions, [2, 2], samples_per_condition=2)


def test_a_0_1_argument_name_still_works_with_a_future_warning():
    with pytest.warns(FutureWarning, match="`conditional` is now `per_condition`"):
        evaluator = DiversityEvaluator(
            ["a", "b"], 2, embedder=lambda s: s, value_range=None, conditional=False
        )
    assert "per_prompt_vendi" not in evaluator.metrics
    with pytest.raises(TypeError, match="unexpected keyword argument 'image_range'"):
        DiversityEvaluator(["a"], image_range="[0,1]")


class TextsToo:
    """Embeds samples as they are and prompts as one-hot rows of their first letter."""

    def embed_samples(self, samples):
        return samples

    def embed_texts(self, prompts):
        return torch.eye(5, dtype=torch.float64)[[ord(p[0]) - ord("a") for p in prompts]]


def test_the_metrics_declare_the_logged_keys_in_the_order_they_are_logged():
    evaluator = DiversityEvaluator(
        ["a", "b"],
        3,
        embedder=TextsToo(),
        value_range=None,
        vendi_orders=(1, 2),
        quality=lambda rows: rows.sum(dim=1),
        quality_input="embeddings",
        modes=2,
    )
    keys = evaluator.result_keys()
    assert keys[:4] == [
        "diversity/vendi_q1",
        "diversity/vendi_q2",
        "diversity/per_prompt_vendi_q1",
        "diversity/per_prompt_vendi_q2",
    ]
    assert keys[-4:] == [
        "diversity/num_modes",
        "diversity/lost_mode_mass",
        "diversity/gained_mode_mass",
        "diversity/eval_seconds",
    ]
    rows = torch.eye(5, dtype=torch.float64)[[0, 1, 2, 2, 3, 4]]
    result = evaluate_existing(evaluator, [(rows, [0, 0, 0, 1, 1, 1])], progress=False)
    assert list(result.scalars) == [key for key in keys if key in result.scalars]
    assert {"diversity/sce", "diversity/clip_score", "diversity/qvendi_q1"} <= set(result.scalars)
    assert set(result.scalars) <= set(keys)
    assert evaluator.result_keys("sce") == ["diversity/sce", "diversity/sce_text"]
    assert evaluator.key("copy_rate") == "diversity/copy_rate"
