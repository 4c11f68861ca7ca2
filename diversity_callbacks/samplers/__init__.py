"""Samplers: adapters that turn a generator library's pipelines into the sampling contract.

Each adapter is a callable usable as ``DiversityCallback(sample_fn=...)`` (called with the
LightningModule) and as ``DiversityEvaluator.evaluate``'s ``sample_fn`` (called without it), with
a ``value_range`` attribute declaring what it returns. The library behind an adapter is imported
only when the adapter is used.
"""

from diversity_callbacks.samplers.diffusers import DiffusersSampler
from diversity_callbacks.samplers.transformers import TransformersSampler

__all__ = ["DiffusersSampler", "TransformersSampler"]
