"""Diversity metrics and a Lightning callback that make diversity collapse visible in training.

The data path reads left to right: generator output -> :mod:`~diversity_callbacks.images`
(value ranges) -> :mod:`~diversity_callbacks.embedders` -> metric states
(:mod:`~diversity_callbacks.metrics`) -> maths (:mod:`~diversity_callbacks.functional`). One
evaluation (fixed samples, sampling, embedding, metrics) is
:mod:`~diversity_callbacks.evaluation`'s; :mod:`~diversity_callbacks.callback` runs it on a
cadence inside a Lightning ``Trainer`` and sends the results to its loggers.

Public names are imported lazily so that ``import diversity_callbacks`` stays cheap and optional
dependencies (open_clip, wandb, matplotlib) are only needed by the features that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Kernel": "diversity_callbacks.functional.kernels",
    "VendiScore": "diversity_callbacks.metrics.vendi",
    "PerConditionVendiScore": "diversity_callbacks.metrics.per_condition",
    "ConditionalVendiScore": "diversity_callbacks.metrics.conditional_vendi",
    "InformationVendiScore": "diversity_callbacks.metrics.conditional_vendi",
    "SchurComplementEntropy": "diversity_callbacks.metrics.schur",
    "EmbeddingCLIPScore": "diversity_callbacks.metrics.clip_score",
    "QualityWeightedVendiScore": "diversity_callbacks.metrics.quality",
    "PromptRemover": "diversity_callbacks.prompt_removal",
    "CLIPEmbedder": "diversity_callbacks.embedders.clip",
    "ImageEmbedder": "diversity_callbacks.embedders.base",
    "TextEmbedder": "diversity_callbacks.embedders.base",
    "FunctionEmbedder": "diversity_callbacks.embedders.base",
    "DiversityEvaluator": "diversity_callbacks.evaluation.evaluator",
    "EvaluationError": "diversity_callbacks.evaluation.errors",
    "EvaluationResult": "diversity_callbacks.evaluation.results",
    "EvaluationMetric": "diversity_callbacks.evaluation.metrics",
    "evaluate_existing": "diversity_callbacks.evaluation.existing",
    "ConditionSet": "diversity_callbacks.evaluation.conditions",
    "EvaluatorOptions": "diversity_callbacks.evaluation.options",
    "applicable_metrics": "diversity_callbacks.evaluation.applicability",
    "SampleFn": "diversity_callbacks.evaluation.sampling",
    "DiversityCallback": "diversity_callbacks.callback",
    "DiversityCollapseMonitor": "diversity_callbacks.monitor",
    "CopyRateMonitor": "diversity_callbacks.monitor",
    "MemorizationScore": "diversity_callbacks.metrics.memorization",
    "DiffusersSampler": "diversity_callbacks.samplers.diffusers",
    "TransformersSampler": "diversity_callbacks.samplers.transformers",
    "SentenceEmbedder": "diversity_callbacks.embedders.sentence",
    "DistinctN": "diversity_callbacks.metrics.lexical",
    "SelfBLEU": "diversity_callbacks.metrics.lexical",
    "lexical_metrics": "diversity_callbacks.evaluation.metrics",
    "DiversityTrainerCallback": "diversity_callbacks.integrations.hf",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from diversity_callbacks.callback import DiversityCallback  # noqa: F401
    from diversity_callbacks.embedders.base import FunctionEmbedder, ImageEmbedder, TextEmbedder  # noqa: F401
    from diversity_callbacks.embedders.clip import CLIPEmbedder  # noqa: F401
    from diversity_callbacks.embedders.sentence import SentenceEmbedder  # noqa: F401
    from diversity_callbacks.evaluation.applicability import applicable_metrics  # noqa: F401
    from diversity_callbacks.evaluation.conditions import ConditionSet  # noqa: F401
    from diversity_callbacks.evaluation.errors import EvaluationError  # noqa: F401
    from diversity_callbacks.evaluation.evaluator import DiversityEvaluator  # noqa: F401
    from diversity_callbacks.evaluation.existing import evaluate_existing  # noqa: F401
    from diversity_callbacks.evaluation.metrics import (
        EvaluationMetric,  # noqa: F401
        lexical_metrics,  # noqa: F401
    )
    from diversity_callbacks.evaluation.options import EvaluatorOptions  # noqa: F401
    from diversity_callbacks.evaluation.results import EvaluationResult  # noqa: F401
    from diversity_callbacks.evaluation.sampling import SampleFn  # noqa: F401
    from diversity_callbacks.functional.kernels import Kernel  # noqa: F401
    from diversity_callbacks.integrations.hf import DiversityTrainerCallback  # noqa: F401
    from diversity_callbacks.metrics.clip_score import EmbeddingCLIPScore  # noqa: F401
    from diversity_callbacks.metrics.conditional_vendi import (  # noqa: F401
        ConditionalVendiScore,
        InformationVendiScore,
    )
    from diversity_callbacks.metrics.lexical import DistinctN, SelfBLEU  # noqa: F401
    from diversity_callbacks.metrics.memorization import MemorizationScore  # noqa: F401
    from diversity_callbacks.metrics.per_condition import PerConditionVendiScore  # noqa: F401
    from diversity_callbacks.metrics.quality import QualityWeightedVendiScore  # noqa: F401
    from diversity_callbacks.metrics.schur import SchurComplementEntropy  # noqa: F401
    from diversity_callbacks.metrics.vendi import VendiScore  # noqa: F401
    from diversity_callbacks.monitor import CopyRateMonitor, DiversityCollapseMonitor  # noqa: F401
    from diversity_callbacks.prompt_removal import PromptRemover  # noqa: F401
    from diversity_callbacks.samplers.diffusers import DiffusersSampler  # noqa: F401
    from diversity_callbacks.samplers.transformers import TransformersSampler  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diversity_callbacks' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
