"""``DiversityEvaluator``: one diversity evaluation of a generator, in any training loop or none.

Left to right: the fixed sampling plan -> this rank's share -> the generator (eval mode, no grad,
global RNG isolated; :mod:`~diversity_callbacks.evaluation.sampling`) -> the one pipeline of
:mod:`~diversity_callbacks.evaluation.pipeline` (checked samples -> the embedder -> every metric's
``update`` -> ``compute`` on every rank) -> an :class:`EvaluationResult`. The Lightning callback,
a plain PyTorch loop and a ``torch.distributed`` script all call
:meth:`DiversityEvaluator.evaluate`; samples that already exist go through the same pipeline
(:func:`~diversity_callbacks.evaluate_existing`).

Sample ``i`` is drawn for condition ``i // samples_per_condition`` with a generator seeded from
``(seed, i)`` alone, so two evaluations differ only because the model changed and the values do
not depend on the number of ranks. Under ``torch.distributed`` each rank draws a contiguous share
(no padding; a rank may draw nothing), the metric states are synced and every rank gets the same
result. The sampling contract is :data:`~diversity_callbacks.evaluation.sampling.SampleFn`'s.

Example:
    >>> import torch
    >>> evaluator = DiversityEvaluator(
    ...     num_samples=6, embedder=lambda s: s, value_range=None, vendi_kernel="linear"
    ... )
    >>> def sample(conditions, generators):  # unconditional: conditions is None
    ...     return torch.stack([torch.randn(3, generator=g) for g in generators])
    >>> result = evaluator.evaluate(sample)
    >>> sorted(result.scalars)
    ['diversity/eval_seconds', 'diversity/vendi_q1', 'diversity/vendi_q2']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng

from diversity_callbacks.evaluation.applicability import MetricChoice, applicable_metrics
from diversity_callbacks.evaluation.assembly import evaluator_metrics
from diversity_callbacks.evaluation.conditions import ConditionSet, EvaluationSet, SamplingPlan
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.metrics import EvaluationMetric
from diversity_callbacks.evaluation.modes import ModeCollector, ModeReference
from diversity_callbacks.evaluation.options import EvaluatorOptions, kernel_settings
from diversity_callbacks.evaluation.pipeline import (
    BatchSource,
    EvaluationParts,
    OneAtATime,
    run_evaluation,
)
from diversity_callbacks.evaluation.results import (
    TIMING_KEY,
    EvaluationResult,
    mode_reference_of,
    result_key,
    result_keys,
)
from diversity_callbacks.evaluation.samples import SampleEmbedder, thumbnails_of
from diversity_callbacks.evaluation.sampling import SampleFn, device_of, eval_mode, sampled_source
from diversity_callbacks.functional.spectrum import parse_orders
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import check_positive_int

__all__ = [
    "TIMING_KEY",
    "DiversityEvaluator",
    "EvaluationResult",
    "SampleFn",
    "eval_mode",
]


class DiversityEvaluator:
    r"""Sample a generator on a fixed evaluation set, embed the samples and score their diversity.

    Give exactly one of ``prompts`` (text-to-image and other text-conditional models),
    ``class_labels`` (class-conditional models) or ``num_samples`` (unconditional models). Under
    ``torch.distributed`` every rank must call :meth:`evaluate`.

    Args:
        prompts: a list of prompts, or the path of a UTF-8 file with one prompt per line.
        samples_per_condition: samples drawn per prompt or class.
        class_labels: integer labels, or a mapping of names to labels.
        num_samples: an unconditional generator: draw this many samples.
        seed: seed of the sampling plan, an integer >= 0.
        options: the :class:`~diversity_callbacks.evaluation.options.EvaluatorOptions`, as
            keyword arguments: ``embedder``, ``value_range``, ``batch_size``, ``vendi_orders``,
            ``vendi_kernel``, ``per_condition``, ``sce``, ``clip_score``, ``cond_vendi``,
            ``info_vendi``, ``quality``, ``metrics``, ``reference``, ``modes``, ``prefix``...
            (each documented there). The optional metrics (``None`` switches) are decided by
            :func:`~diversity_callbacks.evaluation.applicability.applicable_metrics`; the
            decision is :attr:`choices`.

    """

    def __init__(
        self,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        samples_per_condition: int = 8,
        *,
        class_labels: Sequence[int] | Mapping[str, int] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        **options: Any,
    ) -> None:
        checked = EvaluatorOptions.from_keywords("DiversityEvaluator", options)
        plan = EvaluationSet.from_arguments(
            prompts=prompts,
            class_labels=class_labels,
            num_samples=num_samples,
            samples_per_condition=samples_per_condition,
            seed=seed,
        )
        self._assemble(plan.condition_set, plan, plan.samples_per_condition, checked)

    @classmethod
    def for_existing(
        cls,
        conditions: ConditionSet,
        counts: Sequence[int],
        options: EvaluatorOptions | None = None,
        **keywords: Any,
    ) -> DiversityEvaluator:
        """An evaluator of existing samples (:func:`~diversity_callbacks.evaluate_existing`)
        whose ``condition_ids`` number ``conditions``, each holding ``counts[c]`` samples
        (``[n]`` when unconditional); no sampling plan. The ``None`` switches are decided from
        ``counts``. Give the ``options`` as one value or as keyword arguments.

        Example:
            >>> conditions = ConditionSet.from_arguments(prompts=["a cat", "a dog"])
            >>> evaluator = DiversityEvaluator.for_existing(
            ...     conditions, [3, 1], embedder=lambda s: s, value_range=None
            ... )
            >>> sorted(evaluator.metrics)
            ['per_prompt_vendi', 'vendi']
        """
        if options is not None and keywords:
            raise TypeError(f"give `options` or keyword options, not both (got {sorted(keywords)})")
        if options is None:
            options = EvaluatorOptions.from_keywords("DiversityEvaluator.for_existing", keywords)
        evaluator = cls.__new__(cls)
        evaluator._assemble(conditions, None, conditions.checked_counts(counts), options)
        return evaluator

    def _assemble(
        self,
        conditions: ConditionSet,
        plan: SamplingPlan | None,
        counts: int | Sequence[int],
        options: EvaluatorOptions,
    ) -> None:
        """Check the options and build every metric: bad settings fail here, not mid-training."""
        self.conditions, self.plan, self.options = conditions, plan, options
        self.sample_embedder = SampleEmbedder(options.value_range, options.embedder)
        self.batch_size = check_positive_int(options.batch_size, "batch_size")
        self.vendi_orders, _ = parse_orders(options.vendi_orders)
        self.vendi_kernel = options.kernel()
        self.kernel_kwargs = kernel_settings(self.vendi_kernel)  # by 0.1's names
        self.sce_kwargs = options.sce_options()
        self.thumbnail_limits = options.thumbnail_limits()
        self.memorization = options.memorization()
        self.prefix = options.checked_prefix()
        self.mode_options = options.checked_mode_options()
        self.choices: dict[str, MetricChoice] = applicable_metrics(  # asked, and computed
            conditions,
            counts,
            embedder=options.embedder,
            vendi_kernel=self.vendi_kernel,
            requested=options.switches,
        )
        self.metrics: dict[str, EvaluationMetric] = evaluator_metrics(
            conditions, self.choices, options, self.vendi_orders, self.vendi_kernel
        )
        self._running = OneAtATime()
        self._ranks_agree = False  # every rank's settings were found equal (checked once)

    # ------------------------------------------------------------------ set-up

    @property
    def evaluation_set(self) -> SamplingPlan | None:
        """The sampling plan (an :class:`EvaluationSet`), None for existing samples: ``plan``."""
        return self.plan

    @property
    def embedder(self) -> Any:
        """The embedder (the default CLIP one once :meth:`prepare` built it)."""
        return self.sample_embedder.embedder

    @property
    def sce(self) -> bool:
        """Whether the Schur complement entropy is computed (``choices["sce"]``)."""
        return self.choices["sce"].on

    @property
    def parts(self) -> EvaluationParts:
        """What the pipeline runs on: the conditions, the embedder, the metrics, the prefix."""
        return EvaluationParts(self.conditions, self.sample_embedder, self.metrics, self.prefix)

    def result_keys(self, metric: str | None = None) -> list[str]:
        """The logged keys in display order, as the metrics declare them; ``metric``'s alone."""
        return result_keys(self.metrics, self.prefix, self.mode_options is not None, metric)

    def key(self, name: str) -> str:
        """The logged key of ``name``: ``key("vendi_q1") == "diversity/vendi_q1"``."""
        return result_key(self.prefix, name)

    def prepare(self, device: torch.device | str = "cpu", progress: bool = True) -> None:
        """Build the default embedder (if none was given), embed the reference set (once; a
        collective under DDP) and move metrics and embedder.

        :meth:`evaluate` calls it; call it earlier to fail early (the callback does at setup).
        """
        device = torch.device(device)
        if self.embedder is None:
            with isolate_rng():  # building a model consumes global random numbers
                from diversity_callbacks.embedders.clip import CLIPEmbedder

                value_range = self.sample_embedder.value_range
                self.sample_embedder = SampleEmbedder(value_range, CLIPEmbedder())
        for metric in self.metrics.values():
            metric.to(device)
        if isinstance(self.embedder, torch.nn.Module):
            self.embedder.to(device)
        if self.memorization is not None and "memorization" not in self.metrics:
            plugin = self.memorization.plugin(self.sample_embedder, device, progress)
            self.metrics["memorization"] = plugin

    def settings(self) -> dict[str, str]:
        """What every rank's evaluator must share: the conditions (as a digest), the plan and
        every option that changes the values or the number of generator calls."""
        conditions, plan, memorization = self.conditions, self.plan, self.memorization
        return {
            "conditions": f"{conditions.num_conditions} {conditions.kind} conditions "
            f"(digest {conditions.digest()})",
            "samples_per_condition": repr(plan and plan.samples_per_condition),
            "seed": repr(plan and plan.seed),
            "batch_size": repr(self.batch_size),
            "vendi_orders": repr(self.vendi_orders),
            **{f"vendi_{name}": repr(value) for name, value in self.kernel_kwargs.items()},
            "sce_kwargs": repr(sorted(self.sce_kwargs.items())),
            "metrics": repr(list(self.metrics)),
            "reference": "none" if memorization is None else f"{len(memorization.reference)} rows",
            "memorization_kwargs": repr(
                sorted(memorization.options.items()) if memorization else []
            ),
            "value_range": repr(self.sample_embedder.value_range),
            "prefix": repr(self.prefix),
        }

    def check_ranks_agree(self) -> None:
        """Collective, once per evaluator: every rank must have built the same evaluator (ranks
        built with other prompts, orders or seeds would draw overlapping samples or log
        different values per rank, silently); else an :class:`EvaluationError` on every rank
        names the first rank whose :meth:`settings` differ from rank 0's, and how."""
        if self._ranks_agree or distributed.rank_and_world_size()[1] == 1:
            return
        difference = distributed.first_difference(self.settings())
        if difference is not None:
            rank, differing = difference
            raise EvaluationError(
                f"rank {rank}'s DiversityEvaluator differs from rank 0's: "
                f"{'; '.join(differing)}. Build the same evaluator on every rank (each "
                "rank draws its share of one evaluation set)"
            )
        self._ranks_agree = True

    # ------------------------------------------------------------------ one evaluation

    def evaluate(
        self,
        sample_fn: SampleFn,
        *,
        module: torch.nn.Module | None = None,
        device: torch.device | str | None = None,
        precision_context: Callable[[], AbstractContextManager] | None = None,
        thumbnails: bool = False,
        progress: bool = True,
        step: int | None = None,
        compare_to: EvaluationResult | ModeReference | None = None,
    ) -> EvaluationResult:
        """Sample, embed and score the sampling plan; every rank must call it.

        Args:
            sample_fn: the generator, called as :data:`SampleFn` says.
            module: put in eval mode while sampling (each submodule's own mode is restored
                afterwards, also on error); its parameters' device is the default ``device``.
            device: where generators, embeddings and metric states live; default that of
                ``module``, else the CPU.
            precision_context: a context manager factory entered around each ``sample_fn`` call
                (the Lightning callback passes the trainer's autocast).
            thumbnails: keep uint8 thumbnails of the first conditions' images, on rank 0.
            progress: show a progress bar on rank 0.
            step: the training step, named in error messages.
            compare_to: an earlier result of this evaluator (or its ``mode_reference``): with
                ``modes``, also find the modes lost and gained since then.

        Raises:
            EvaluationError: on every rank, when any rank failed to sample, embed or compute.
            TypeError: for an evaluator of existing samples (it has no sampling plan).
        """
        if self.plan is None:
            raise TypeError(
                "this DiversityEvaluator scores existing samples (for_existing): it has no "
                "sampling plan; score batches with evaluate_existing"
            )
        device = torch.device(device) if device is not None else device_of(module)
        plan, limits = self.plan, self.thumbnail_limits
        keep = thumbnails and self.sample_embedder.value_range is not None
        source = sampled_source(
            self.plan,
            sample_fn,
            batch_size=self.batch_size,
            device=device,
            module=module,
            precision_context=precision_context,
            description=f"{self.prefix}: sampling",
            thumbnails=(lambda images, batch: thumbnails_of(images, batch, plan, *limits))
            if keep
            else None,
        )
        return self.run(
            source, device, progress=progress, previews=thumbnails, compare_to=compare_to, step=step
        )

    def run(
        self,
        source: BatchSource,
        device: torch.device,
        *,
        progress: bool = True,
        previews: bool = False,
        offset_by_rank: bool = False,
        compare_to: EvaluationResult | ModeReference | None = None,
        step: int | None = None,
    ) -> EvaluationResult:
        """One evaluation of ``source`` through the pipeline with this evaluator's parts, held
        alone, prepared and checked across ranks; :meth:`evaluate` and
        :func:`~diversity_callbacks.evaluate_existing` call it. ``previews``: the modes keep
        thumbnails; ``offset_by_rank``: their indices count this rank's samples only."""
        reference = mode_reference_of(compare_to, self.mode_options is not None)
        with self.exclusive():
            self.prepare(device, progress)
            self.check_ranks_agree()
            modes = None
            if self.mode_options is not None:
                modes = ModeCollector(self.mode_options, previews, offset_by_rank)
            return run_evaluation(
                source,
                self.parts,
                device=device,
                progress=progress,
                modes=modes,
                reference=reference,
                step=step,
            )

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold this evaluator for one evaluation; a second one while it runs raises
        ``RuntimeError`` (its metrics hold one evaluation's states: two would mix)."""
        return self._running.hold(
            f"this DiversityEvaluator (prefix {self.prefix!r}, {self.conditions.kind} "
            "conditions) is already evaluating: its metrics hold one evaluation at a time, so a "
            "second one (another thread, or a sample_fn that evaluates again) would mix both; "
            "build one evaluator per thread"
        )

    def reset(self) -> None:
        """Empty every metric's state."""
        for metric in self.parts.metrics.values():
            metric.reset()
