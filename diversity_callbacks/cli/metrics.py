"""The evaluator of one run, from the metric options: which metrics apply, their kernels, the
memorization reference, and the exact Gaussian kernel's memory guard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diversity_callbacks.cli.errors import InputError
from diversity_callbacks.cli.options import MetricOptions

GIB = 1024**3
KERNEL_COPIES = 3
"""The exact Gaussian kernel's compute holds about three n x n float64 matrices at once (the
kernel, the copy ``eigvalsh`` works on, its workspace)."""

SWITCH_FLAGS = {
    "per_condition": "--per-prompt",
    "sce": "--sce",
    "clip_score": "--clip-score",
    "cond_vendi": "--cond-vendi",
    "info_vendi": "--info-vendi",
}
"""The evaluator's switch of each optional metric, and the flag that sets it."""

NEEDS = {
    "conditions": "prompts (none were found)",
    "prompts": "prompts (none were found)",
    "repeated": "a prompt with 2 or more images",
    "text_embedder": (
        "an embedder of prompts (embed_texts; for embeddings files, a 'text_embeddings' key)"
    ),
    "kernel": "--vendi-kernel cosine or gaussian",
}
"""What an optional metric lacks (:attr:`~diversity_callbacks.evaluation.applicability.
Requirement.code`), in the command's words."""


def build_evaluator(
    prompts: Sequence[str],
    counts: Sequence[int],
    embedder: Any,
    value_range: str | None,
    options: MetricOptions,
    batch_size: int,
) -> Any:
    """The evaluator of one run's existing samples
    (:meth:`~diversity_callbacks.DiversityEvaluator.for_existing`), from the options.

    Args:
        prompts: the run's prompts (empty: unconditional).
        counts: the samples of each prompt (``[n]`` without prompts).
        embedder: what embeds the samples.
        value_range: ``"uint8"`` for images, None for embeddings.
        options: the metric options.
        batch_size: samples per embedding batch.

    Raises:
        InputError: for a metric switched ``on`` that does not apply here (naming what it
            needs), or options the evaluator refuses.
    """
    from diversity_callbacks.evaluation.conditions import ConditionSet
    from diversity_callbacks.evaluation.evaluator import DiversityEvaluator
    from diversity_callbacks.evaluation.options import EvaluatorOptions

    conditions = ConditionSet.from_arguments(prompts=list(prompts) if prompts else None)
    settings = EvaluatorOptions(
        embedder=embedder,
        value_range=value_range,  # type: ignore[arg-type]
        batch_size=batch_size,
        modes=options.modes or 0,
        vendi_orders=options.vendi_orders,
        vendi_kernel=options.vendi_kernel or "cosine",
        sce_kernel=options.sce_kernel,
        **metric_switches(conditions, counts, embedder, options),
        **_reference_options(options, value_range),
    )
    try:
        return DiversityEvaluator.for_existing(conditions, counts, settings)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error


def metric_switches(
    conditions: Any, counts: Sequence[int], embedder: Any, options: MetricOptions
) -> dict[str, bool]:
    """Which optional metrics run, as the package's one place decides
    (:func:`~diversity_callbacks.evaluation.applicability.applicable_metrics`): ``auto`` where
    they apply, ``on`` (an error where not), ``off``.

    Raises:
        InputError: for a metric asked ``on`` that does not apply, naming what it needs.
    """
    from diversity_callbacks.evaluation.applicability import applicable_metrics

    requested = {
        name: {"on": True, "off": False}.get(getattr(options, _choice(name)))
        for name in SWITCH_FLAGS
    }
    choices = applicable_metrics(
        conditions,
        counts,
        embedder=embedder,
        vendi_kernel=options.vendi_kernel or "cosine",
        requested=requested,
    )
    for name, choice in choices.items():
        if choice.refused:
            needs = dict.fromkeys(NEEDS[requirement.code] for requirement in choice.unmet)
            raise InputError(f"{SWITCH_FLAGS[name]} on needs {' and '.join(needs)}")
    return {name: choice.on for name, choice in choices.items()}


def _choice(switch: str) -> str:
    """The option holding a switch's ``auto``/``on``/``off``: ``per_condition`` is
    ``--per-prompt``."""
    return "per_prompt" if switch == "per_condition" else switch


def _reference_options(options: MetricOptions, value_range: str | None) -> dict[str, Any]:
    """The evaluator's ``reference=`` and threshold from ``--reference``; a folder of training
    images needs an image run (an embeddings run has no image embedder to embed them with)."""
    if not options.reference:
        return {}
    if value_range is None and Path(options.reference).is_dir():
        raise InputError(
            f"--reference {options.reference!r} is a folder of images, but the run is a file of "
            "embeddings, which has no image embedder: give --reference the training set's "
            "embeddings (.pt/.npy) made by the same embedder"
        )
    return {
        "reference": options.reference,
        "memorization_kwargs": {"threshold": options.copy_threshold},
    }


def check_kernel_memory(options: MetricOptions, run: str, rows: int) -> None:
    """Refuse the exact Gaussian kernel when its n x n matrices would exceed the limit."""
    if not options.exact_gaussian:
        return
    sigma = float(options.vendi_kernel.sigma)  # type: ignore[union-attr, arg-type]
    needed = KERNEL_COPIES * 8 * rows * rows
    if needed > options.max_kernel_memory * GIB:
        raise InputError(
            f"run {run!r}: the exact Gaussian kernel of {rows:,} images needs about "
            f"{needed / GIB:,.1f} GiB ({KERNEL_COPIES} float64 {rows:,} x {rows:,} matrices), "
            f"above --max-kernel-memory {options.max_kernel_memory:g} GiB. Stream instead with "
            f"random Fourier features (--vendi-kernel gaussian:sigma={sigma:g},features=4096: a "
            "D x D state whatever the number of images) or the cosine kernel (--vendi-kernel "
            "cosine), or raise --max-kernel-memory if the machine has the memory"
        )
