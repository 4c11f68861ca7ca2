"""``DiversityCallback``: evaluate the generator's diversity on a cadence while a Trainer fits.

The evaluation itself is :class:`~diversity_callbacks.DiversityEvaluator`'s; the callback decides
when to run it, enters the trainer's precision, applies the failure policy, keeps the history
across resumes and sends the result to the trainer's loggers.

**Cadence.** ``evaluate_at_start`` (a baseline before the first step, so monitored keys exist
from the start), ``every_n_train_steps`` (after the batch whose optimizer step(s) bring
``trainer.global_step`` to or past a multiple of it), ``every_n_epochs`` and
``after_validation`` (before ``EarlyStopping`` and ``ModelCheckpoint`` read the metrics)
combine; ``evaluate_on_train_end`` scores the final model when the last step was not
evaluated; one ``global_step`` is evaluated at most once; without a cadence,
``every_n_epochs=1``; the sanity check is skipped.

**Logging.** The result's scalars (``diversity/vendi_q1``, ``diversity/per_prompt_vendi_q1``,
``diversity/sce``, plug-ins, ``diversity/eval_seconds``...) go to ``trainer.callback_metrics``
on every rank and, from rank 0, to every logger with ``epoch``, at the step at which
``self.log`` puts the same batch's values; grids, the per-condition table and the spectrum go
to the loggers that take media (:mod:`diversity_callbacks.media`).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from diversity_callbacks.evaluation import sampling
from diversity_callbacks.evaluation.conditions import sample_seed
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator, EvaluationResult
from diversity_callbacks.evaluation.modes import ModeReference
from diversity_callbacks.media.loggers import publish, wants_media
from diversity_callbacks.samplers.contract import bind_module
from diversity_callbacks.utilities.checks import check_positive_int
from diversity_callbacks.utilities.deprecations import (
    check_current_key,
    renamed_key,
    renamed_options,
)


class DiversityCallback(Callback):
    r"""Sample a generator at a fixed cadence during training and log the diversity of its samples.

    Each evaluation is one :meth:`DiversityEvaluator.evaluate
    <diversity_callbacks.DiversityEvaluator.evaluate>` of the sampling contract
    (:data:`~diversity_callbacks.evaluation.sampling.SampleFn`): ``pl_module.generate``, or
    ``sample_fn`` bound to ``pl_module`` (:func:`~diversity_callbacks.samplers.contract.bind_module`),
    in eval mode, under ``no_grad``, inside the trainer's precision context, with the global RNG
    restored afterwards, so training is unchanged. The cadence and the logging are the module's.

    Args:
        prompts: a list of prompts or the path of a text file with one per line (or give
            ``class_labels=`` or ``num_samples=`` among the evaluator options).
        samples_per_condition: samples drawn per prompt or class.
        evaluator: a ready :class:`~diversity_callbacks.DiversityEvaluator`, instead of
            ``prompts`` and the evaluator options.
        every_n_train_steps: evaluate every this many optimizer steps.
        every_n_epochs: evaluate at the end of every this many training epochs.
        after_validation: evaluate at the end of every validation epoch.
        evaluate_at_start: evaluate once before the first training step (not on resume: the
            checkpoint's last values are put back in ``trainer.callback_metrics`` instead).
        evaluate_on_train_end: evaluate once more when training ends at a step that was not
            evaluated, so that the final model is scored.
        sample_fn: ``sample_fn(pl_module, conditions, generators)``, or a sampler with
            ``bind(pl_module)`` (``DiffusersSampler``...); default ``pl_module.generate``. A
            ``value_range`` attribute of the sampler is the default ``value_range``.
        log_images: send sample grids to the loggers that take media (W&B, TensorBoard, MLflow,
            see :mod:`diversity_callbacks.media`) and to ``media_dir``.
        on_error: ``"raise"``: a failure while sampling, embedding or computing raises an
            :class:`~diversity_callbacks.EvaluationError` naming the step and the samples;
            ``"warn"``: every rank warns, the evaluation is skipped and training goes on.
        media_dir: also write each evaluation's grids (PNG), per-condition table (CSV) and
            spectrum under ``media_dir/step_000120/``, whatever the loggers (CSV users).
        compare_to: which earlier evaluation the modes lost and gained are measured against
            (with the evaluator's ``modes``, by default 8 when ``log_images``, else 0):
            ``"baseline"`` (the fit's first evaluation), ``"best"`` (the highest Vendi score of
            the first order so far, before this evaluation) or a training step (the first
            evaluation at or after it). What the comparison needs is kept in the checkpoint:
            every sample's embedding and a 48-pixel thumbnail, about 9 MB at 1000 samples of
            512-d embeddings.
        evaluator_options: keyword arguments of :class:`~diversity_callbacks.DiversityEvaluator`
            (``class_labels``, ``num_samples``, ``embedder``, ``value_range``, ``batch_size``,
            ``seed``, ``vendi_orders``, ``vendi_kernel``, ``sce``, ``cond_vendi``, ``info_vendi``, ``metrics``, ``prefix``...).

    Examples:
        >>> from diversity_callbacks import DiversityCallback
        >>> callback = DiversityCallback(["a red apple", "a bird"], samples_per_condition=4,
        ...                              every_n_train_steps=500)
        >>> callback.evaluation_set.num_samples  # sample i: prompt i // 4, seed sample_seed(0, i)
        8
    """

    def __init__(
        self,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        samples_per_condition: int = 8,
        *,
        evaluator: DiversityEvaluator | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        after_validation: bool = False,
        evaluate_at_start: bool = True,
        evaluate_on_train_end: bool = True,
        sample_fn: Callable[..., Any] | None = None,
        log_images: bool = True,
        on_error: Literal["raise", "warn"] = "raise",
        media_dir: str | os.PathLike | None = None,
        compare_to: Literal["baseline", "best"] | int = "baseline",
        **evaluator_options: Any,
    ) -> None:
        options = renamed_options(evaluator_options)
        samples_per_condition = options.pop("samples_per_condition", samples_per_condition)
        after_validation = options.pop("after_validation", after_validation)
        self.evaluator = _evaluator_of(
            evaluator, prompts, samples_per_condition, sample_fn, log_images, options
        )
        self.every_n_train_steps, self.every_n_epochs = _checked_cadence(
            every_n_train_steps, every_n_epochs, after_validation
        )
        self.after_validation = bool(after_validation)
        self.evaluate_at_start = bool(evaluate_at_start)
        self.evaluate_on_train_end = bool(evaluate_on_train_end)
        if sample_fn is not None and not callable(sample_fn):
            raise TypeError(f"`sample_fn` must be callable, got {type(sample_fn).__name__}")
        self.sample_fn = sample_fn
        self.log_images = bool(log_images)
        if on_error not in ("raise", "warn"):
            raise ValueError(f'`on_error` must be "raise" or "warn", got {on_error!r}')
        self.on_error = on_error
        self.media_dir = media_dir
        self.compare_to = _checked_compare_to(compare_to)
        self.mode_reference: ModeReference | None = None
        """What this fit's evaluations are compared with (see ``compare_to``)."""
        self._reference_score: float | None = None  # the "best" reference's score
        self.history: list[dict[str, float]] = []
        """One dict per evaluation: ``step`` (the loggers' x-axis), ``global_step``, ``epoch``
        and the logged scalars."""
        self.resumed = False
        """Whether this fit's history came from a checkpoint (what a monitor's state needs)."""
        self.last_result: EvaluationResult | None = None
        """The last evaluation's full result (its modes, lost and gained modes, previews)."""
        self.last_timings: dict[str, float] = {}
        """Seconds spent on this rank in the last evaluation: ``sampling``, ``embedding``,
        ``metric`` (updates, sync, compute, gathering images) and ``logging``."""
        self._last_step = -1
        self._step_seen = 0
        self._state_key_of: tuple[Any, str, str] = (None, "", "")  # (set, prefix, key)

    # ------------------------------------------------------------------ identity and state

    @property
    def evaluation_set(self) -> Any:
        """The fixed samples of every evaluation (conditions, seeds)."""
        return self.evaluator.evaluation_set

    @property
    def state_key(self) -> str:
        """Identifies the evaluation set and its keys, so that two instances keep separate
        states in a checkpoint; the cadence is left out, so it may change on resume. The other
        settings that change the numbers are checked on resume instead (:attr:`settings`)."""
        # Lightning reads it about six times a step: built once per evaluation set and prefix,
        # rebuilt when either is replaced (the set itself is frozen).
        evaluation_set, prefix, key = self._state_key_of
        if evaluation_set is not self.evaluation_set or prefix != self.evaluator.prefix:
            key = self._build_state_key()
            self._state_key_of = (self.evaluation_set, self.evaluator.prefix, key)
        return key

    def _build_state_key(self) -> str:
        evaluation_set = self.evaluation_set
        # The argument names of 0.1.0 for prompts, so that its checkpoints resume.
        kind = {"prompt": "prompts", "class": "class_labels", "none": "unconditional"}
        return self._generate_state_key(
            prefix=self.evaluator.prefix,
            **{kind[evaluation_set.kind]: evaluation_set.digest()},
            samples_per_prompt=evaluation_set.samples_per_condition,
            seed=evaluation_set.seed,
        )

    @property
    def settings(self) -> dict[str, Any]:
        """The settings, besides those of :attr:`state_key`, that change the logged numbers.

        Saved with the history: a resume whose settings differ starts a fresh history, so that
        one history never mixes two definitions of a score.
        """
        return scoring_settings(self.evaluator)

    def state_dict(self) -> dict[str, Any]:
        reference = self.mode_reference
        return {
            "last_step": self._last_step,
            "history": [dict(row) for row in self.history],
            "settings": self.settings,
            "compare_to": self.compare_to,
            "mode_reference": None if reference is None else reference.state_dict(),
            "reference_score": self._reference_score,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        last_step, history = _checked_state(state_dict, self.state_key)
        saved = state_dict.get("settings")  # absent in older checkpoints: not checkable
        changed = _changed(saved, self.settings) if saved is not None else []
        if changed:
            warnings.warn(
                f"{self.state_key}: the checkpoint's diversity history was measured with other "
                f"settings ({'; '.join(changed)}); starting a fresh history",
                UserWarning,
                stacklevel=2,
            )
            return
        self._last_step, self.history, self.resumed = last_step, history, True
        saved_reference = state_dict.get("mode_reference")  # absent before modes existed
        if saved_reference is not None and state_dict.get("compare_to") == self.compare_to:
            self.mode_reference = ModeReference.from_state_dict(saved_reference, self.state_key)
            self._reference_score = state_dict.get("reference_score")

    sample_seed = staticmethod(sample_seed)

    # ------------------------------------------------------------------ hooks, in call order

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("fit", "validate"):
            return  # test and predict never evaluate: no embedder to build
        _check_monitors(trainer, self.evaluator.prefix)
        if stage == "fit":
            # A second fit starts afresh; a resumed one gets its history back from the
            # checkpoint, which Lightning loads after setup.
            self.history, self._last_step, self._step_seen = [], -1, 0
            self.resumed = False
            self.mode_reference, self._reference_score = None, None
        self.evaluator.prepare(pl_module.device)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._step_seen = trainer.global_step  # after a resume, the checkpoint's step
        if self.history:  # resumed: what the monitors read is there before the next evaluation
            last = {k: v for k, v in self.history[-1].items() if k not in ROW_FIELDS}
            trainer.callback_metrics.update(_as_tensors(last))
        elif self.evaluate_at_start and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        # Crossing a multiple of n rather than landing on one: under gradient accumulation several
        # micro-batches end at one step, and with several optimizers (GANs) global_step moves by
        # more than one per batch.
        crossed = n is not None and step // n > self._step_seen // n
        self._step_seen = step
        if crossed and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.after_validation and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = self.every_n_epochs
        if n is not None and (trainer.current_epoch + 1) % n == 0 and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.evaluate_on_train_end and self._may_evaluate(trainer):
            self.evaluate(trainer, pl_module)  # the final model, when its step was not scored

    def _may_evaluate(self, trainer: Trainer) -> bool:
        """Not in the sanity check, and not twice at one global step (fast_dev_run included:
        it is meant to run every code path once)."""
        return not trainer.sanity_checking and trainer.global_step != self._last_step

    # ------------------------------------------------------------------ one evaluation

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float] | None:
        """Evaluate and log now; return the logged scalars (None if it failed under "warn").

        Every rank must call it (the metrics sync). The hooks call it on their cadence; call it
        yourself for an extra evaluation, e.g. after ``trainer.fit`` returns.
        """
        self._last_step = trainer.global_step
        sample_fn = self.sample_fn
        generate = bind_module(sample_fn, pl_module) if sample_fn else _default_generate(pl_module)
        try:
            result = self.evaluator.evaluate(
                generate,
                module=pl_module,
                device=pl_module.device,
                precision_context=trainer.precision_plugin.forward_context,
                thumbnails=self.log_images and wants_media(trainer.loggers, self.media_dir),
                progress=_progress_bar_enabled(trainer),
                step=trainer.global_step,
                compare_to=self.mode_reference if self.evaluator.mode_options else None,
            )
        except EvaluationError as error:
            if self.on_error == "raise":
                raise
            _warn_skipped(error, self.history)
            return None
        if result.mode_reference is not None and self.mode_reference is None:
            # Nothing lost or gained before there is a reference: every row has the same keys
            for name in ("lost_mode_mass", "gained_mode_mass"):
                result.scalars.setdefault(self.evaluator.key(name), 0.0)
        self._publish(trainer, result)
        self._keep_reference(result, trainer.global_step)
        self.last_result = result
        return result.scalars

    def _keep_reference(self, result: EvaluationResult, step: int) -> None:
        """Make ``result`` the reference of later comparisons when ``compare_to`` says so."""
        if result.mode_reference is None:
            return
        if self.compare_to == "best":
            score = result.scalars[self.evaluator.result_keys("vendi")[0]]  # the first order
            if self._reference_score is None or score > self._reference_score:
                self.mode_reference, self._reference_score = result.mode_reference, score
        elif self.mode_reference is None and (
            self.compare_to == "baseline" or step >= self.compare_to
        ):
            self.mode_reference = result.mode_reference

    def _publish(self, trainer: Trainer, result: EvaluationResult) -> None:
        """Write callback_metrics on every rank, the history, and the loggers on rank 0."""
        start = time.perf_counter()
        scalars, step = result.scalars, logger_step(trainer)
        trainer.callback_metrics.update(_as_tensors(scalars))
        self.history.append(
            {
                "step": step,
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                **scalars,
            }
        )
        if trainer.is_global_zero:
            logged = replace(result, scalars={**scalars, "epoch": trainer.current_epoch})
            publish(trainer.loggers, self.evaluator, logged, step, media_dir=self.media_dir)
        self.last_timings = {**result.timings, "logging": time.perf_counter() - start}


DEFAULT_MODES = 8
"""Modes per evaluation when the callback builds its evaluator and logs images."""

ROW_FIELDS = ("step", "global_step", "epoch")
"""The fields of a history row that are not logged scores."""


def logger_step(trainer: Trainer) -> int:
    """The step at which ``self.log`` puts the current batch's values (LearningRateMonitor logs
    at it too): batches that stepped before this one, one per batch whatever the number of
    optimizers, so it differs from ``trainer.global_step`` (optimizer steps, after the batch)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def checked_state_entry(state: Any, owner: str, key: str, kind: type | tuple[type, ...]) -> Any:
    """``state[key]``, checked to be of ``kind``: an edited or foreign checkpoint fails naming
    the callback (its state key) and the entry, not deep in the resume."""
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner}: checkpoint state must be a dict, got {type(state).__name__}")
    if key not in state:
        raise ValueError(
            f"{owner}: checkpoint state has no {key!r} entry (it has {sorted(map(str, state))})"
        )
    value, kinds = state[key], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"{owner}: checkpoint entry {key!r} must be {expected}, got "
            f"{type(value).__name__} {value!r:.60}"
        )
    return value


def scoring_settings(evaluator: DiversityEvaluator) -> dict[str, Any]:
    """What, besides the conditions, the plan and the prefix, defines ``evaluator``'s logged
    numbers: its orders, kernels, metrics, value range and embedder, in JSON types (as a
    checkpoint gives them back)."""
    embedder = evaluator.embedder
    return json.loads(  # JSON types, as a checkpoint gives them back
        json.dumps(
            {
                "vendi_orders": [str(q) for q in evaluator.vendi_orders],
                **{f"vendi_{k}": v for k, v in evaluator.kernel_kwargs.items()},
                "sce_kwargs": evaluator.sce_kwargs,
                "metrics": {
                    name: type(getattr(m, "metric", m)).__qualname__
                    for name, m in sorted(evaluator.metrics.items())
                },
                "value_range": evaluator.sample_embedder.value_range,
                "embedder": [
                    type(embedder).__qualname__,
                    getattr(embedder, "model_name", None),
                ],
            },
            default=repr,
        )
    )


def _evaluator_of(
    evaluator: DiversityEvaluator | None,
    prompts: Any,
    samples_per_condition: int,
    sample_fn: Any,
    log_images: bool,
    options: dict[str, Any],
) -> DiversityEvaluator:
    """The callback's evaluator: the one given, or one built from the prompts and options
    (a sampler's ``value_range`` is the default one; 8 modes when images are logged)."""
    if evaluator is not None:
        if prompts is not None or options:
            raise ValueError(
                "give either `evaluator` or `prompts` and the evaluator options, got both "
                f"(options {sorted(options)})"
            )
        if evaluator.plan is None:
            raise ValueError(
                "`evaluator` scores existing samples (DiversityEvaluator.for_existing): the "
                "callback samples the generator, so it needs one built with prompts, "
                "class_labels or num_samples"
            )
        return evaluator
    if hasattr(sample_fn, "value_range"):  # it knows its output
        options.setdefault("value_range", sample_fn.value_range)
    options.setdefault("modes", DEFAULT_MODES if log_images else 0)
    return DiversityEvaluator(prompts, samples_per_condition, **options)


def _checked_cadence(
    every_n_train_steps: int | None, every_n_epochs: int | None, after_validation: bool
) -> tuple[int | None, int | None]:
    """The checked step and epoch periods; without any cadence, every epoch."""
    for name, n in (
        ("every_n_train_steps", every_n_train_steps),
        ("every_n_epochs", every_n_epochs),
    ):
        if n is not None:
            check_positive_int(n, name)
    if every_n_train_steps is None and every_n_epochs is None and not after_validation:
        every_n_epochs = 1
    return every_n_train_steps, every_n_epochs


def _check_monitors(trainer: Trainer, prefix: str) -> None:
    """Refuse EarlyStopping, ModelCheckpoint (any callback's ``monitor``) on a 0.1 key: it would
    wait for a key that is no longer logged instead of reading the new one."""
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith(f"{prefix}/"):
            check_current_key(monitor, f"{type(callback).__name__}(monitor=...)")


def _warn_skipped(error: EvaluationError, history: list[dict[str, float]]) -> None:
    """``on_error="warn"``: say that this evaluation is skipped, and what monitors keep."""
    kept = f"; monitors keep the values of step {history[-1]['step']}" if history else ""
    warnings.warn(
        f"{error}; skipping this evaluation (on_error='warn'){kept}", RuntimeWarning, stacklevel=3
    )


def _checked_state(state: Any, owner: str) -> tuple[int, list[dict[str, float]]]:
    """The last evaluated step and the history of a checkpoint state, each row checked."""
    last_step = checked_state_entry(state, owner, "last_step", int)
    history = checked_state_entry(state, owner, "history", list)
    for index, row in enumerate(history):
        where = f"{owner} history[{index}]"
        if not isinstance(row, Mapping):
            raise TypeError(f"{where}: a history row must be a dict, got {type(row).__name__}")
        checked_state_entry(row, where, "step", int)
        for key in row:
            checked_state_entry(row, where, key, (int, float))
    # Rows of older checkpoints have one step, the global step; 0.1's name the per-condition
    # score conditional_vendi_*: they resume under the keys this version logs, so that the
    # history and callback_metrics agree.
    return last_step, [
        {
            **{renamed_key(key): value for key, value in row.items()},
            "global_step": row.get("global_step", row["step"]),
        }
        for row in history
    ]


def _checked_compare_to(compare_to: Any) -> str | int:
    if compare_to in ("baseline", "best") or (
        isinstance(compare_to, int) and not isinstance(compare_to, bool) and compare_to >= 0
    ):
        return compare_to
    raise ValueError(
        f'`compare_to` must be "baseline", "best" or a training step >= 0, got {compare_to!r}'
    )


def _changed(saved: Any, current: dict[str, Any]) -> list[str]:
    """``"name: old -> new"`` for each setting that differs between a checkpoint and now."""
    saved = saved if isinstance(saved, dict) else {}
    return [
        f"{name}: {saved.get(name)!r} -> {value!r}"
        for name, value in current.items()
        if saved.get(name) != value
    ]


def _as_tensors(scalars: Mapping[str, float]) -> dict[str, Tensor]:
    """float64 scalars as trainer.callback_metrics holds them."""
    return {key: torch.tensor(value, dtype=torch.float64) for key, value in scalars.items()}


def _default_generate(pl_module: LightningModule) -> sampling.SampleFn:
    generate = getattr(pl_module, "generate", None)
    if not callable(generate):
        raise AttributeError(
            f"{type(pl_module).__name__} has no generate(conditions, generators) method: add one "
            "or pass DiversityCallback(sample_fn=...)"
        )
    return generate


def _progress_bar_enabled(trainer: Trainer) -> bool:
    bar = trainer.progress_bar_callback
    return bar is not None and bar.is_enabled


__all__ = ["DiversityCallback"]


def __getattr__(name: str) -> Any:
    # 0.1 exported the callback's own sampling type here; there is one now.
    if name == "SampleFn":
        warnings.warn(
            "diversity_callbacks.callback.SampleFn is now diversity_callbacks.SampleFn "
            "(sample_fn(conditions, generators)); the callback binds its sample_fn to "
            "pl_module (diversity_callbacks.samplers.contract.bind_module)",
            FutureWarning,
            stacklevel=2,
        )
        return sampling.SampleFn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
