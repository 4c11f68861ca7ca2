"""torchmetrics metrics that accumulate embeddings across batches and DDP ranks."""

from diversity_callbacks.metrics.clip_score import EmbeddingCLIPScore
from diversity_callbacks.metrics.conditional import ConditionalVendiScore
from diversity_callbacks.metrics.quality import QualityWeightedVendiScore
from diversity_callbacks.metrics.schur import SchurComplementEntropy
from diversity_callbacks.metrics.vendi import VendiScore

__all__ = [
    "ConditionalVendiScore",
    "EmbeddingCLIPScore",
    "QualityWeightedVendiScore",
    "SchurComplementEntropy",
    "VendiScore",
]
