"""Score samples that already exist (folders of images, saved embeddings) with an evaluator.

:meth:`DiversityEvaluator.evaluate <diversity_callbacks.DiversityEvaluator.evaluate>` draws its
samples from a generator; :func:`evaluate_existing` takes them from an iterable of batches
instead and goes through the same path: the evaluator's checks of the samples -> its embedder ->
every metric's ``update`` (:func:`~diversity_callbacks.evaluation.evaluator.update_metrics`) ->
``compute`` on every rank -> an :class:`~diversity_callbacks.EvaluationResult`. The
``diversity-callbacks score`` command is a thin user of it.

The evaluator's prompts (or class labels) name the conditions; each batch says which condition
each of its samples belongs to, so conditions may hold different numbers of samples. The
evaluator's ``samples_per_condition`` and ``seed`` are not used here (they define a generator's
evaluation set), except that ``per_condition=None`` and ``sce=None`` read ``samples_per_condition
>= 2`` as "turn them on": pass ``per_condition=`` and ``sce=`` explicitly to decide yourself. With
uneven conditions:

- the per-condition Vendi score is the mean, over the conditions that have at
  least one sample, of each condition's own Vendi score: every prompt weighs the same whatever
  its number of samples, and a prompt with one sample scores 1;
- the Schur complement entropy takes every sample's row paired with its own prompt's embedding,
  so a prompt with more samples contributes more rows, as in the paper's definition.

Under ``torch.distributed`` every rank calls :func:`evaluate_existing` with its own share of the
batches (possibly none); the metric states are synced and every rank gets the same result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.evaluator import (
    TIMING_KEY,
    DiversityEvaluator,
    EvaluationResult,
    _Draw,
    _raise_if_any_failed,
    update_metrics,
)
from diversity_callbacks.evaluation.modes import ModeReference
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import as_long_tensor

ExistingBatch = tuple[Any, "Tensor | Sequence[int] | None"]
"""``(samples, condition_ids)``: a batch in the evaluator's ``value_range`` (or of any kind with
``value_range=None``) and each sample's condition number (``None`` when unconditional)."""

_END = object()  # what ``next`` returns once the batches are exhausted


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
        evaluator: the embedder, the metrics and their options. Its prompts (or class labels)
            are the conditions that ``condition_ids`` index.
        batches: ``(samples, condition_ids)`` pairs: ``samples`` as the evaluator's
            ``value_range`` says (``(B, 3, H, W)`` images, or a sequence of ``B`` samples of
            any kind with ``value_range=None``, e.g. precomputed embeddings with an identity
            embedder), ``condition_ids`` ``(B,)`` integers in ``[0, num_conditions)``, or
            ``None`` for an unconditional evaluator. Under ``torch.distributed``, this rank's
            share. An exception raised while iterating is reported like a failed batch.
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

    Example:
        >>> import torch
        >>> evaluator = DiversityEvaluator(
        ...     ["a cat", "a dog"], embedder=lambda s: s, value_range=None, vendi_kernel="linear"
        ... )
        >>> batches = [(torch.eye(3), [0, 0, 0]), (torch.eye(3)[:1].repeat(2, 1), [1, 1])]
        >>> result = evaluate_existing(evaluator, batches, progress=False)
        >>> [round(v, 6) for v in result.per_condition["vendi_q1"].tolist()]  # 3 cats, 1 dog twice
        [3.0, 1.0]
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
    device = torch.device(device) if device is not None else torch.device("cpu")
    reference = evaluator.mode_reference_of(compare_to)
    with evaluator.exclusive():
        evaluator.prepare(device)
        evaluator.check_ranks_agree()
        start = time.perf_counter()
        draw = _Draw(modes=evaluator.new_mode_collector(previews, offset_by_rank=True))
        result = _score(
            evaluator, iter(batches), device, progress, total, description, draw, reference
        )
    result.scalars[f"{evaluator.prefix}/{TIMING_KEY}"] = time.perf_counter() - start
    return result


