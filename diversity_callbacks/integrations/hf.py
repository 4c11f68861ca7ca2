"""``DiversityTrainerCallback``: the diversity evaluation inside a Hugging Face ``Trainer``.

The same :class:`~diversity_callbacks.DiversityEvaluator` as the Lightning callback, on the
``Trainer``'s cadence, for ``transformers.Trainer`` and the trainers built on it (TRL's
``SFTTrainer``, ``DPOTrainer``, ``GRPOTrainer``...). Results go through ``Trainer.log``: into
``state.log_history`` (saved in every checkpoint's ``trainer_state.json``) and to every logger
``report_to`` names (W&B, TensorBoard, MLflow...), which log from the main process only. The
callback keeps no state of its own: on resume its history is read back from the checkpoint's
``log_history``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.evaluator import DiversityEvaluator
from diversity_callbacks.samplers.contract import bind_module
from diversity_callbacks.utilities.checks import check_positive_int


class DiversityTrainerCallback(TrainerCallback):
    """Evaluate the diversity of a ``Trainer``'s model on its cadence and log it to its loggers.

    Every process runs the callback (the evaluation is a collective under DDP and FSDP: each
    rank draws its share of the evaluation set). ``sample_fn`` is bound to the model the trainer
    hands its callbacks (the unwrapped model under DDP, the trained adapter under peft) by
    :func:`~diversity_callbacks.samplers.contract.bind_module`: a
    :class:`~diversity_callbacks.TransformersSampler` built with ``model=None`` samples it, a
    plain function is called as ``sample_fn(model, prompts, generators)``.

    **Cadence.** ``evaluate_at_start`` (a baseline before the first step; not on resume),
    every ``every_n_steps`` optimizer steps (default: the trainer's ``eval_steps`` when it
    evaluates by steps, else its ``logging_steps``), and ``evaluate_on_train_end`` (the final
    model, when its step was not evaluated). One step is evaluated at most once.

    Args:
        trainer: the trainer whose ``log`` publishes the results (add the callback to it with
            ``trainer.add_callback``).
        prompts: a list of prompts or the path of a text file with one per line (or give
            ``evaluator=``).
        samples_per_condition: completions drawn per prompt.
        evaluator: a ready :class:`~diversity_callbacks.DiversityEvaluator`, instead of
            ``prompts`` and the evaluator options.
        sample_fn: a sampler (``TransformersSampler``), or ``sample_fn(model, prompts,
            generators) -> completions``.
        every_n_steps: evaluate every this many optimizer steps.
        evaluate_at_start: evaluate before the first training step.
        evaluate_on_train_end: evaluate when training ends at a step not yet evaluated.
        on_error: ``"raise"`` an :class:`~diversity_callbacks.EvaluationError`, or ``"warn"``
            on every rank and go on training.
        evaluator_options: keyword arguments of :class:`~diversity_callbacks.DiversityEvaluator`
            (``embedder``, ``metrics``, ``batch_size``, ``seed``...); ``value_range`` defaults
            to ``None`` (text).
    """

    def __init__(
        self,
        trainer: Trainer,
        prompts: Sequence[str] | str | os.PathLike | None = None,
        samples_per_condition: int = 8,
        *,
        evaluator: DiversityEvaluator | None = None,
        sample_fn: Any = None,
        every_n_steps: int | None = None,
        evaluate_at_start: bool = True,
        evaluate_on_train_end: bool = True,
        on_error: Literal["raise", "warn"] = "raise",
        **evaluator_options: Any,
    ) -> None:
        if not isinstance(trainer, Trainer):
            raise TypeError(
                f"`trainer` must be a transformers Trainer, got {type(trainer).__name__}"
            )
        if not callable(sample_fn):
            raise TypeError(
                "`sample_fn` must be callable as sample_fn(model, prompts, generators), e.g. "
                f"TransformersSampler(None, tokenizer), got {type(sample_fn).__name__}"
            )
        if evaluator is None:
            evaluator_options.setdefault("value_range", getattr(sample_fn, "value_range", None))
            evaluator = DiversityEvaluator(prompts, samples_per_condition, **evaluator_options)
        elif prompts is not None or evaluator_options:
            raise ValueError(
                "give either `evaluator` or `prompts` and the evaluator options, got both "
                f"(options {sorted(evaluator_options)})"
            )
        if on_error not in ("raise", "warn"):
            raise ValueError(f'`on_error` must be "raise" or "warn", got {on_error!r}')
        self.trainer = trainer
        self.evaluator = evaluator
        self.sample_fn = sample_fn
        self.every_n_steps = (
            None if every_n_steps is None else check_positive_int(every_n_steps, "every_n_steps")
        )
        self.evaluate_at_start = bool(evaluate_at_start)
        self.evaluate_on_train_end = bool(evaluate_on_train_end)
        self.on_error = on_error
        self.history: list[dict[str, float]] = []
        """One dict per evaluation: ``step`` (the trainer's global step), ``epoch`` and the
        logged scalars; read back from ``log_history`` on resume."""
        self._last_step = -1

    # ------------------------------------------------------------------ hooks, in call order

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.evaluator.prepare(args.device)
        self.history = self._logged_rows(state)
        if state.global_step > 0:  # resumed: the checkpoint's log_history holds the history
            self._last_step = self.history[-1]["step"] if self.history else -1
        elif self.evaluate_at_start:
            self.evaluate(args, state, kwargs["model"])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        n = self.every_n_steps or _trainer_cadence(args, state)
        if n and state.global_step % n == 0:
            self.evaluate(args, state, kwargs["model"])

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.evaluate_on_train_end:
            self.evaluate(args, state, kwargs["model"])

    # ------------------------------------------------------------------ one evaluation

    def evaluate(
        self, args: TrainingArguments, state: TrainerState, model: Any
    ) -> dict[str, float] | None:
        """Evaluate and log now, unless this step was evaluated; every rank must call it.

        Returns:
            The logged scalars; None when the step was evaluated already or the evaluation
            failed under ``on_error="warn"``.
        """
        if state.global_step == self._last_step:
            return None
        self._last_step = state.global_step
        try:
            result = self.evaluator.evaluate(
                bind_module(self.sample_fn, model),
                module=model,
                device=args.device,
                precision_context=self.trainer.autocast_smart_context_manager,
                progress=not args.disable_tqdm,
                step=state.global_step,
            )
        except EvaluationError as error:
            if self.on_error == "raise":
                raise
            warnings.warn(
                f"{error}; skipping this evaluation (on_error='warn')", RuntimeWarning, stacklevel=2
            )
            return None
        scalars = dict(result.scalars)
        # Trainer.log itself, not a subclass's: TRL's trainers flush their own running averages
        # into whatever is logged, which would move them into this row. Its on_log clears
        # control.should_log, which DefaultFlowCallback set for this step: restored, or the
        # trainer would drop its own loss row at every evaluated step.
        should_log = self.trainer.control.should_log
        Trainer.log(self.trainer, dict(scalars))
        self.trainer.control.should_log = should_log
        self.history.append({"step": state.global_step, "epoch": state.epoch or 0.0, **scalars})
        return scalars

    def _logged_rows(self, state: TrainerState) -> list[dict[str, float]]:
        """This callback's rows of ``state.log_history`` (those with its prefix's keys)."""
        prefix = f"{self.evaluator.prefix}/"
        return [
            {
                "step": row["step"],
                "epoch": row.get("epoch", 0.0),
                **{k: v for k, v in row.items() if k.startswith(prefix)},
            }
            for row in state.log_history
            if any(key.startswith(prefix) for key in row)
        ]


def _trainer_cadence(args: TrainingArguments, state: TrainerState) -> int | None:
    """The trainer's evaluation steps when it evaluates by steps, else its logging steps."""
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "steps":
        return state.eval_steps or state.logging_steps
    return state.logging_steps
