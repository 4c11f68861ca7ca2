"""One evaluation from any source of ``(samples, condition_ids)`` batches.

Left to right: the source's batches -> checked samples -> the embedder (and the prompts'
embeddings, when a metric takes them) -> every metric's ``update`` -> ``compute`` on every rank
-> an :class:`~diversity_callbacks.EvaluationResult`. :func:`run_evaluation` is that path, and
the only one: :meth:`DiversityEvaluator.evaluate <diversity_callbacks.DiversityEvaluator.evaluate>`
feeds it the batches a generator draws from its sampling plan
(:func:`~diversity_callbacks.evaluation.sampling.sampled_source`),
:func:`~diversity_callbacks.evaluate_existing` the user's batches, the ``score`` command the
batches read from files. It takes the parts it runs on (:class:`EvaluationParts`), not the
evaluator that holds them.

A failure on any rank, while reading or computing, is raised on every rank
(:class:`~diversity_callbacks.EvaluationError`, naming the failing rank and batch), so that no
rank waits in a collective that another one left.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.evaluation.conditions import ConditionSet
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.metrics import EmbeddedBatch, EvaluationMetric, MetricValues
from diversity_callbacks.evaluation.modes import ModeCollector, ModeReference, SharedMoment
from diversity_callbacks.evaluation.results import TIMING_KEY, EvaluationResult, result_key
from diversity_callbacks.evaluation.samples import SampleEmbedder
from diversity_callbacks.evaluation.sharding import Stopped
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import as_long_tensor
from diversity_callbacks.utilities.progress import progress_bar

_END = object()  # what ``next`` returns once the batches are exhausted


@dataclass
class EvaluationParts:
    """What an evaluation runs on, whatever the source of its samples.

    Attributes:
        conditions: what ``condition_ids`` number (prompts, class labels or nothing).
        sample_embedder: checks and embeds the samples (and the prompts).
        metrics: the metrics by name, updated with each batch and computed at the end.
        prefix: first part of every key of the result.
    """

    conditions: ConditionSet
    sample_embedder: SampleEmbedder
    metrics: Mapping[str, EvaluationMetric]
    prefix: str = "diversity"

    @property
    def inputs(self) -> set[str]:
        """Every input some metric's ``update`` takes."""
        return {name for metric in self.metrics.values() for name in metric.inputs}


class OneAtATime:
    """A flag held by one evaluation at a time (a flag, not a Lock: evaluators are pickled and
    deep-copied); the check-and-set of every instance is made atomic by one process-wide lock."""

    _LOCK = threading.Lock()

    def __init__(self) -> None:
        self.held = False

    @contextmanager
    def hold(self, refusal: str) -> Iterator[None]:
        """Hold the flag until the block ends.

        Raises:
            RuntimeError: ``refusal``, when the flag is held already.
        """
        with self._LOCK:
            if self.held:
                raise RuntimeError(refusal)
            self.held = True
        try:
            yield
        finally:
            self.held = False


def batch_failure(index: int, seen: int, error: Exception) -> EvaluationError:
    """How a failed batch of existing samples is named: its number and the samples before it."""
    wrapped = EvaluationError(
        f"batch {index} (after {seen} samples): {type(error).__name__}: {error}"
    )
    wrapped.__cause__ = error
    return wrapped