def _score(
    evaluator: DiversityEvaluator,
    batches: Any,
    device: torch.device,
    progress: bool,
    total: int | None,
    description: str | None,
    draw: _Draw,
    reference: ModeReference | None,
) -> EvaluationResult:
    """Read, embed and compute; the metrics are emptied afterwards, whatever happened."""
    rank, _ = distributed.rank_and_world_size()
    bar = tqdm(
        total=total,
        desc=description or f"{evaluator.prefix}: embedding",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=None if progress and rank == 0 else True,  # None: only on a terminal
    )
    try:
        with torch.inference_mode(False), torch.no_grad():
            draw.error = _read_and_update(evaluator, batches, device, draw, bar)
        bar.close()
        _raise_if_any_failed(draw.error, device, " while reading or embedding the samples")
        if draw.error is None:
            evaluator.sample_embedder.warn_on_range()
        return evaluator._compute(draw, device, "", reference)
    finally:
        bar.close()
        evaluator.reset()  # the next evaluation starts empty, whatever happened here


def _read_and_update(
    evaluator: DiversityEvaluator,
    batches: Any,
    device: torch.device,
    draw: _Draw,
    bar: tqdm,
) -> EvaluationError | None:
    """Check, embed and add every batch; the first failure is returned, not raised."""
    index = 0
    seen = 0
    while True:
        try:
            start = time.perf_counter()
            batch = next(batches, _END)  # not None: a None batch is refused, not an end
            draw.seconds["sampling"] += time.perf_counter() - start  # here: reading
            if batch is _END:
                return None
            samples, condition_ids = _unpack(batch, index)
            rows = len(samples)
            samples = evaluator.sample_embedder.check_samples(samples, rows)
            ids = _condition_ids(evaluator, condition_ids, rows, device)
            if rows:
                update_metrics(evaluator, samples, ids, draw, range(seen, seen + rows))
        except Exception as error:
            wrapped = EvaluationError(
                f"batch {index} (after {seen} samples): {type(error).__name__}: {error}"
            )
            wrapped.__cause__ = error
            return wrapped
        draw.num_samples += rows
        seen += rows
        index += 1
        bar.update(1)


def _unpack(batch: Any, index: int) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(
            f"batch {index} must be a (samples, condition_ids) pair, got "
            f"{type(batch).__name__}{f' of length {len(batch)}' if hasattr(batch, '__len__') else ''}"
        )
    return batch[0], batch[1]


def _condition_ids(
    evaluator: DiversityEvaluator, condition_ids: Any, rows: int, device: torch.device
) -> Tensor:
    """``(rows,)`` long condition numbers on ``device``, checked against the evaluator's set."""
    evaluation_set = evaluator.evaluation_set
    if condition_ids is None:
        if evaluation_set.is_conditional:
            raise ValueError(
                f"`condition_ids` must give each sample's condition (the evaluator has "
                f"{evaluation_set.num_conditions} {evaluation_set.kind} conditions), got None"
            )
        return torch.zeros(rows, dtype=torch.long, device=device)
    ids = as_long_tensor(condition_ids, "condition_ids", rows)
    if rows and (int(ids.min()) < 0 or int(ids.max()) >= evaluation_set.num_conditions):
        raise ValueError(
            f"`condition_ids` must lie in [0, {evaluation_set.num_conditions - 1}] (the "
            f"evaluator's conditions), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids.to(device=device, dtype=torch.long)


def per_condition_counts(condition_ids: Iterable[int], num_conditions: int) -> list[int]:
    """How many samples each condition holds: ``[count of 0, count of 1, ...]``.

    Example:
        >>> per_condition_counts([0, 0, 2], 3)
        [2, 0, 1]
    """
    counts = [0] * num_conditions
    for condition in condition_ids:
        counts[condition] += 1
    return counts
