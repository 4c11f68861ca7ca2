"""``DiversityEvaluator``: one diversity evaluation of a generator, in any training loop or none.

Left to right: the fixed evaluation set -> this rank's share -> the generator (eval mode, no grad,
global RNG isolated) -> checked samples -> the embedder -> every metric's ``update`` -> ``compute``
on every rank -> an :class:`EvaluationResult`. The Lightning callback, a plain PyTorch loop and a
``torch.distributed`` script all call :meth:`DiversityEvaluator.evaluate`.

Sample ``i`` is drawn for condition ``i // samples_per_condition`` with a generator seeded from
``(seed, i)`` alone, so two evaluations differ only because the model changed and the values do
not depend on the number of ranks. Under ``torch.distributed`` each rank draws a contiguous share
(no padding; a rank may draw nothing), the metric states are synced and every rank gets the same
result.

**Sampling contract.** For each batch of at most ``batch_size`` samples the evaluator calls
``sample_fn(conditions, generators)``, where ``generators`` is a list of ``torch.Generator`` on
the evaluation's device, one per sample, seeded for that sample alone (draw each sample's noise
from its own generator and the sample is the same at every evaluation and world size), and
``conditions`` is a ``list[str]`` of prompts, a ``(B,)`` long tensor of class labels on the
device, or ``None`` for an unconditional generator (``B = len(generators)``). It returns ``B``
samples: a ``(B, 3, H, W)`` tensor in ``value_range`` for images, a sequence of ``B`` items
otherwise.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor
from tqdm.auto import tqdm

from diversity_callbacks.evaluation.conditions import Conditions, EvaluationSet
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.memorization import CopiedSamples, MemorizationPlugin
from diversity_callbacks.evaluation.metrics import (
    EmbeddedBatch,
    MetricValues,
    QualityInput,
    as_evaluation_metric,
    builtin_metrics,
    builtin_result_keys,
    clip_score_metric,
    prompt_aware_metrics,
    quality_metric,
    sce_metric,
)
from diversity_callbacks.evaluation.modes import (
    MODE_KEYS,
    ModeCollector,
    ModeOptions,
    ModeReference,
    Preview,
    SharedMoment,
)
from diversity_callbacks.evaluation.reference import ReferenceSet
from diversity_callbacks.evaluation.samples import SampleEmbedder, thumbnails_of
from diversity_callbacks.evaluation.sharding import LockStep, Stopped, lockstep_calls, pad_call
from diversity_callbacks.functional.modes import Mode
from diversity_callbacks.functional.spectrum import Order, parse_orders
from diversity_callbacks.images import ValueRange
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.checks import check_positive_int
from diversity_callbacks.utilities.deprecations import renamed_arguments

_RUNNING = threading.Lock()  # makes every evaluator's check-and-set of ``_running`` atomic

TIMING_KEY = "eval_seconds"
"""The key of an evaluation's wall time in :attr:`EvaluationResult.scalars` (after the prefix)."""