@dataclass
class BatchSource:
    """Where an evaluation's batches come from, and how the pipeline reports on them.

    Attributes:
        batches: ``(samples, condition_ids)`` pairs (see
            :data:`~diversity_callbacks.evaluation.existing.ExistingBatch`), this rank's share.
        description: the progress bar's label.
        total: the number of batches, for the progress bar.
        stage: what reading the batches is called in errors (``"reading or embedding the
            samples"``).
        first_index: the index of this rank's first sample (what the modes and thumbnails call
            the samples).
        generated: the batches come from a generator asked for ``len(condition_ids)`` samples:
            a batch of another size is the generator's error. Otherwise the samples are counted
            and ``condition_ids`` must match them.
        context: entered around the whole reading (the generator's eval mode, RNG isolation).
        name_failure: ``(batch number, samples before it, error) -> EvaluationError``.
        failed_elsewhere: after the reading, whether the ranks already agreed that one failed.
        thumbnails: ``(checked images, sample indices) -> {index: uint8 thumbnail}`` of the
            samples to show; ``None``: none kept.
    """

    batches: Iterable[Any]
    description: str
    total: int | None = None
    stage: str = "reading or embedding the samples"
    first_index: int = 0
    generated: bool = False
    context: Callable[[], AbstractContextManager] = nullcontext
    name_failure: Callable[[int, int, Exception], EvaluationError] = batch_failure
    failed_elsewhere: Callable[[], bool] = lambda: False
    thumbnails: Callable[[Tensor, range], dict[int, Tensor]] | None = None


@dataclass
class EvaluationRecord:
    """What one rank read in one evaluation, before the collective part."""

    num_samples: int = 0
    error: EvaluationError | None = None
    failure_agreed: bool = False  # every rank already knows that some rank failed
    thumbnails: dict[int, Tensor] | None = None  # None: not asked for
    prompt_rows: dict[int, Tensor] = field(default_factory=dict)
    modes: ModeCollector | None = None  # None: no modes asked for
    seconds: dict[str, float] = field(
        default_factory=lambda: {"sampling": 0.0, "embedding": 0.0, "metric": 0.0}
    )


def run_evaluation(
    source: BatchSource,
    parts: EvaluationParts,
    *,
    device: torch.device,
    progress: bool = True,
    modes: ModeCollector | None = None,
    reference: ModeReference | None = None,
    step: int | None = None,
) -> EvaluationResult:
    """Read, embed and score every batch of ``source``; every rank must call it.

    Args:
        source: this rank's batches and how to report on them.
        parts: the conditions, the embedder and the metrics (emptied afterwards, whatever
            happened).
        device: where embeddings and metric states live.
        progress: show a progress bar on rank 0 (only on a terminal).
        modes: this evaluation's collector of the modes' samples (needs a ``"vendi"`` metric).
        reference: with ``modes``, the earlier evaluation to find lost and gained modes against.
        step: the training step, named in errors.

    Raises:
        EvaluationError: on every rank, when any rank failed to read, embed or compute.

    Example:
        >>> from diversity_callbacks import Kernel
        >>> from diversity_callbacks.evaluation.metrics import vendi_metrics
        >>> parts = EvaluationParts(
        ...     ConditionSet.from_arguments(),
        ...     SampleEmbedder(None, lambda s: s),
        ...     vendi_metrics(ConditionSet.from_arguments(), [1.0], Kernel("linear"), False, False),
        ... )
        >>> source = BatchSource([(torch.eye(3), None)], description="scoring")
        >>> result = run_evaluation(source, parts, device=torch.device("cpu"), progress=False)
        >>> round(result.scalars["diversity/vendi_q1"], 6)  # three orthogonal samples
        3.0
    """
    start = time.perf_counter()
    record = EvaluationRecord(thumbnails={} if source.thumbnails else None, modes=modes)
    where = "" if step is None else f" at global step {step}"
    try:
        with torch.inference_mode(False), torch.no_grad():
            with source.context():
                _read(source, parts, device, record, progress)
            record.failure_agreed = source.failed_elsewhere()
        _raise_if_any_failed(
            record.error, device, f"{where} while {source.stage}", record.failure_agreed
        )
        parts.sample_embedder.warn_on_range()
        result = _compute(parts, record, device, where, reference, step)
    finally:
        for metric in parts.metrics.values():
            metric.reset()  # the next evaluation starts empty, whatever happened here
    result.scalars[result_key(parts.prefix, TIMING_KEY)] = time.perf_counter() - start
    return result


