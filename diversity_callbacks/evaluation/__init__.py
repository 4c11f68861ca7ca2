"""The evaluation core: one diversity evaluation of a generator, or of existing samples, with or
without Lightning."""

from diversity_callbacks.evaluation.applicability import (
    MetricChoice,
    Requirement,
    applicable_metrics,
)
from diversity_callbacks.evaluation.conditions import (
    ConditionSet,
    EvaluationSet,
    SamplingPlan,
    sample_seed,
)
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator
from diversity_callbacks.evaluation.existing import (
    ExistingBatch,
    evaluate_existing,
    per_condition_counts,
)
from diversity_callbacks.evaluation.metrics import (
    EmbeddedBatch,
    EvaluationMetric,
    MetricValues,
    lexical_metrics,
)
from diversity_callbacks.evaluation.options import EvaluatorOptions
from diversity_callbacks.evaluation.pipeline import BatchSource, EvaluationParts, run_evaluation
from diversity_callbacks.evaluation.results import EvaluationResult
from diversity_callbacks.evaluation.sampling import SampleFn

__all__ = [
    "BatchSource",
    "ConditionSet",
    "DiversityEvaluator",
    "EmbeddedBatch",
    "EvaluationError",
    "EvaluationMetric",
    "EvaluationParts",
    "EvaluationResult",
    "EvaluationSet",
    "EvaluatorOptions",
    "ExistingBatch",
    "MetricChoice",
    "MetricValues",
    "Requirement",
    "SampleFn",
    "SamplingPlan",
    "applicable_metrics",
    "evaluate_existing",
    "lexical_metrics",
    "per_condition_counts",
    "run_evaluation",
    "sample_seed",
]