SampleFn = Callable[[Conditions, list[torch.Generator]], Any]
"""``sample_fn(conditions, generators) -> samples``: see :meth:`DiversityEvaluator.evaluate`."""


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
            result.scalars.update({f"{prefix}/{k}": v for k, v in value.scalars.items()})
            result.per_condition.update(value.per_condition)
            if value.spectrum is not None:
                result.spectrum = value.spectrum
            if value.copies is not None:
                result.copies = value.copies
        return result


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
        embedder: Any = None,
        value_range: ValueRange | None = "[-1,1]",
        batch_size: int = 16,
        seed: int = 0,
        vendi_orders: Order | Sequence[Order] = (1, 2),
        vendi_kernel: str = "cosine",
        vendi_sigma: float | None = None,
        vendi_num_features: int | None = None,
        per_condition: bool | None = None,
        sce: bool | None = None,
        sce_kwargs: Mapping[str, Any] | None = None,
        clip_score: bool | None = None,
        quality: Callable[[Any], Tensor] | None = None,
        quality_input: QualityInput = "samples",
        cond_vendi: bool | None = None,
        info_vendi: bool | None = None,
        metrics: Mapping[str, Any] | None = None,
        reference: Any = None,
        memorization_kwargs: Mapping[str, Any] | None = None,
        reference_cache_dir: str | os.PathLike | bool | None = None,
        max_copies_shown: int = 16,
        spectrum: bool = False,
        modes: int = 0,
        mode_options: Mapping[str, Any] | None = None,
        max_thumbnail_conditions: int = 16,
        max_thumbnails_per_condition: int = 64,
        thumbnail_size: int = 128,
        prefix: str = "diversity",
        **former: Any,
    ) -> None:
        per_condition = renamed_arguments(
            "DiversityEvaluator", former, per_condition=per_condition
        )["per_condition"]
        self.evaluation_set = EvaluationSet.from_arguments(
            prompts=prompts,
            class_labels=class_labels,
            num_samples=num_samples,
            samples_per_condition=samples_per_condition,
            seed=seed,
        )
        self.sample_embedder = SampleEmbedder(value_range, embedder)
        self.embedder = embedder
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.vendi_orders, _ = parse_orders(vendi_orders)
        self.kernel_kwargs = {
            "kernel": vendi_kernel,
            "sigma": vendi_sigma,
            "num_features": vendi_num_features,
        }
        self.sce = sce
        self.sce_kwargs = dict(sce_kwargs or {})
        self.clip_score = clip_score
        self.prompt_aware = {"cond_vendi": cond_vendi, "info_vendi": info_vendi}
        self.thumbnail_limits = (
            check_positive_int(max_thumbnail_conditions, "max_thumbnail_conditions"),
            check_positive_int(max_thumbnails_per_condition, "max_thumbnails_per_condition"),
            check_positive_int(thumbnail_size, "thumbnail_size"),
        )
        self.reference = (
            None
            if reference is None
            else ReferenceSet(reference, cache_dir=reference_cache_dir, batch_size=batch_size)
        )
        self.memorization_kwargs = dict(memorization_kwargs or {})
        if self.memorization_kwargs and self.reference is None:
            raise ValueError(
                "`memorization_kwargs` need a `reference` set to compare with, got "
                f"{sorted(self.memorization_kwargs)} and reference=None"
            )
        self.max_copies_shown = check_positive_int(max_copies_shown, "max_copies_shown")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"`prefix` must be a non-empty string, got {prefix!r}")
        self.prefix = prefix
        self.mode_options = _mode_options(modes, mode_options)
        # Built here so that bad settings fail at construction; SCE waits for the embedder.
        self.metrics = builtin_metrics(
            self.evaluation_set, self.vendi_orders, self.kernel_kwargs, per_condition, spectrum
        )
        qvendi = quality_metric(quality, quality_input, self.vendi_orders, self.kernel_kwargs)
        if qvendi is not None:
            self.metrics["qvendi"] = qvendi
        taken = {
            *self.metrics,
            *self.prompt_aware,
            *builtin_result_keys(self.vendi_orders),
            *MODE_KEYS,
            TIMING_KEY,
            "memorization",
        }
        for name, metric in (metrics or {}).items():
            if name in taken:
                raise ValueError(
                    f"`metrics` name {name!r} is taken by a built-in metric or result (a plug-in "
                    f"named so would overwrite it); taken: {sorted(taken)}"
                )
            self.metrics[name] = as_evaluation_metric(name, metric)
        if self.embedder is not None:
            self._check_text_inputs()
            self._add_embedder_metrics()
        self._running = False  # a flag, not a Lock: evaluators are pickled and deep-copied
        self._ranks_agree = False  # every rank's settings were found equal (checked once)

    # ------------------------------------------------------------------ set-up

    @property
    def metric_inputs(self) -> set[str]:
        """Every input some metric's ``update`` takes."""
        return {name for metric in self.metrics.values() for name in metric.inputs}

    def prepare(self, device: torch.device | str = "cpu", progress: bool = True) -> None:
        """Build the default embedder (if none was given), embed the reference set (once; a
        collective under DDP) and move metrics and embedder.

        :meth:`evaluate` calls it; call it earlier to fail early (the callback does at setup).
        """
        device = torch.device(device)
        if self.embedder is None:
            with isolate_rng():  # building a model consumes global random numbers
                from diversity_callbacks.embedders.clip import CLIPEmbedder

                self.embedder = CLIPEmbedder()
            self.sample_embedder = SampleEmbedder(self.sample_embedder.value_range, self.embedder)
            self._add_embedder_metrics()
        for metric in self.metrics.values():
            metric.to(device)
        if isinstance(self.embedder, torch.nn.Module):
            self.embedder.to(device)
        if self.reference is not None and "memorization" not in self.metrics:
            self.metrics["memorization"] = self._memorization_plugin(device, progress)
            self.metrics["memorization"].to(device)

    def _memorization_plugin(self, device: torch.device, progress: bool) -> MemorizationPlugin:
        """The memorization scores against the reference set, embedded here."""
        assert self.reference is not None
        value_range = self.sample_embedder.value_range
        with torch.inference_mode(False), torch.no_grad():
            embeddings = self.reference.embeddings(self.sample_embedder, device, progress)
        return MemorizationPlugin(
            self.reference,
            embeddings,
            images=value_range is not None,
            value_range=value_range,
            shown=self.max_copies_shown,
            thumbnail_size=self.thumbnail_limits[2],
            options=self.memorization_kwargs,
        )

    def _check_text_inputs(self) -> None:
        """Refuse a plug-in taking prompt embeddings that the embedder cannot make, now rather
        than at the first batch of the first evaluation."""
        wanting = [n for n, m in self.metrics.items() if "condition_embeddings" in m.inputs]
        if wanting and not self.sample_embedder.embeds_texts:
            raise ValueError(
                f"`metrics` {wanting} take 'condition_embeddings', which needs an embedder with "
                f"embed_texts(prompts) -> (P, D), got {type(self.embedder).__name__} without it"
            )

    def settings(self) -> dict[str, str]:
        """What every rank's evaluator must share: the evaluation set (its conditions as a
        digest) and every option that changes the values or the number of generator calls."""
        evaluation_set = self.evaluation_set
        return {
            "conditions": f"{evaluation_set.num_conditions} {evaluation_set.kind} conditions "
            f"(digest {evaluation_set.digest()})",
            "samples_per_condition": repr(evaluation_set.samples_per_condition),
            "seed": repr(evaluation_set.seed),
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

    def _add_embedder_metrics(self) -> None:
        """Decide which metrics that depend on the embedder are on (SCE, CLIPScore, Conditional-
        and Information-Vendi: they need ``embed_texts`` for prompts), and register them."""
        metric = sce_metric(self.evaluation_set, self.sample_embedder, self.sce, self.sce_kwargs)
        self.sce = metric is not None
        if metric is not None:
            self.metrics.setdefault("sce", metric)
        clip = clip_score_metric(self.evaluation_set, self.sample_embedder, self.clip_score)
        self.clip_score = clip is not None
        if clip is not None:
            self.metrics.setdefault("clip_score", clip)
        for name, plugin in prompt_aware_metrics(
            self.evaluation_set,
            self.sample_embedder,
            self.vendi_orders,
            self.kernel_kwargs,
            self.prompt_aware,
        ).items():
            self.metrics.setdefault(name, plugin)

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
        """Sample, embed and score the evaluation set; every rank must call it.

        Args:
            sample_fn: the generator, called as the module docstring's sampling contract says.
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

        Returns:
            The :class:`EvaluationResult`, the same scalars on every rank.

        Raises:
            EvaluationError: on every rank, when any rank failed to sample, embed or compute.
        """
        device = torch.device(device) if device is not None else _device_of(module)
        reference = self.mode_reference_of(compare_to)
        with self.exclusive():
            self.prepare(device, progress)
            self.check_ranks_agree()
            start = time.perf_counter()
            try:
                with torch.inference_mode(False), torch.no_grad():
                    draw = self._draw(
                        sample_fn, module, device, precision_context, thumbnails, progress
                    )
                where = "" if step is None else f" at global step {step}"
                _raise_if_any_failed(
                    draw.error, device, f"{where} while sampling or embedding", draw.failure_agreed
                )
                result = self._compute(draw, device, where, reference, step)
            finally:
                self.reset()  # the next evaluation starts empty, whatever happened here
        result.scalars[f"{self.prefix}/{TIMING_KEY}"] = time.perf_counter() - start
        return result

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
                    f"this DiversityEvaluator (prefix {self.prefix!r}, {self.evaluation_set.kind} "
                    f"conditions, {self.evaluation_set.num_samples} samples) is already "
                    "evaluating: its metrics hold one evaluation at a time, so a second one "
                    "(another thread, or a sample_fn that evaluates again) would mix both; build "
                    "one evaluator per thread"
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
        if compare_to is None:
            return None
        if self.mode_options is None:
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

    def new_mode_collector(
        self, previews: bool, offset_by_rank: bool = False
    ) -> ModeCollector | None:
        """This evaluation's collector of the modes' samples, None without ``modes``."""
        if self.mode_options is None:
            return None
        return ModeCollector(self.mode_options, previews, offset_by_rank)

    def _draw(
        self,
        sample_fn: SampleFn,
        module: torch.nn.Module | None,
        device: torch.device,
        precision_context: Callable[[], AbstractContextManager] | None,
        thumbnails: bool,
        progress: bool,
    ) -> _Draw:
        """Sample and embed this rank's share; a failure is caught and kept, not raised."""
        rank, world_size = distributed.rank_and_world_size()
        batches = self.evaluation_set.batches(rank, world_size, self.batch_size)
        calls = lockstep_calls(module, self.evaluation_set, self.batch_size)
        images = self.sample_embedder.value_range is not None
        draw = _Draw(sum(map(len, batches)), thumbnails={} if thumbnails and images else None)
        draw.modes = self.new_mode_collector(thumbnails)
        bar = _progress_bar(batches, f"{self.prefix}: sampling", progress and rank == 0)
        context = precision_context or nullcontext
        lockstep = LockStep(device)
        with isolate_rng(), eval_mode(module), lockstep.watching():
            for index in range(calls):
                try:
                    if index < len(batches):
                        self._draw_batch(sample_fn, batches[index], device, context, draw, lockstep)
                        bar.update(1)
                    else:  # this rank has one batch fewer: keep its calls in step
                        with context():
                            lockstep.call(pad_call, sample_fn, self.evaluation_set, device)
                except Stopped:
                    break
                except Exception as error:
                    draw.error = _call_error(self.evaluation_set, batches, index, error)
                    break
        bar.close()
        draw.failure_agreed = lockstep.agreed_failure
        if draw.error is None and not draw.failure_agreed:
            self.sample_embedder.warn_on_range()
        return draw

    def _draw_batch(
        self,
        sample_fn: SampleFn,
        batch: range,
        device: torch.device,
        context: Callable[[], AbstractContextManager],
        draw: _Draw,
        step: LockStep,
    ) -> None:
        """Sample, check and embed one batch; keep its thumbnails."""
        start = time.perf_counter()
        generators = self.evaluation_set.generators(batch, device)
        conditions = self.evaluation_set.conditions_for(batch, device)
        with context():
            samples = step.call(sample_fn, conditions, generators)
        samples = self.sample_embedder.check_samples(samples, len(batch))
        _synchronize(device)
        draw.seconds["sampling"] += time.perf_counter() - start
        update_metrics(self, samples, self.evaluation_set.condition_ids(batch, device), draw, batch)
        if draw.thumbnails is not None:
            draw.thumbnails.update(
                thumbnails_of(samples, batch, self.evaluation_set, *self.thumbnail_limits)
            )

    def _compute(
        self,
        draw: _Draw,
        device: torch.device,
        where: str,
        reference: ModeReference | None = None,
        step: int | None = None,
    ) -> EvaluationResult:
        """Collective: every rank computes every metric and the modes; then rank 0 gathers the
        thumbnails."""
        start = time.perf_counter()
        values: dict[str, MetricValues] = {}
        error: EvaluationError | None = None
        with torch.inference_mode(False), warnings.catch_warnings():
            if draw.num_samples == 0:
                # A rank that drew nothing still joins the collective compute; its metrics'
                # "compute before update" warning is expected there.
                warnings.filterwarnings("ignore", message=r".*was called before the ``update``")
            for name, metric in self.metrics.items():
                try:
                    values[name] = metric.compute(name)
                except Exception as exc:
                    error = EvaluationError(f"metric {name!r}: {exc}")
                    error.__cause__ = exc
                    break
        _raise_if_any_failed(error, device, f"{where} while computing the metrics")
        result = EvaluationResult.merge(values, self.prefix, draw.num_samples)
        if draw.modes is not None:
            self._add_modes(result, draw, device, where, reference, step)
        if draw.thumbnails is not None:
            result.thumbnails = distributed.gather_to_rank_zero(draw.thumbnails)
        draw.seconds["metric"] += time.perf_counter() - start
        result.timings = dict(draw.seconds)
        return result

    def _add_modes(
        self,
        result: EvaluationResult,
        draw: _Draw,
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
            vendi = self.metrics["vendi"].metric
            shared = None
            if vendi.streams_moments:  # the same features' moment, summed by the Vendi score
                shared = SharedMoment(vendi.second_moment, int(vendi.num_samples))
            values = draw.modes.compute(vendi.kernel, device, reference, shared)
        except Exception as exc:
            error = EvaluationError(f"modes: {exc}")
            error.__cause__ = exc
        _raise_if_any_failed(error, device, f"{where} while computing the modes")
        values.reference.step = step
        result.scalars.update({f"{self.prefix}/{k}": v for k, v in values.scalars.items()})
        result.modes, result.lost_modes = values.modes, values.lost_modes
        result.gained_modes, result.compared_to = values.gained_modes, reference
        result.mode_reference, result.mode_previews = values.reference, values.previews
        draw.seconds["modes"] = time.perf_counter() - start


def update_metrics(
    evaluator: DiversityEvaluator,
    samples: Any,
    condition_ids: Tensor,
    draw: _Draw,
    indices: range,
) -> None:
    """Embed one checked batch (and its prompts, when a metric takes them); update every metric.

    The one step from samples to metric states, shared by :meth:`DiversityEvaluator.evaluate`
    and :func:`~diversity_callbacks.evaluation.existing.evaluate_existing`.

    Args:
        evaluator: whose embedder and metrics to use.
        samples: a batch checked by ``evaluator.sample_embedder.check_samples``.
        condition_ids: ``(B,)`` long: each sample's condition number.
        draw: this rank's running record (timings, prompt embeddings, sample count).
        indices: the batch's sample indices (what the modes call the samples).
    """
    start = time.perf_counter()
    device = condition_ids.device
    embedded = EmbeddedBatch(evaluator.sample_embedder.embed(samples))
    inputs = evaluator.metric_inputs
    if "condition_ids" in inputs or "condition_embeddings" in inputs:
        embedded.condition_ids = condition_ids
    if "condition_embeddings" in inputs:
        embedded.condition_embeddings = evaluator.sample_embedder.prompt_embeddings(
            evaluator.evaluation_set.conditions, condition_ids, draw.prompt_rows
        )
    if "samples" in inputs:
        embedded.samples = samples
    _synchronize(device)
    updated = time.perf_counter()
    draw.seconds["embedding"] += updated - start
    for metric in evaluator.metrics.values():
        metric.update(embedded)
    if draw.modes is not None:
        draw.modes.add(embedded.embeddings, indices, samples)
    _synchronize(device)
    draw.seconds["metric"] += time.perf_counter() - updated


@dataclass
class _Draw:
    """What one rank drew in one evaluation, before the collective part."""

    num_samples: int = 0
    error: EvaluationError | None = None
    failure_agreed: bool = False  # every rank already knows that some rank failed
    thumbnails: dict[int, Tensor] | None = None  # None: not asked for
    prompt_rows: dict[int, Tensor] = field(default_factory=dict)
    modes: ModeCollector | None = None  # None: no modes asked for
    seconds: dict[str, float] = field(
        default_factory=lambda: {"sampling": 0.0, "embedding": 0.0, "metric": 0.0}
    )


def _mode_options(modes: int, options: Mapping[str, Any] | None) -> ModeOptions | None:
    """The checked mode settings; None when ``modes`` is 0."""
    if isinstance(modes, bool) or not isinstance(modes, int) or modes < 0:
        raise ValueError(f"`modes` must be an integer >= 0 (0: off), got {modes!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - {"samples", "threshold", "eta", "preview_size"})
    if unknown:
        raise ValueError(
            f"`mode_options` takes samples, threshold, eta and preview_size, got {unknown}"
        )
    return ModeOptions(modes, **options) if modes else None


def _progress_bar(batches: list[range], description: str, enabled: bool) -> tqdm:
    # disable=None: tqdm draws only on a terminal, so log files get no line per evaluation
    return tqdm(
        batches,
        desc=description,
        leave=False,
        dynamic_ncols=True,
        disable=None if enabled else True,
    )


def _call_error(
    evaluation_set: EvaluationSet, batches: list[range], index: int, error: Exception
) -> EvaluationError:
    """The error of a failed generator call: its batch's samples and conditions, or the
    throw-away call that kept this rank in step."""
    if index < len(batches):
        batch = batches[index]
        where = f"samples {batch[0]}..{batch[-1]} ({evaluation_set.describe(batch)})"
    else:
        where = "a throw-away generator call that keeps this rank in step with the others"
    wrapped = EvaluationError(f"{where}: {error}")
    wrapped.__cause__ = error
    return wrapped


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


def _device_of(module: torch.nn.Module | None) -> torch.device:
    if module is None:
        return torch.device("cpu")
    device = getattr(module, "device", None)  # a LightningModule knows its device
    if isinstance(device, torch.device):
        return device
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def eval_mode(module: torch.nn.Module | None) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own mode on exit, also on error."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def _synchronize(device: torch.device) -> None:
    """Wait for the device, so that stage timings are not shifted by asynchronous kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
