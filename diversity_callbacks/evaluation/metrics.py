"""Metrics as plug-ins of the evaluator: what each metric's ``update`` takes, how results are named.

The evaluator embeds every batch once and hands each metric the inputs it declares:

=========================  ======================================================================
input                      what it is
=========================  ======================================================================
``"embeddings"``           ``(B, D)`` embeddings of the samples
``"condition_ids"``        ``(B,)`` long: each sample's condition number (prompt or class index)
``"condition_embeddings"`` ``(B, D')`` the embedder's ``embed_texts`` of each sample's prompt
``"samples"``              the batch as the embedder gets it: ``(B, 3, H, W)`` floats in [0, 1]
                           for images (whatever the generator's ``value_range``), the generator's
                           output unchanged for other samples; only from a generator (not in
                           ``evaluate_existing``)
=========================  ======================================================================

Any torchmetrics ``Metric`` plugs in: wrap it in :class:`EvaluationMetric` with its inputs (a bare
``Metric`` takes ``"embeddings"``). ``compute`` must return a scalar, logged as
``{prefix}/{name}``, or a dict of scalars, logged as ``{prefix}/{name}_{key}``. The built-in Vendi,
per-condition Vendi, SCE, CLIPScore and quality-weighted Vendi metrics are registered through this
same class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.exceptions import TorchMetricsUserError

from diversity_callbacks.evaluation.applicability import MetricChoice
from diversity_callbacks.evaluation.conditions import ConditionSet
from diversity_callbacks.functional.kernels import Kernel
from diversity_callbacks.functional.memorization import MEMORIZATION_KEYS
from diversity_callbacks.functional.spectrum import order_key
from diversity_callbacks.metrics.clip_score import EmbeddingCLIPScore
from diversity_callbacks.metrics.conditional_vendi import (
    ConditionalVendiScore,
    InformationVendiScore,
)
from diversity_callbacks.metrics.lexical import DistinctN, SelfBLEU
from diversity_callbacks.metrics.per_condition import PerConditionVendiScore
from diversity_callbacks.metrics.quality import QualityWeightedVendiScore
from diversity_callbacks.metrics.schur import SchurComplementEntropy
from diversity_callbacks.metrics.vendi import VendiScore
from diversity_callbacks.utilities.checks import check_scores, describe

MetricInput = Literal["embeddings", "condition_ids", "condition_embeddings", "samples"]
QualityInput = Literal["samples", "embeddings"]


@dataclass
class EmbeddedBatch:
    """One batch as the metrics see it; the fields a metric did not ask for may be None."""

    embeddings: Tensor
    condition_ids: Tensor | None = None
    condition_embeddings: Tensor | None = None
    samples: Any = None


@dataclass
class MetricValues:
    """What one metric contributes to an evaluation's result (names without the prefix)."""

    scalars: dict[str, float]
    per_condition: dict[str, Tensor] = field(default_factory=dict)
    spectrum: Tensor | None = None
    copies: Any = None  # a CopiedSamples, from the memorization scores