def _read(
    source: BatchSource,
    parts: EvaluationParts,
    device: torch.device,
    record: EvaluationRecord,
    progress: bool,
) -> None:
    """Check, embed and add every batch; the first failure is kept in ``record``, not raised."""
    rank, _ = distributed.rank_and_world_size()
    batches = iter(source.batches)
    index = 0
    with progress_bar(
        description=source.description,
        enabled=progress and rank == 0,
        total=source.total,
        unit="batch",
    ) as bar:
        while True:
            try:
                start = time.perf_counter()
                batch = next(batches, _END)  # not None: a None batch is refused, not an end
                if batch is _END:
                    return
                samples, ids = _checked_batch(source, parts, batch, index, device)
                _synchronize(device)
                record.seconds["sampling"] += time.perf_counter() - start  # or reading
                first = source.first_index + record.num_samples
                indices = range(first, first + len(ids))
                if len(ids):
                    update_metrics(parts, samples, ids, record, indices)
                    _keep_thumbnails(source, record, samples, indices)
            except Stopped:  # the ranks agreed that another one failed
                return
            except Exception as error:
                record.error = source.name_failure(index, record.num_samples, error)
                return
            record.num_samples += len(ids)
            index += 1
            bar.update(1)


def _checked_batch(
    source: BatchSource,
    parts: EvaluationParts,
    batch: Any,
    index: int,
    device: torch.device,
) -> tuple[Any, Tensor]:
    """The batch's checked samples and ``(B,)`` long condition numbers on ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        length = f" of length {len(batch)}" if hasattr(batch, "__len__") else ""
        raise TypeError(
            f"batch {index} must be a (samples, condition_ids) pair, got "
            f"{type(batch).__name__}{length}"
        )
    samples, condition_ids = batch
    if source.generated:
        samples = parts.sample_embedder.check_samples(samples, len(condition_ids))
        return samples, condition_ids
    rows = len(samples)
    samples = parts.sample_embedder.check_samples(samples, rows)
    return samples, checked_condition_ids(parts.conditions, condition_ids, rows, device)


def checked_condition_ids(
    conditions: ConditionSet, condition_ids: Any, rows: int, device: torch.device
) -> Tensor:
    """``(rows,)`` long condition numbers on ``device``, checked against ``conditions``;
    ``None`` for unconditional samples."""
    if condition_ids is None:
        if conditions.is_conditional:
            raise ValueError(
                f"`condition_ids` must give each sample's condition (the evaluator has "
                f"{conditions.num_conditions} {conditions.kind} conditions), got None"
            )
        return torch.zeros(rows, dtype=torch.long, device=device)
    ids = as_long_tensor(condition_ids, "condition_ids", rows)
    if rows and (int(ids.min()) < 0 or int(ids.max()) >= conditions.num_conditions):
        raise ValueError(
            f"`condition_ids` must lie in [0, {conditions.num_conditions - 1}] (the "
            f"evaluator's conditions), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return ids.to(device=device, dtype=torch.long)


def update_metrics(
    parts: EvaluationParts,
    samples: Any,
    condition_ids: Tensor,
    record: EvaluationRecord,
    indices: range,
) -> None:
    """Embed one checked batch (and its prompts, when a metric takes them); update every metric.

    Args:
        parts: the embedder and the metrics.
        samples: a batch checked by ``parts.sample_embedder.check_samples``.
        condition_ids: ``(B,)`` long: each sample's condition number.
        record: this rank's running record (timings, prompt embeddings, the modes' samples).
        indices: the batch's sample indices (what the modes call the samples).
    """
    start = time.perf_counter()
    embedded = EmbeddedBatch(parts.sample_embedder.embed(samples))
    inputs = parts.inputs
    if "condition_ids" in inputs or "condition_embeddings" in inputs:
        embedded.condition_ids = condition_ids
    if "condition_embeddings" in inputs:
        embedded.condition_embeddings = parts.sample_embedder.prompt_embeddings(
            parts.conditions.values, condition_ids, record.prompt_rows
        )
    if "samples" in inputs:
        embedded.samples = samples
    _synchronize(condition_ids.device)
    updated = time.perf_counter()
    record.seconds["embedding"] += updated - start
    for metric in parts.metrics.values():
        metric.update(embedded)
    if record.modes is not None:
        record.modes.add(embedded.embeddings, indices, samples)
    _synchronize(condition_ids.device)
    record.seconds["metric"] += time.perf_counter() - updated


def _keep_thumbnails(
    source: BatchSource, record: EvaluationRecord, samples: Any, indices: range
) -> None:
    if record.thumbnails is not None and source.thumbnails is not None:
        record.thumbnails.update(source.thumbnails(samples, indices))


def _compute(
    parts: EvaluationParts,
    record: EvaluationRecord,
    device: torch.device,
    where: str,
    reference: ModeReference | None,
    step: int | None,
) -> EvaluationResult:
    """Collective: every rank computes every metric and the modes; then rank 0 gathers the
    thumbnails."""
    start = time.perf_counter()
    values: dict[str, MetricValues] = {}
    error: EvaluationError | None = None
    with torch.inference_mode(False), warnings.catch_warnings():
        if record.num_samples == 0:
            # A rank that read nothing still joins the collective compute; its metrics'
            # "compute before update" warning is expected there.
            warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
        for name, metric in parts.metrics.items():
            try:
                values[name] = metric.compute(name)
            except Exception as exc:
                error = EvaluationError(f"metric {name!r}: {exc}")
                error.__cause__ = exc
                break
    _raise_if_any_failed(error, device, f"{where} while computing the metrics")
    result = EvaluationResult.merge(values, parts.prefix, record.num_samples)
    if record.modes is not None:
        _add_modes(parts, result, record, device, where, reference, step)
    if record.thumbnails is not None:
        result.thumbnails = distributed.gather_to_rank_zero(record.thumbnails)
    record.seconds["metric"] += time.perf_counter() - start
    result.timings = dict(record.seconds)
    return result


def _add_modes(
    parts: EvaluationParts,
    result: EvaluationResult,
    record: EvaluationRecord,
    device: torch.device,
    where: str,
    reference: ModeReference | None,
    step: int | None,
) -> None:
    """Collective: the modes, and those lost and gained since ``reference``, into ``result``
    (with the Vendi score's kernel: its random features, if any, are the same)."""
    start = time.perf_counter()
    error: EvaluationError | None = None
    try:
        vendi = parts.metrics["vendi"].metric
        shared = None
        if vendi.streams_moments:  # the Vendi score's moment: its compute above added held rows
            shared = SharedMoment(vendi.second_moment, int(vendi.num_samples))
        values = record.modes.compute(vendi.kernel, device, reference, shared)
    except Exception as exc:
        error = EvaluationError(f"modes: {exc}")
        error.__cause__ = exc
    _raise_if_any_failed(error, device, f"{where} while computing the modes")
    values.reference.step = step
    result.scalars.update({result_key(parts.prefix, k): v for k, v in values.scalars.items()})
    result.modes, result.lost_modes = values.modes, values.lost_modes
    result.gained_modes, result.compared_to = values.gained_modes, reference
    result.mode_reference, result.mode_previews = values.reference, values.previews
    record.seconds["modes"] = time.perf_counter() - start


def _raise_if_any_failed(
    error: EvaluationError | None, device: torch.device, stage: str, agreed: bool = False
) -> None:
    """Collective: raise on every rank when any rank failed, with the failing ranks' reasons.

    ``agreed``: every rank already learned (from a collective) that some rank failed.
    """
    if not agreed and not distributed.any_rank(error is not None, device):
        return
    reasons = distributed.all_gather_objects(None if error is None else str(error))
    if error is not None:
        error.args = (f"diversity evaluation failed{stage}: {error}",)
        raise error
    rank, reason = next((r, text) for r, text in enumerate(reasons) if text is not None)
    raise EvaluationError(f"diversity evaluation failed on rank {rank}{stage}: {reason}")


def _synchronize(device: torch.device) -> None:
    """Wait for the device, so that stage timings are not shifted by asynchronous kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
