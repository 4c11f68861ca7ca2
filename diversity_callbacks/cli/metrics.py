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

_TEXT_EMBEDDER = (
    "an embedder of prompts (embed_texts; for embeddings files, a 'text_embeddings' key)"
)
_PROMPTS = "prompts (none were found)"
_REPEATED = "a prompt with 2 or more images"


def build_evaluator(
    prompts: Sequence[str],
    counts: Sequence[int],
    embedder: Any,
    value_range: str | None,
    options: MetricOptions,
    batch_size: int,
) -> Any:
    """The :class:`~diversity_callbacks.DiversityEvaluator` of one run, from the options.

    ``--per-prompt``, ``--sce`` and ``--clip-score`` ``auto`` turn the metric on where it is
    defined: prompts, a prompt with two or more images (not for CLIPScore), and (SCE, CLIPScore)
    an embedder with ``embed_texts``.
    """
    from diversity_callbacks.evaluation.evaluator import DiversityEvaluator

    switches = metric_switches(prompts, counts, embedder, value_range, options)
    per_condition, sce = switches.pop("per_condition"), switches.pop("sce")
    settings: dict[str, Any] = {
        "embedder": embedder,
        "value_range": value_range,
        "batch_size": batch_size,
        "modes": options.modes or 0,
        "vendi_orders": list(options.vendi_orders),
        **_vendi_kernel(options),
        "sce_kwargs": {} if options.sce_kernel is None else {"kernel": options.sce_kernel},
        **switches,
        **_reference_options(options, value_range),
    }
    try:
        if prompts:
            return DiversityEvaluator(
                list(prompts),
                samples_per_condition=2,
                per_condition=per_condition,
                sce=sce,
                **settings,
            )
        return DiversityEvaluator(num_samples=1, per_condition=False, sce=False, **settings)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error


def metric_switches(
    prompts: Sequence[str],
    counts: Sequence[int],
    embedder: Any,
    value_range: str | None,
    options: MetricOptions,
) -> dict[str, bool]:
    """Which of the prompt-aware metrics run: ``{"per_condition": ..., "sce": ...,
    "clip_score": ..., "cond_vendi": ..., "info_vendi": ...}``.

    Raises:
        InputError: for a metric asked ``on`` that is not defined here, naming what it needs.
    """
    from diversity_callbacks.evaluation.samples import SampleEmbedder

    repeated = any(count >= 2 for count in counts)
    texts = SampleEmbedder(value_range, embedder).embeds_texts
    paired = [(_PROMPTS, bool(prompts)), (_TEXT_EMBEDDER, texts)]
    kernel = ("--vendi-kernel cosine or gaussian", options.kernel_name != "linear")
    return {
        "per_condition": _switch(
            options.per_prompt, "--per-prompt", [(_PROMPTS, bool(prompts)), (_REPEATED, repeated)]
        ),
        "sce": _switch(
            options.sce, "--sce", [(_PROMPTS, bool(prompts)), (_REPEATED, repeated), paired[1]]
        ),
        "clip_score": _switch(options.clip_score, "--clip-score", paired),
        "cond_vendi": _switch(options.cond_vendi, "--cond-vendi", [*paired, kernel]),
        "info_vendi": _switch(options.info_vendi, "--info-vendi", [*paired, kernel]),
    }


def _switch(choice: str, flag: str, needs: list[tuple[str, bool]]) -> bool:
    missing = [need for need, holds in needs if not holds]
    if choice == "on" and missing:
        raise InputError(f"{flag} on needs {' and '.join(missing)}")
    return choice != "off" and not missing


def _vendi_kernel(options: MetricOptions) -> dict[str, Any]:
    """The evaluator's Vendi kernel arguments."""
    kernel = options.vendi_kernel
    if kernel is None:
        return {}
    return {
        "vendi_kernel": kernel.name,
        "vendi_sigma": kernel.sigma,
        "vendi_num_features": kernel.num_features,
    }


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