class EvaluationMetric:
    """A torchmetrics metric plugged into :class:`~diversity_callbacks.DiversityEvaluator`.

    Args:
        metric: any torchmetrics ``Metric``; the evaluator owns it (moves, syncs and resets it).
        inputs: the arguments of its ``update``, in order (see the module table).
        keys: logged name of a key of ``compute``'s dict result, instead of ``{name}_{key}``;
            ``None`` leaves that key out.
        logs: the keys it logs, in display order (:meth:`result_keys`); default: the names
            ``keys`` gives, else ``name``.

    Example:
        >>> from torchmetrics.clustering import CalinskiHarabaszScore
        >>> plugin = EvaluationMetric(CalinskiHarabaszScore(), inputs=("embeddings", "condition_ids"))
        >>> plugin.inputs
        ('embeddings', 'condition_ids')
    """

    def __init__(
        self,
        metric: Metric,
        inputs: Sequence[MetricInput] = ("embeddings",),
        *,
        keys: Mapping[str, str | None] | None = None,
        logs: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(metric, Metric):
            raise TypeError(f"`metric` must be a torchmetrics Metric, got {type(metric).__name__}")
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        unknown = [name for name in inputs if name not in get_args(MetricInput)]
        if not inputs or unknown:
            raise ValueError(
                f"`inputs` must be a non-empty sequence of {list(get_args(MetricInput))}, got "
                f"{list(inputs)}"
            )
        self.metric = metric
        self.inputs: tuple[MetricInput, ...] = inputs
        self.keys = dict(keys or {})
        self.logs = None if logs is None else tuple(logs)

    def result_keys(self, name: str) -> tuple[str, ...]:
        """The keys this metric, registered as ``name``, logs (without the prefix), in display
        order: as declared (``logs``), else the names ``keys`` gives, else ``name``."""
        if self.logs is not None:
            return self.logs
        named = tuple(key for key in self.keys.values() if key is not None)
        return named or (name,)

    def update(self, batch: EmbeddedBatch) -> None:
        """Update the metric with the inputs it declared."""
        self.metric.update(*(getattr(batch, name) for name in self.inputs))

    def compute(self, name: str) -> MetricValues:
        """Compute (a collective under DDP) and name the scalars ``name`` or ``name_key``."""
        return MetricValues(scalars=self._named(name, self.metric.compute()))

    def _named(self, name: str, result: Any) -> dict[str, float]:
        if isinstance(result, Tensor) and result.numel() == 1:
            return {name: float(result)}
        if isinstance(result, Mapping) and all(
            isinstance(value, Tensor) and value.numel() == 1 for value in result.values()
        ):
            named = {key: self.keys.get(key, f"{name}_{key}") for key in result}
            return {named[key]: float(v) for key, v in result.items() if named[key] is not None}
        raise TypeError(
            f"metric {name!r} ({type(self.metric).__name__}) must compute a scalar tensor or a "
            f"dict of scalar tensors to be logged, got {describe(result)}"
        )

    def to(self, device: torch.device) -> None:
        self.metric.to(device)

    def reset(self) -> None:
        # A compute that raised inside torchmetrics' sync leaves the gathered states in place
        # of the local ones; unsync puts the local ones back so that reset can empty them.
        with contextlib.suppress(TorchMetricsUserError):
            self.metric.unsync()
        self.metric.reset()


class _Vendi(EvaluationMetric):
    """The Vendi score of all samples, with the eigenvalue spectrum when asked for."""

    def __init__(self, metric: VendiScore, spectrum: bool, orders: Sequence[float]) -> None:
        super().__init__(metric, logs=ordered_keys("vendi", orders))
        self.spectrum = spectrum

    def compute(self, name: str) -> MetricValues:
        values = super().compute(name)
        if self.spectrum:
            values.spectrum = self.metric.spectrum()
        return values


class _PerConditionVendi(EvaluationMetric):
    """The per-condition Vendi score: its mean is logged, its table is kept per condition."""

    def __init__(self, metric: PerConditionVendiScore, name: str) -> None:
        logs = ordered_keys(name, metric.orders)
        super().__init__(metric, inputs=("embeddings", "condition_ids"), logs=logs)

    def compute(self, name: str) -> MetricValues:
        values = super().compute(name)
        table = self.metric.per_condition
        values.per_condition = {
            f"vendi_{key}": table[:, c] for c, key in enumerate(self.metric.keys)
        }
        return values


def vendi_metrics(
    conditions: ConditionSet,
    orders: Sequence[float],
    kernel: Kernel,
    per_condition: bool,
    spectrum: bool,
) -> dict[str, EvaluationMetric]:
    """The Vendi score, and with ``per_condition`` the per-condition one (logged
    ``per_prompt_vendi_*`` or ``per_class_vendi_*``), with ``kernel``."""
    vendi = VendiScore(q=orders, kernel=kernel)
    metrics: dict[str, EvaluationMetric] = {"vendi": _Vendi(vendi, spectrum, orders)}
    if per_condition:
        name = "per_prompt_vendi" if conditions.kind == "prompt" else "per_class_vendi"
        metric = PerConditionVendiScore(conditions.num_conditions, q=orders, kernel=kernel)
        metrics[name] = _PerConditionVendi(metric, name)
    return metrics


def ordered_keys(name: str, orders: Sequence[float]) -> tuple[str, ...]:
    """The keys of a score computed at several orders: ``vendi_q1``, ``vendi_q2``..."""
    return tuple(f"{name}_{order_key(q)}" for q in orders)


def builtin_result_keys(orders: Sequence[float]) -> set[str]:
    """Every key the built-in metrics may log (without the prefix), for plug-ins to avoid."""
    vendi = ("vendi", "per_prompt_vendi", "per_class_vendi", "qvendi", "cond_vendi", "info_vendi")
    return {f"{name}_{order_key(q)}" for name in vendi for q in orders} | {
        "sce",
        "sce_text",
        "sce_image_vendi",
        "clip_score",
        "quality",
        *MEMORIZATION_KEYS,
    }


def sce_metric(sce_kwargs: Mapping[str, Any]) -> EvaluationMetric:
    """The Schur complement entropy given the prompts, and its text part."""
    # The samples' own Vendi score is VendiScore's already.
    options = {"compute_image_vendi": False, **sce_kwargs}
    image_vendi = "sce_image_vendi" if options["compute_image_vendi"] else None
    return EvaluationMetric(
        SchurComplementEntropy(**options),
        inputs=("embeddings", "condition_embeddings"),
        keys={"sce": "sce", "text_part": "sce_text", "image_vendi": image_vendi},
    )


class _CLIPScore(EvaluationMetric):
    """CLIPScore of the samples against their prompts: the mean, and its table per prompt."""

    def __init__(self, metric: EmbeddingCLIPScore) -> None:
        inputs = ("embeddings", "condition_embeddings", "condition_ids")
        super().__init__(metric, inputs=inputs, logs=("clip_score",))

    def update(self, batch: EmbeddedBatch) -> None:
        images, texts = batch.embeddings, batch.condition_embeddings
        if texts is not None and images.shape[1:] != texts.shape[1:]:
            # SCE takes prompts of any dimension; a cosine needs one space for both.
            raise ValueError(
                "`clip_score` needs the embedder's images and prompts in one space, got image "
                f"embeddings of dimension {images.shape[1]} and prompt embeddings of "
                f"{texts.shape[1]}; pass clip_score=False"
            )
        super().update(batch)

    def compute(self, name: str) -> MetricValues:
        values = super().compute(name)
        values.per_condition = {name: self.metric.per_condition}
        return values


class _QualityVendi(EvaluationMetric):
    """The quality-weighted Vendi score: the user's scorer rates each sample (or its embedding)
    as the batch arrives; the mean quality is logged beside it as ``quality``."""

    def __init__(
        self, metric: QualityWeightedVendiScore, scorer: Callable[[Any], Tensor], on: QualityInput
    ) -> None:
        inputs = ("embeddings", on) if on == "samples" else ("embeddings",)
        logs = (*ordered_keys("qvendi", metric.orders), "quality")
        super().__init__(metric, inputs=inputs, logs=logs)
        self.scorer = scorer
        self.on = on

    def update(self, batch: EmbeddedBatch) -> None:
        rows = batch.embeddings.shape[0]
        qualities = check_scores(self.scorer(getattr(batch, self.on)), rows, "quality")
        self.metric.update(batch.embeddings, qualities)

    def compute(self, name: str) -> MetricValues:
        values = super().compute(name)
        values.scalars["quality"] = float(self.metric.mean_quality)
        return values


def quality_metric(
    quality: Callable[[Any], Tensor] | None,
    quality_input: QualityInput,
    orders: Sequence[float],
    kernel: Kernel,
) -> EvaluationMetric | None:
    """The quality-weighted Vendi score with the user's per-sample scorer, if one was given."""
    if quality_input not in get_args(QualityInput):
        raise ValueError(
            f"`quality_input` must be one of {list(get_args(QualityInput))}, got {quality_input!r}"
        )
    if quality is None:
        return None
    if not callable(quality):
        raise TypeError(
            "`quality` must be a callable scoring a batch of samples (or of their embeddings, "
            f"with quality_input='embeddings') -> (B,) floats, got {type(quality).__name__}"
        )
    metric = QualityWeightedVendiScore(q=orders, kernel=kernel)
    return _QualityVendi(metric, quality, quality_input)


PROMPT_AWARE = {"cond_vendi": ConditionalVendiScore, "info_vendi": InformationVendiScore}
"""The published prompt-aware scores (arXiv 2411.02817) by the name they are logged under."""


def prompt_aware_metric(
    name: str, kind: str, orders: Sequence[float], kernel: Kernel
) -> EvaluationMetric:
    """Conditional-Vendi or Information-Vendi (``name``): prompts are compared by the cosine
    kernel of their text embeddings, class labels by the label kernel; the samples' kernel is
    the Vendi score's (cosine or Gaussian)."""
    conditions = "condition_ids" if kind == "class" else "condition_embeddings"
    metric = PROMPT_AWARE[name](q=orders, kernel=kernel)
    return EvaluationMetric(
        metric, inputs=("embeddings", conditions), logs=ordered_keys(name, orders)
    )


def optional_metrics(
    conditions: ConditionSet,
    choices: Mapping[str, MetricChoice],
    orders: Sequence[float],
    kernel: Kernel,
    sce_kwargs: Mapping[str, Any],
) -> dict[str, EvaluationMetric]:
    """SCE, CLIPScore, Conditional- and Information-Vendi, those that ``choices`` turn on
    (the per-condition Vendi score is :func:`vendi_metrics`')."""
    metrics: dict[str, EvaluationMetric] = {}
    if choices["sce"].on:
        metrics["sce"] = sce_metric(sce_kwargs)
    if choices["clip_score"].on:
        metrics["clip_score"] = _CLIPScore(EmbeddingCLIPScore(conditions.num_conditions))
    for name in PROMPT_AWARE:
        if choices[name].on:
            metrics[name] = prompt_aware_metric(name, conditions.kind, orders, kernel)
    return metrics


def lexical_metrics(
    n: int | Sequence[int] = (1, 2, 3, 4),
    self_bleu: bool = True,
    *,
    max_n: int = 4,
    tokenizer: Callable[[str], Sequence[Any]] | None = None,
) -> dict[str, EvaluationMetric]:
    """Distinct-n and self-BLEU plug-ins for ``metrics=``, on the generated strings themselves.

    Logged as ``distinct_1``, ``distinct_2``, ... and ``self_bleu``; exact under DDP (every
    rank's texts are gathered). Only for generators that return strings.

    Args:
        n: the distinct-n orders.
        self_bleu: add self-BLEU.
        max_n: self-BLEU's highest n-gram order.
        tokenizer: ``tokenizer(text) -> tokens``; default: whitespace-separated words.

    Example:
        >>> sorted(lexical_metrics(n=(1, 2)))
        ['distinct', 'self_bleu']
    """
    distinct = DistinctN(n, tokenizer)
    logs = tuple(f"distinct_{order}" for order in distinct.orders)
    plugins = {"distinct": EvaluationMetric(distinct, inputs=("samples",), logs=logs)}
    if self_bleu:
        plugins["self_bleu"] = EvaluationMetric(SelfBLEU(max_n, tokenizer), inputs=("samples",))
    return plugins


def as_evaluation_metric(name: str, metric: Any) -> EvaluationMetric:
    """Wrap a bare torchmetrics ``Metric`` (it takes the embeddings); check the others."""
    if isinstance(metric, EvaluationMetric):
        return metric
    if isinstance(metric, Metric):
        return EvaluationMetric(metric)
    raise TypeError(
        f"`metrics[{name!r}]` must be a torchmetrics Metric or an EvaluationMetric, got "
        f"{type(metric).__name__}"
    )
