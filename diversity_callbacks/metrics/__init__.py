"""torchmetrics metrics that accumulate embeddings across batches and DDP ranks."""

from diversity_callbacks.metrics.clip_score import EmbeddingCLIPScore
from diversity_callbacks.metrics.conditional_vendi import (
    ConditionalVendiScore,
    InformationVendiScore,
)
from diversity_callbacks.metrics.lexical import DistinctN, SelfBLEU
from diversity_callbacks.metrics.memorization import MemorizationScore
from diversity_callbacks.metrics.per_condition import PerConditionVendiScore
from diversity_callbacks.metrics.quality import QualityWeightedVendiScore
from diversity_callbacks.metrics.schur import SchurComplementEntropy
from diversity_callbacks.metrics.vendi import VendiScore

__all__ = [
    "ConditionalVendiScore",
    "DistinctN",
    "EmbeddingCLIPScore",
    "InformationVendiScore",
    "MemorizationScore",
    "PerConditionVendiScore",
    "QualityWeightedVendiScore",
    "SchurComplementEntropy",
    "SelfBLEU",
    "VendiScore",
]
