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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor

from diversity_callbacks.evaluation.applicability import MetricChoice, applicable_metrics
from diversity_callbacks.evaluation.assembly import evaluator_metrics
from diversity_callbacks.evaluation.conditions import ConditionSet, EvaluationSet, SamplingPlan
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.memorization import memorization_plugin
from diversity_callbacks.evaluation.metrics import EvaluationMetric
from diversity_callbacks.evaluation.modes import ModeCollector, ModeReference
from diversity_callbacks.evaluation.options import EvaluatorOptions
from diversity_callbacks.evaluation.pipeline import EvaluationParts, run_evaluation
from diversity_callbacks.evaluation.reference import ReferenceSet
from diversity_callbacks.evaluation.results import TIMING_KEY, EvaluationResult, mode_reference_of
from diversity_callbacks.evaluation.samples import SampleEmbedder, thumbnails_of
from diversity_callbacks.evaluation.sampling import SampleFn, device_of, eval_mode, sampled_source
from diversity_callbacks.functional.spectrum import parse_orders
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import check_positive_int

_RUNNING = threading.Lock()  # makes every evaluator's check-and-set of ``_running`` atomic

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
        embedder: for images, ``embed_images(images in [0, 1]) -> (B, D)`` (and
            ``embed_texts(prompts) -> (P, D)`` for SCE and CLIPScore), ``None`` for a default
            :class:`~diversity_callbacks.CLIPEmbedder`; for other samples, ``embed_samples`` or a
            callable. An ``nn.Module`` embedder is moved to the evaluation's device.
        value_range: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"`` for ``(B, 3, H, W)`` images
            (checked, converted to ``[0, 1]``); ``None`` for samples of any other kind (text,
            audio, molecules), handed to the embedder unchanged.
        batch_size: samples per call of the generator.
        seed: seed of the evaluation set.
        vendi_orders: orders q of the Vendi score (``"inf"`` allowed).
        vendi_kernel: ``"cosine"``, ``"linear"`` or ``"gaussian"``.
        vendi_sigma: bandwidth of the Gaussian kernel.
        vendi_num_features: approximate the Gaussian kernel with this many random frequencies.
        per_condition: the Vendi score within each condition, averaged (``per_prompt_vendi_*``,
            ``per_class_vendi_*``); ``None``: where there are 2+ samples per condition.
            Its 0.1 name ``conditional=`` still works, with a ``FutureWarning``.
        sce: the Schur complement entropy given the prompts and its text part; ``None``: where
            defined (prompts, ``embed_texts``, 2+ samples per prompt).
        sce_kwargs: keyword arguments of :class:`~diversity_callbacks.SchurComplementEntropy`.
        clip_score: the CLIPScore of each sample against its prompt (``clip_score``, per prompt
            in the table), from the embeddings the metrics already have; ``None``: where
            defined (prompts and ``embed_texts`` in the images' space).
        quality: a per-sample quality scorer (a reward model, an aesthetic score...): adds the
            quality-weighted Vendi score ``qvendi_q1``... (mean quality times ``vendi_q1``...)
            and the mean ``quality``. Called on each batch, it returns ``(B,)`` finite floats.
        quality_input: what ``quality`` is called on: ``"samples"`` (images as ``(B, 3, H, W)``
            floats in [0, 1], other samples as generated) or ``"embeddings"`` (``(B, D)``).
        cond_vendi: the published Conditional-Vendi score (``cond_vendi_q1``, ...; prompts by the
            cosine kernel of their text embeddings, classes by the label kernel); ``None``:
            where defined (class labels, or prompts and ``embed_texts``).
        info_vendi: the Information-Vendi score (``info_vendi_q1``, ...); ``None`` as above.
        metrics: more metrics by name: torchmetrics ``Metric`` objects taking the embeddings, or
            :class:`~diversity_callbacks.EvaluationMetric` wrappers declaring other inputs.
        reference: training samples to score memorization against (``copy_rate``,
            ``nn_similarity_*``, ``l2_memorization``, ``authenticity``): a tensor of samples in
            ``value_range``, a ``Dataset`` or ``DataLoader``, a folder of images, or a
            ``.pt``/``.npy`` file of embeddings. Embedded once, at :meth:`prepare`, and cached
            on disk (see :class:`~diversity_callbacks.evaluation.reference.ReferenceSet`).
        memorization_kwargs: keyword arguments of
            :class:`~diversity_callbacks.MemorizationScore` (``threshold``, ``quantiles``,
            ``k``, ``alpha``, ``delta``, ``chunk_size``).
        reference_cache_dir: where the reference embeddings are cached; ``False``: nowhere.
        max_copies_shown: most-copied samples shown beside their nearest training sample.
        spectrum: also return the eigenvalues of the Vendi kernel.
        modes: the leading modes of the Vendi kernel per evaluation (``result.modes``, the
            ``num_modes`` scalar), and with ``evaluate(..., compare_to=...)`` the modes lost and
            gained since then (``lost_mode_mass``, ``gained_mode_mass``); 0: off.
        mode_options: ``samples`` per mode (16), the share ``threshold`` of ``num_modes``
            (0.01), KEN's ``eta`` (1.0), the ``preview_size`` of kept thumbnails (48 px).
        max_thumbnail_conditions: thumbnails of the first this many conditions, ...
        max_thumbnails_per_condition: ... and of the first this many samples of each.
        thumbnail_size: longest side of a thumbnail, in pixels.
        prefix: first part of every key of the result.

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
        """An evaluator of samples that already exist, for :func:`~diversity_callbacks.evaluate_existing`.

        It has no sampling plan (:meth:`evaluate` refuses it): the optional metrics (``None``
        switches) are decided from ``counts``, the samples each condition holds.

        Args:
            conditions: what the batches' ``condition_ids`` number (prompts, or none).
            counts: samples per condition (``[n]`` for unconditional samples).
            options: the evaluator's options as one value; or give them as ``keywords``.
            keywords: the options of :class:`DiversityEvaluator` (``embedder``, ``sce``, ...).

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
        counts = [check_count(count) for count in counts]
        if len(counts) != conditions.num_conditions:
            raise ValueError(
                f"`counts` must hold one count per condition, {conditions.num_conditions} in "
                f"all, got {len(counts)}"
            )
        evaluator = cls.__new__(cls)
        evaluator._assemble(conditions, None, counts, options)
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
        self.kernel_kwargs = options.kernel_kwargs
        self.sce_kwargs = dict(options.sce_kwargs or {})
        self.thumbnail_limits = options.thumbnail_limits()
        self.reference = None
        if options.reference is not None:
            self.reference = ReferenceSet(
                options.reference, cache_dir=options.reference_cache_dir, batch_size=self.batch_size
            )
        self.memorization_kwargs = dict(options.memorization_kwargs or {})
        if self.memorization_kwargs and self.reference is None:
            raise ValueError(
                "`memorization_kwargs` need a `reference` set to compare with, got "
                f"{sorted(self.memorization_kwargs)} and reference=None"
            )
        self.max_copies_shown = check_positive_int(options.max_copies_shown, "max_copies_shown")
        self.prefix = options.checked_prefix()
        self.mode_options = options.checked_mode_options()
        self.choices: dict[str, MetricChoice] = applicable_metrics(
            conditions,
            counts,
            embedder=options.embedder,
            vendi_kernel=options.vendi_kernel,
            requested=options.switches,
        )
        """Each optional metric: what was asked (``requested``) and whether it is ``on``."""
        self.metrics: dict[str, EvaluationMetric] = evaluator_metrics(
            conditions, self.choices, options, self.vendi_orders
        )
        self._running = False  # a flag, not a Lock: evaluators are pickled and deep-copied
        self._ranks_agree = False  # every rank's settings were found equal (checked once)

    # ------------------------------------------------------------------ set-up

    @property
    def evaluation_set(self) -> SamplingPlan | None:
        """The sampling plan (an :class:`EvaluationSet`); None for existing samples."""
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
    def clip_score(self) -> bool:
        """Whether the CLIPScore is computed (``choices["clip_score"]``)."""
        return self.choices["clip_score"].on

    @property
    def metric_inputs(self) -> set[str]:
        """Every input some metric's ``update`` takes."""
        return self.parts.inputs

    @property
    def parts(self) -> EvaluationParts:
        """What the pipeline runs on: the conditions, the embedder, the metrics, the prefix."""
        return EvaluationParts(self.conditions, self.sample_embedder, self.metrics, self.prefix)

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
        if self.reference is not None and "memorization" not in self.metrics:
            self.metrics["memorization"] = memorization_plugin(
                self.reference,
                self.sample_embedder,
                device,
                progress,
                shown=self.max_copies_shown,
                thumbnail_size=self.thumbnail_limits[2],
                options=self.memorization_kwargs,
            )
            self.metrics["memorization"].to(device)

    def settings(self) -> dict[str, str]:
        """What every rank's evaluator must share: the conditions (as a digest), the plan and
        every option that changes the values or the number of generator calls."""
        conditions, plan = self.conditions, self.plan
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
            "reference": "none" if self.reference is None else f"{len(self.reference)} rows",
            "memorization_kwargs": repr(sorted(self.memorization_kwargs.items())),
            "value_range": repr(self.sample_embedder.value_range),
            "prefix": repr(self.prefix),
        }

    def check_ranks_agree(self) -> None:
        """Collective, once per evaluator: every rank must have built the same evaluator.

        Ranks built with other prompts, orders or seeds would draw overlapping samples or log
        different values per rank, silently.

        Raises:
            EvaluationError: on every rank, naming the first rank whose :meth:`settings`
                differ from rank 0's, and how.
        """
        if self._ranks_agree or distributed.rank_and_world_size()[1] == 1:
            return
        ranks = distributed.all_gather_objects(self.settings())
        for rank, theirs in enumerate(ranks):
            differing = [
                f"{name} {ranks[0].get(name)} on rank 0, {theirs.get(name)} on rank {rank}"
                for name in {**ranks[0], **theirs}
                if ranks[0].get(name) != theirs.get(name)
            ]
            if differing:
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
        """
        if self.plan is None:
            raise TypeError(
                "this DiversityEvaluator scores existing samples (built by for_existing): it "
                "has no sampling plan to draw from; score batches with evaluate_existing, or "
                "build it with prompts=, class_labels= or num_samples="
            )
        device = torch.device(device) if device is not None else device_of(module)
        reference = self.mode_reference_of(compare_to)
        with self.exclusive():
            self.prepare(device, progress)
            self.check_ranks_agree()
            images = self.sample_embedder.value_range is not None
            source = sampled_source(
                self.plan,
                sample_fn,
                batch_size=self.batch_size,
                device=device,
                module=module,
                precision_context=precision_context,
                description=f"{self.prefix}: sampling",
                thumbnails=self._thumbnails if thumbnails and images else None,
            )
            modes = self.new_mode_collector(thumbnails)
            return run_evaluation(
                source,
                self.parts,
                device=device,
                progress=progress,
                modes=modes,
                reference=reference,
                step=step,
            )

    def _thumbnails(self, images: Tensor, batch: range) -> dict[int, Tensor]:
        assert self.plan is not None
        return thumbnails_of(images, batch, self.plan, *self.thumbnail_limits)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this evaluator for one evaluation; a second one while it runs is refused.

        Its metrics hold the states of one evaluation at a time: two threads evaluating at once
        (or a ``sample_fn`` that evaluates again) would mix their samples into one result.

        Raises:
            RuntimeError: when an evaluation of this evaluator is already running.
        """
        with _RUNNING:
            if self._running:
                raise RuntimeError(
                    f"this DiversityEvaluator (prefix {self.prefix!r}, {self.conditions.kind} "
                    f"conditions) is already evaluating: its metrics hold one evaluation at a "
                    "time, so a second one (another thread, or a sample_fn that evaluates "
                    "again) would mix both; build one evaluator per thread"
                )
            self._running = True
        try:
            yield
        finally:
            self._running = False

    def reset(self) -> None:
        """Empty every metric's state."""
        for metric in self.metrics.values():
            metric.reset()

    def mode_reference_of(
        self, compare_to: EvaluationResult | ModeReference | None
    ) -> ModeReference | None:
        """The reference to compare with, checked: ``compare_to`` needs ``modes``."""
        return mode_reference_of(compare_to, self.mode_options is not None)

    def new_mode_collector(
        self, previews: bool, offset_by_rank: bool = False
    ) -> ModeCollector | None:
        """This evaluation's collector of the modes' samples, None without ``modes``."""
        if self.mode_options is None:
            return None
        return ModeCollector(self.mode_options, previews, offset_by_rank)


def check_count(count: Any) -> int:
    """A number of existing samples of one condition: an integer >= 0."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"`counts` must hold integers >= 0, got {count!r}")
    return count
