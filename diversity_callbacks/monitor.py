"""``DiversityCollapseMonitor``: stop or alert when a diversity score collapses.

Lightning's ``EarlyStopping`` reads ``trainer.callback_metrics`` at every check (the end of a
training epoch or of a validation): it raises when no evaluation has happened yet and counts a
stale value as one more check without improvement. This monitor reads the rows that a
:class:`~diversity_callbacks.DiversityCallback` appends to its ``history`` instead, so its
patience counts evaluations, a run with no evaluation yet is simply not judged, and the order in
which the two callbacks' hooks run does not matter.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from diversity_callbacks.callback import ROW_FIELDS, DiversityCallback, checked_state_entry
from diversity_callbacks.utilities.checks import check_positive_int
from diversity_callbacks.utilities.deprecations import check_current_key


class DiversityCollapseMonitor(Callback):
    r"""Stop training, or alert, when a diversity score stays below a threshold.

    After each new evaluation of ``diversity`` the monitored value is compared with the threshold:
    ``min_value``, or ``min_fraction`` times its value at the first evaluation of the run (the
    baseline, ``diversity.history[0]``; ``reference="first"``) or times the best value of the
    evaluations before (``reference="best"``: a fall from the peak, for runs that start from an
    untrained or already collapsed model and gain diversity before they lose it). When it has been below for ``patience`` evaluations in a
    row, the monitor fires: it warns (on rank 0), sends ``wandb.alert`` through every attached
    ``WandbLogger``, and with ``mode="stop"`` sets ``trainer.should_stop`` (Lightning stops after
    the current batch). A value that recovers resets the count; a later collapse fires again.

    Every rank reads the same history, so every rank decides the same: no collective is needed
    and DDP runs stop together. A NaN value counts as below the threshold.

    Args:
        diversity: the callback whose evaluations are judged; it must be in the same
            ``Trainer(callbacks=...)`` (checked at setup).
        monitor: the key judged: any scalar key of ``diversity.history`` rows (e.g.
            ``"diversity/vendi_q2"``, ``"diversity/per_prompt_vendi_q1"``); default
            ``"{prefix}/vendi_q1"`` of ``diversity``'s evaluator.
        min_value: fire below this absolute value.
        min_fraction: fire below this fraction of the baseline, in ``(0, 1]`` (give exactly one
            of ``min_value`` and ``min_fraction``).
        reference: what ``min_fraction`` is a fraction of: ``"first"`` or ``"best"`` evaluation.
        patience: consecutive evaluations below the threshold before the monitor fires.
        mode: ``"stop"`` (stop training) or ``"warn"`` (alert and go on).

    Examples:
        >>> from diversity_callbacks import DiversityCallback, DiversityCollapseMonitor
        >>> diversity = DiversityCallback(["a red apple", "a bird"], every_n_train_steps=500)
        >>> monitor = DiversityCollapseMonitor(diversity, min_fraction=0.6, patience=2)
        >>> monitor.monitor
        'diversity/vendi_q1'

        Then ``L.Trainer(callbacks=[diversity, monitor])``: training stops once
        ``diversity/vendi_q1`` has been below 60% of its first value for two evaluations.
    """

    def __init__(
        self,
        diversity: DiversityCallback,
        monitor: str | None = None,
        *,
        min_value: float | None = None,
        min_fraction: float | None = None,
        reference: Literal["first", "best"] = "first",
        patience: int = 2,
        mode: Literal["stop", "warn"] = "stop",
    ) -> None:
        if not isinstance(diversity, DiversityCallback):
            raise TypeError(
                f"`diversity` must be a DiversityCallback, got {type(diversity).__name__}"
            )
        self.diversity = diversity
        self.monitor = monitor if monitor is not None else diversity.evaluator.key("vendi_q1")
        check_current_key(self.monitor, "monitor")
        self.min_value, self.min_fraction = _thresholds(min_value, min_fraction)
        if reference not in ("first", "best"):
            raise ValueError(f'`reference` must be "first" or "best", got {reference!r}')
        self.reference = reference
        self.patience = check_positive_int(patience, "patience")
        if mode not in ("stop", "warn"):
            raise ValueError(f'`mode` must be "stop" or "warn", got {mode!r}')
        self.mode = mode
        self.collapse_step: int | None = None
        """Step (history ``step``, the loggers' x-axis) of the evaluation at which the monitor
        last fired; None if it never did."""
        self._judged = 0  # rows of diversity.history already compared
        self._below = 0  # consecutive evaluations below the threshold
        self._restored_for: str | None = None  # the callback state key of a loaded state

    # ------------------------------------------------------------------ identity and state

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            min_value=self.min_value,
            min_fraction=self.min_fraction,
            reference=self.reference,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "judged": self._judged,
            "below": self._below,
            "collapse_step": self.collapse_step,
            "diversity": self.diversity.state_key,  # whose history the counts refer to
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        owner = self.state_key
        self._judged = checked_state_entry(state_dict, owner, "judged", int)
        self._below = checked_state_entry(state_dict, owner, "below", int)
        self.collapse_step = checked_state_entry(
            state_dict, owner, "collapse_step", (int, type(None))
        )
        # Older checkpoints do not say whose history: the callback's own key then.
        self._restored_for = state_dict.get("diversity", self.diversity.state_key)

    # ------------------------------------------------------------------ hooks, in call order

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not any(callback is self.diversity for callback in trainer.callbacks):
            raise ValueError(
                f"DiversityCollapseMonitor({self.monitor!r}) judges a DiversityCallback that is "
                "not in the Trainer, so it would never fire: pass both, e.g. "
                "Trainer(callbacks=[diversity, monitor]) with the same `diversity` object"
            )
        # DiversityCallback starts a fresh history at fit; a resume restores both states.
        self._judged, self._below, self.collapse_step = 0, 0, None
        self._restored_for = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._drop_counts_of_another_history()
        self._judge_new_rows(trainer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._judge_new_rows(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._judge_new_rows(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._judge_new_rows(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After every callback's on_train_end: the final evaluation alerts whatever the order.
        self._judge_new_rows(trainer)

    # ------------------------------------------------------------------ judging

    def _drop_counts_of_another_history(self) -> None:
        """Keep a checkpoint's counts only if the callback restored the history they count
        (a resume that changed its conditions, seed or scoring settings starts a new one)."""
        restored_for, self._restored_for = self._restored_for, None
        if restored_for is None:
            return
        if self.diversity.resumed and restored_for == self.diversity.state_key:
            return
        rank_zero_warn(
            f"DiversityCollapseMonitor({self.monitor!r}): the checkpoint's judging state counts "
            "a diversity history that this run did not restore (its settings changed); "
            "judging starts afresh",
            category=UserWarning,
        )
        self._judged, self._below, self.collapse_step = 0, 0, None

    def threshold(self, before: int | None = None) -> float | None:
        """The value below which the evaluation after the first ``before`` rows of the history
        (default: all, i.e. the next evaluation) counts; None before the baseline exists."""
        if self.min_value is not None:
            return self.min_value
        history = self.diversity.history[
            : max(1, len(self.diversity.history) if before is None else before)
        ]
        if not history:
            return None
        rows = history[:1] if self.reference == "first" else history
        row = max(rows, key=self._value)
        baseline = self._value(row)
        if not baseline > 0:
            raise ValueError(
                f"`min_fraction` needs a positive reference value, got {self.monitor} = "
                f"{baseline} at step {row['step']}; give `min_value` instead"
            )
        return self.min_fraction * baseline

    def _judge_new_rows(self, trainer: Trainer) -> None:
        history = self.diversity.history
        new_rows = history[self._judged :]
        for index, row in enumerate(new_rows, start=self._judged):
            value, threshold = self._value(row), self.threshold(before=index)
            self._below = self._below + 1 if self._crossed(value, threshold) else 0
            if self._below == self.patience:
                self.collapse_step = int(row["step"])
                self._alert(trainer, self._message(row, value, threshold))
        self._judged = len(history)
        # Only on a new evaluation: a run resumed after a stop trains until the next one decides.
        if new_rows and self.mode == "stop" and self._below >= self.patience:
            trainer.should_stop = True

    def _crossed(self, value: float, threshold: float) -> bool:
        """Whether ``value`` is on the wrong side of ``threshold`` (below; NaN counts)."""
        return not value >= threshold

    def _value(self, row: dict[str, float]) -> float:
        if self.monitor not in row:
            keys = sorted(key for key in row if key not in ROW_FIELDS)
            raise ValueError(
                f"`monitor` {self.monitor!r} is not a logged diversity key; got {keys}"
            )
        return float(row[self.monitor])

    def _message(self, row: dict[str, float], value: float, threshold: float) -> str:
        if self.min_fraction is not None:
            reference = threshold / self.min_fraction
            share = f"{self.min_fraction:.0%} of its {self.reference} value {reference:.4g}"
            limit = f"{threshold:.4g} ({share})"
        else:
            limit = f"min_value={threshold:.4g}"
        action = "stopping training" if self.mode == "stop" else "training goes on (mode='warn')"
        return (
            f"Diversity collapse: {self.monitor} = {value:.4g} at step {int(row['step'])} has been "
            f"below {limit} for {self.patience} evaluation(s) in a row; {action}"
        )

    def _alert(self, trainer: Trainer, message: str) -> None:
        rank_zero_warn(message, category=RuntimeWarning)
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.alert(
                    title="Diversity collapse", text=message, level=wandb.AlertLevel.WARN
                )


class CopyRateMonitor(DiversityCollapseMonitor):
    r"""Stop training, or alert, when the copy rate (or another memorization score) rises
    above a value: a fine-tune that starts returning its training images.

    The same rules as :class:`DiversityCollapseMonitor`, the other way round: after each new
    evaluation of ``diversity`` (which needs ``reference=``) the monitored value is compared
    with ``max_value``; above it for ``patience`` evaluations in a row, the monitor warns, alerts
    W&B and, with ``mode="stop"``, stops training. NaN counts as above.

    Args:
        diversity: the callback whose evaluations are judged (with a reference set).
        monitor: the key judged; default ``"{prefix}/copy_rate"``.
        max_value: fire above this value (a share in [0, 1] for the copy rate).
        patience: consecutive evaluations above it before the monitor fires.
        mode: ``"stop"`` or ``"warn"``.

    Examples:
        >>> import torch
        >>> from diversity_callbacks import CopyRateMonitor, DiversityCallback
        >>> training_images = torch.rand(20, 3, 32, 32) * 2 - 1  # or a folder, a Dataset...
        >>> diversity = DiversityCallback(num_samples=64, reference=training_images)
        >>> CopyRateMonitor(diversity, max_value=0.05).monitor
        'diversity/copy_rate'
    """

    def __init__(
        self,
        diversity: DiversityCallback,
        monitor: str | None = None,
        *,
        max_value: float = 0.05,
        patience: int = 1,
        mode: Literal["stop", "warn"] = "stop",
    ) -> None:
        if not isinstance(diversity, DiversityCallback):
            raise TypeError(
                f"`diversity` must be a DiversityCallback, got {type(diversity).__name__}"
            )
        key = monitor if monitor is not None else diversity.evaluator.key("copy_rate")
        try:
            super().__init__(diversity, key, min_value=max_value, patience=patience, mode=mode)
        except (TypeError, ValueError) as error:  # in this class's argument's name
            raise type(error)(str(error).replace("min_value", "max_value")) from None

    @property
    def max_value(self) -> float:
        """The value above which an evaluation counts."""
        assert self.min_value is not None
        return self.min_value

    def _crossed(self, value: float, threshold: float) -> bool:
        return not value <= threshold

    def _message(self, row: dict[str, float], value: float, threshold: float) -> str:
        action = "stopping training" if self.mode == "stop" else "training goes on (mode='warn')"
        return (
            f"Memorization: {self.monitor} = {value:.4g} at step {int(row['step'])} has been "
            f"above max_value={threshold:.4g} for {self.patience} evaluation(s) in a row; {action}"
        )


def _thresholds(
    min_value: float | None, min_fraction: float | None
) -> tuple[float | None, float | None]:
    """Check that exactly one threshold is given, finite, and a fraction lies in (0, 1]."""
    if (min_value is None) == (min_fraction is None):
        raise ValueError(
            "give exactly one of `min_value` (an absolute threshold) or `min_fraction` (a "
            f"fraction of the first evaluation), got min_value={min_value!r}, "
            f"min_fraction={min_fraction!r}"
        )
    if min_value is not None:
        if isinstance(min_value, bool) or not isinstance(min_value, (int, float)):
            raise TypeError(f"`min_value` must be a number, got {type(min_value).__name__}")
        if not math.isfinite(min_value):
            raise ValueError(f"`min_value` must be finite, got {min_value!r}")
        return float(min_value), None
    if isinstance(min_fraction, bool) or not isinstance(min_fraction, (int, float)):
        raise TypeError(f"`min_fraction` must be a number, got {type(min_fraction).__name__}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"`min_fraction` must lie in (0, 1], got {min_fraction!r}")
    return None, float(min_fraction)


__all__ = ["CopyRateMonitor", "DiversityCollapseMonitor"]
