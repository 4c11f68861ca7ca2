"""The evaluation core: one diversity evaluation of a generator, with or without Lightning."""

from diversity_callbacks.evaluation.conditions import EvaluationSet, sample_seed
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult, SampleFn
from diversity_callbacks.evaluation.existing import ExistingBatch, evaluate_existing
from diversity_callbacks.evaluation.metrics import (
    EmbeddedBatch,
    EvaluationMetric,
    MetricValues,
    lexical_metrics,
)

__all__ = [
    "DiversityEvaluator",
    "EmbeddedBatch",
    "EvaluationError",
    "EvaluationMetric",
    "EvaluationResult",
    "EvaluationSet",
    "ExistingBatch",
    "MetricValues",
    "SampleFn",
    "evaluate_existing",
    "lexical_metrics",
    "sample_seed",
]
