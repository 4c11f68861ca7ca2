"""What one evaluation measured: :class:`EvaluationResult`, assembled from every metric's values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from diversity_callbacks.evaluation.memorization import CopiedSamples
from diversity_callbacks.evaluation.metrics import EvaluationMetric, MetricValues
from diversity_callbacks.evaluation.modes import MODE_KEYS, ModeReference, Preview
from diversity_callbacks.functional.modes import Mode

TIMING_KEY = "eval_seconds"
"""The key of an evaluation's wall time in :attr:`EvaluationResult.scalars` (after the prefix)."""


def result_key(prefix: str, name: str) -> str:
    """The logged key of ``name``: ``{prefix}/{name}``, the one place keys are built.

    Example:
        >>> result_key("diversity", "vendi_q1")
        'diversity/vendi_q1'
    """
    return f"{prefix}/{name}"


def result_keys(
    metrics: Mapping[str, EvaluationMetric], prefix: str, modes: bool, metric: str | None = None
) -> list[str]:
    """Every logged key in display order: each metric's as it declares them
    (:meth:`~diversity_callbacks.EvaluationMetric.result_keys`), then the modes' (with
    ``modes``) and the timing's; with ``metric``, that metric's only."""
    if metric is not None:
        return [result_key(prefix, key) for key in metrics[metric].result_keys(metric)]
    names = [key for name, plugin in metrics.items() for key in plugin.result_keys(name)]
    names += [*(MODE_KEYS if modes else ()), TIMING_KEY]
    return [result_key(prefix, name) for name in names]


@dataclass
class EvaluationResult:
    """What one evaluation measured.

    Attributes:
        scalars: logged values keyed ``{prefix}/vendi_q1``, ``{prefix}/per_prompt_vendi_q1``,
            ``{prefix}/sce``, ..., identical on every rank, and this rank's
            ``{prefix}/eval_seconds``.
        per_condition: per-condition columns (``"vendi_q1"``..., ``"clip_score"``), each
            ``(num_conditions,)``.
        spectrum: eigenvalues of ``K / n`` (descending), when asked for.
        copies: with a ``reference``: every sample's nearest training sample and similarity,
            and the most-copied samples beside theirs (on rank 0).
        thumbnails: uint8 ``(3, h, w)`` images by sample index, gathered on rank 0, when asked for.
        timings: seconds this rank spent ``sampling``, ``embedding`` and on the ``metric``.
        num_samples: samples this rank drew.
        modes: the leading modes (``modes=k``), largest share first, the same on every rank:
            ``.share`` (an eigenvalue of ``K / n``) and ``.samples`` (indices into the
            evaluation set, largest loading first).
        lost_modes: with ``compare_to``, the modes of the earlier evaluation that this one
            lacks; their ``.samples`` index the earlier evaluation (the same seeds).
        gained_modes: with ``compare_to``, this evaluation's modes that the earlier one lacked.
        mode_reference: what a later ``evaluate(..., compare_to=this_result)`` compares with.
        mode_previews: thumbnails (or texts) of the samples the modes show, on rank 0.
        compared_to: the reference the lost and gained modes were measured against.
    """

    scalars: dict[str, float]
    per_condition: dict[str, Tensor] = field(default_factory=dict)
    spectrum: Tensor | None = None
    copies: CopiedSamples | None = None
    thumbnails: dict[int, Tensor] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    num_samples: int = 0
    modes: list[Mode] = field(default_factory=list)
    lost_modes: list[Mode] = field(default_factory=list)
    gained_modes: list[Mode] = field(default_factory=list)
    mode_reference: ModeReference | None = None
    mode_previews: dict[int, Preview] = field(default_factory=dict)
    compared_to: ModeReference | None = None

    @classmethod
    def merge(
        cls, values: Mapping[str, MetricValues], prefix: str, num_samples: int
    ) -> EvaluationResult:
        """One result from every metric's values (by metric name), scalars keyed
        ``{prefix}/{key}``.

        Raises:
            ValueError: when two metrics log the same key, or one logs the timing's key,
                naming both: one would silently overwrite the other.
        """
        result = cls(scalars={}, num_samples=num_samples)
        owners = {TIMING_KEY: "the evaluation's timing"}
        for name, value in values.items():
            for key in value.scalars:
                if key in owners:
                    raise ValueError(
                        f"metric {name!r} logs {key!r}, which {owners[key]} logs too: rename "
                        "one of them in `metrics` (a dict result logs {name}_{key})"
                    )
                owners[key] = f"metric {name!r}"
            result.scalars.update({result_key(prefix, k): v for k, v in value.scalars.items()})
            result.per_condition.update(value.per_condition)
            if value.spectrum is not None:
                result.spectrum = value.spectrum
            if value.copies is not None:
                result.copies = value.copies
        return result


def mode_reference_of(
    compare_to: EvaluationResult | ModeReference | None, modes: bool
) -> ModeReference | None:
    """The reference an evaluation compares its modes with, checked: ``compare_to`` needs an
    evaluator with ``modes`` (``modes``) and a result that kept its modes."""
    if compare_to is None:
        return None
    if not modes:
        raise ValueError("`compare_to` needs the evaluator's `modes` >= 1, got modes=0")
    if isinstance(compare_to, EvaluationResult):
        if compare_to.mode_reference is None:
            raise ValueError(
                "`compare_to` must be a result of an evaluator with `modes` >= 1 (it keeps "
                "what the comparison needs), got a result without `mode_reference`"
            )
        return compare_to.mode_reference
    if not isinstance(compare_to, ModeReference):
        raise TypeError(
            "`compare_to` must be an EvaluationResult or a ModeReference, got "
            f"{type(compare_to).__name__}"
        )
    return compare_to
