"""The metrics one evaluator runs, in the order their keys are logged.

The Vendi score, the per-condition one where :func:`~diversity_callbacks.evaluation.applicability.applicable_metrics`
turns it on, the quality-weighted score (with a ``quality`` scorer), the user's plug-ins, then
SCE, CLIPScore, Conditional- and Information-Vendi where the decision turns them on (the memorization
scores join at ``prepare``, once the reference set is embedded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diversity_callbacks.evaluation.applicability import (
    MetricChoice,
    embeds_texts,
    refuse_unmet,
)
from diversity_callbacks.evaluation.conditions import ConditionSet
from diversity_callbacks.evaluation.metrics import (
    EvaluationMetric,
    as_evaluation_metric,
    builtin_result_keys,
    optional_metrics,
    quality_metric,
    vendi_metrics,
)
from diversity_callbacks.evaluation.modes import MODE_KEYS
from diversity_callbacks.evaluation.options import EvaluatorOptions
from diversity_callbacks.evaluation.results import TIMING_KEY
from diversity_callbacks.functional.kernels import Kernel
from diversity_callbacks.utilities.checks import describe


def evaluator_metrics(
    conditions: ConditionSet,
    choices: Mapping[str, MetricChoice],
    options: EvaluatorOptions,
    orders: Sequence[float],
    kernel: Kernel,
) -> dict[str, EvaluationMetric]:
    """Every metric of an evaluator, built now so that bad settings fail at construction.

    Raises:
        ValueError: for an optional metric requested where it does not apply, a plug-in named
            like a built-in result, or a plug-in taking prompt embeddings the embedder cannot
            make.
    """
    metrics = vendi_metrics(
        conditions, orders, kernel, choices["per_condition"].on, options.spectrum
    )
    refuse_unmet(choices)
    qvendi = quality_metric(options.quality, options.quality_input, orders, kernel)
    if qvendi is not None:
        metrics["qvendi"] = qvendi
    metrics.update(plug_ins(options.metrics or {}, orders, taken=set(metrics)))
    _check_text_inputs(metrics, options.embedder)
    optional = optional_metrics(conditions, choices, orders, kernel, options.sce_options())
    return {**metrics, **optional}


def plug_ins(
    metrics: Mapping[str, Any], orders: Sequence[float], taken: set[str]
) -> dict[str, EvaluationMetric]:
    """The user's metrics, each wrapped and checked not to take a built-in metric's name."""
    taken = {
        *taken,
        "sce",
        "clip_score",
        "cond_vendi",
        "info_vendi",
        *builtin_result_keys(orders),
        *MODE_KEYS,
        TIMING_KEY,
        "memorization",
    }
    wrapped = {}
    for name, metric in metrics.items():
        if name in taken:
            raise ValueError(
                f"`metrics` name {name!r} is taken by a built-in metric or result (a plug-in "
                f"named so would overwrite it); taken: {sorted(taken)}"
            )
        wrapped[name] = as_evaluation_metric(name, metric)
    return wrapped


def _check_text_inputs(metrics: Mapping[str, EvaluationMetric], embedder: Any) -> None:
    """Refuse a plug-in taking prompt embeddings that the embedder cannot make, now rather
    than at the first batch of the first evaluation."""
    wanting = [n for n, m in metrics.items() if "condition_embeddings" in m.inputs]
    if wanting and not embeds_texts(embedder):
        raise ValueError(
            f"`metrics` {wanting} take 'condition_embeddings', which needs an embedder with "
            f"embed_texts(prompts) -> (P, D), got {describe(embedder)} without it"
        )
