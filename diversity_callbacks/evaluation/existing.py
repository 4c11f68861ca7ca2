"""Score samples that already exist (folders of images, saved embeddings) with an evaluator.

:meth:`DiversityEvaluator.evaluate <diversity_callbacks.DiversityEvaluator.evaluate>` draws its
samples from a generator; :func:`evaluate_existing` takes them from an iterable of batches
instead and goes through the same pipeline
(:func:`~diversity_callbacks.evaluation.pipeline.run_evaluation`): the evaluator's checks of the
samples -> its embedder -> every metric's ``update`` -> ``compute`` on every rank -> an
:class:`~diversity_callbacks.EvaluationResult`. The ``diversity-callbacks score`` command is a
thin user of it.

The evaluator's prompts (or class labels) name the conditions; each batch says which condition
each of its samples belongs to, so conditions may hold different numbers of samples. Build the
evaluator with :meth:`DiversityEvaluator.for_existing
<diversity_callbacks.DiversityEvaluator.for_existing>` from the conditions and the samples each
holds: the optional metrics (``per_condition=None``, ``sce=None``...) are then decided from those
counts. An evaluator built for a generator works too; its ``samples_per_condition`` and ``seed``
are not used here, except that ``None`` switches were decided from ``samples_per_condition``.
With uneven conditions:

- the per-condition Vendi score is the mean, over the conditions that have at
  least one sample, of each condition's own Vendi score: every prompt weighs the same whatever
  its number of samples, and a prompt with one sample scores 1;
- the Schur complement entropy takes every sample's row paired with its own prompt's embedding,
  so a prompt with more samples contributes more rows, as in the paper's definition.

Under ``torch.distributed`` every rank calls :func:`evaluate_existing` with its own share of the
batches (possibly none); the metric states are synced and every rank gets the same result.

Example:
    >>> import torch
    >>> from diversity_callbacks.evaluation import ConditionSet
    >>> evaluator = DiversityEvaluator.for_existing(
    ...     ConditionSet.from_arguments(prompts=["a cat", "a dog"]),
    ...     counts=[3, 2],
    ...     embedder=lambda s: s,
    ...     value_range=None,
    ...     vendi_kernel="linear",
    ... )
    >>> batches = [(torch.eye(3), [0, 0, 0]), (torch.eye(3)[:1].repeat(2, 1), [1, 1])]
    >>> result = evaluate_existing(evaluator, batches, progress=False)
    >>> [round(v, 6) for v in result.per_condition["vendi_q1"].tolist()]  # 3 cats, 1 dog twice
    [3.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.evaluation.modes import ModeReference
from diversity_callbacks.evaluation.pipeline import BatchSource

ExistingBatch = tuple[Any, "Tensor | Sequence[int] | None"]
"""``(samples, condition_ids)``: ``samples`` as the evaluator's ``value_range`` says (``(B, 3, H,
W)`` images, or a sequence of ``B`` samples of any kind with ``value_range=None``, e.g.
precomputed embeddings with an identity embedder), ``condition_ids`` ``(B,)`` integers in
``[0, num_conditions)``, or ``None`` for an unconditional evaluator."""


def evaluate_existing(
    evaluator: DiversityEvaluator,
    batches: Iterable[ExistingBatch],
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
    total: int | None = None,
    description: str | None = None,
    compare_to: EvaluationResult | ModeReference | None = None,
    previews: bool = False,
) -> EvaluationResult:
    """Embed and score samples that already exist; every rank must call it.

    Args:
        evaluator: the embedder, the metrics and their options (best built with
            :meth:`~diversity_callbacks.DiversityEvaluator.for_existing`). Its conditions are
            what ``condition_ids`` index.
        batches: :data:`ExistingBatch` pairs, this rank's share under ``torch.distributed``;
            an exception raised while iterating is reported like a failed batch.
        device: where embeddings and metric states live (default: the CPU).
        progress: show a progress bar on rank 0 (only on a terminal).
        total: number of batches, for the progress bar.
        description: the progress bar's label.
        compare_to: with the evaluator's ``modes``, an earlier result (or its
            ``mode_reference``): also find the modes lost and gained since then. The modes'
            sample indices count the samples in batch order (rank 0's first under DDP).
        previews: keep thumbnails (texts for strings) of the samples the modes show.

    Returns:
        The :class:`~diversity_callbacks.EvaluationResult`, the same scalars on every rank;
        ``num_samples`` counts this rank's samples.

    Raises:
        ValueError: when a metric takes the ``"samples"`` input (a generator's samples).
        EvaluationError: on every rank, when any rank failed to read, embed or compute.
    """
    takers = [name for name, metric in evaluator.metrics.items() if "samples" in metric.inputs]
    if takers:
        # The batches here may be embeddings read from a file: a scorer of generated samples
        # would be handed something else without a word.
        raise ValueError(
            f"evaluate_existing scores existing batches, not a generator's samples: metric(s) "
            f"{takers} take the 'samples' input; score them with evaluate(), or give `quality=` "
            "a scorer of embeddings (quality_input='embeddings')"
        )
    source = BatchSource(
        batches, description=description or f"{evaluator.prefix}: embedding", total=total
    )
    device = torch.device(device) if device is not None else torch.device("cpu")
    return evaluator.run(
        source,
        device,
        progress=progress,
        previews=previews,
        offset_by_rank=True,
        compare_to=compare_to,
    )


def per_condition_counts(condition_ids: Iterable[int], num_conditions: int) -> list[int]:
    """How many samples each condition holds: ``[count of 0, count of 1, ...]``, the
    ``counts`` of :meth:`~diversity_callbacks.DiversityEvaluator.for_existing`.

    Example:
        >>> per_condition_counts([0, 0, 2], 3)
        [2, 0, 1]
    """
    counts = [0] * num_conditions
    for condition in condition_ids:
        counts[condition] += 1
    return counts
