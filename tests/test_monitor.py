"""DiversityCollapseMonitor on the tiny generator: fires on a real collapse, after `patience`
evaluations, whatever the hook order; not on one bad evaluation, an unchanged model or training."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Container
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor

from diversity_callbacks import DiversityCallback, DiversityCollapseMonitor
from tests.helpers.trainer import PROMPTS, QUIET, PixelEmbedder, TinyGenerator, tiny_data

EVERY = 2
MAX_STEPS = 12


def collapsing_at(steps: Container[int]) -> Callable[..., Tensor]:
    """A sampler whose samples of one prompt are all alike at the given global steps."""

    def sample(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        if module.trainer.global_step in steps:
            generators = [torch.Generator(module.device).manual_seed(0) for _ in generators]
        return module.generate(prompts, generators)

    return sample


def make_diversity(sample_fn: Callable[..., Tensor] | None = None) -> DiversityCallback:
    return DiversityCallback(
        PROMPTS,
        samples_per_condition=4,
        every_n_train_steps=EVERY,
        embedder=PixelEmbedder(),
        sce=False,
        sample_fn=sample_fn,
    )


def fit(callbacks: list, lr: float = 0.0, **kwargs: Any) -> L.Trainer:
    """lr=0: the model never changes, so only the sampler moves the scores."""
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=callbacks,
        **{"max_steps": MAX_STEPS, **kwargs},
    )
    trainer.fit(TinyGenerator(lr=lr), tiny_data())
    return trainer


@pytest.mark.parametrize("monitor_first", [False, True])
def test_stops_after_patience_evaluations_below_a_fraction_of_the_baseline(monitor_first: bool):
    diversity = make_diversity(collapsing_at(range(4, MAX_STEPS + 1)))
    monitor = DiversityCollapseMonitor(diversity, min_fraction=0.9, patience=2)
    callbacks = [monitor, diversity] if monitor_first else [diversity, monitor]
    # global step 6 is the loggers' step 5: the message names the step the plots show
    with pytest.warns(RuntimeWarning, match=r"diversity/vendi_q1 = .* at step 5 .* stopping"):
        trainer = fit(callbacks)
    values = {row["global_step"]: row["diversity/vendi_q1"] for row in diversity.history}
    assert values[4] < 0.9 * diversity.history[0]["diversity/vendi_q1"]  # a real collapse
    # the second collapsed evaluation fires (patience counts evaluations, not batches)...
    assert monitor.collapse_step == 5
    # ...and training stops after that batch, or the next one when the monitor's hook ran first
    assert trainer.global_step == (7 if monitor_first else 6)
    assert max(values) == trainer.global_step  # the final model is scored, after a stop too


@pytest.mark.parametrize(
    "sample_fn",
    [collapsing_at({4}), None],
    ids=["one bad evaluation", "unchanged model"],
)
def test_one_bad_evaluation_or_an_unchanged_model_does_not_fire(sample_fn, recwarn):
    diversity = make_diversity(sample_fn)
    monitor = DiversityCollapseMonitor(diversity, min_fraction=0.9, patience=2)
    trainer = fit([diversity, monitor])
    assert trainer.global_step == MAX_STEPS
    assert monitor.collapse_step is None
    assert not [w for w in recwarn if "collapse" in str(w.message)]


def test_sampling_noise_with_single_dips_below_the_threshold_does_not_fire():
    seeds = itertools.count(1000)

    def fresh_noise(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        """New seeds at every evaluation: the scores scatter as a real sampler's would."""
        generators = [torch.Generator(module.device).manual_seed(next(seeds)) for _ in generators]
        return module.generate(prompts, generators)

    diversity = make_diversity(fresh_noise)
    monitor = DiversityCollapseMonitor(diversity, min_fraction=0.9, patience=2)
    trainer = fit([diversity, monitor], max_steps=40)
    assert trainer.global_step == 40 and monitor.collapse_step is None
    values = [row["diversity/vendi_q1"] for row in diversity.history]
    below = [value < 0.9 * values[0] for value in values]
    assert any(below)  # patience=1 would have stopped this healthy run
    assert not any(a and b for a, b in itertools.pairwise(below))


def test_warn_mode_alerts_once_per_collapse_and_training_goes_on():
    diversity = make_diversity(collapsing_at(range(4, MAX_STEPS + 1)))
    monitor = DiversityCollapseMonitor(diversity, min_value=1e9, patience=1, mode="warn")
    with pytest.warns(RuntimeWarning, match="training goes on") as caught:
        trainer = fit([diversity, monitor])
    assert trainer.global_step == MAX_STEPS
    # every evaluation is below 1e9: one episode, one alert, at the first evaluation
    assert len([w for w in caught if "collapse" in str(w.message)]) == 1
    assert monitor.collapse_step == diversity.history[0]["step"]


def test_wandb_alert_is_sent_through_an_attached_wandb_logger(monkeypatch):
    wandb = pytest.importorskip("wandb")
    alerts: list[dict[str, Any]] = []

    class FakeWandbLogger(L.pytorch.loggers.WandbLogger):
        """A WandbLogger whose run records alerts instead of starting W&B."""

        def __init__(self) -> None:
            L.pytorch.loggers.logger.Logger.__init__(self)

        @property
        def experiment(self) -> SimpleNamespace:
            return SimpleNamespace(alert=lambda **kwargs: alerts.append(kwargs))

    diversity = make_diversity()
    monitor = DiversityCollapseMonitor(diversity, min_value=1e9, patience=1, mode="warn")
    trainer = SimpleNamespace(loggers=[FakeWandbLogger()], is_global_zero=True, should_stop=False)
    diversity.history.append({"step": 0, "epoch": 0, "diversity/vendi_q1": 2.0})
    with pytest.warns(RuntimeWarning, match="Diversity collapse"):
        monitor.on_fit_end(trainer, None)
    (alert,) = alerts
    assert alert["title"] == "Diversity collapse" and alert["level"] == wandb.AlertLevel.WARN
    assert "diversity/vendi_q1 = 2 at step 0" in alert["text"]
    assert not trainer.should_stop  # mode="warn"


def test_no_evaluation_yet_is_not_an_error_and_a_wrong_key_names_the_logged_ones():
    diversity = make_diversity()
    monitor = DiversityCollapseMonitor(diversity, "diversity/vendi_q3", min_fraction=0.5)
    trainer = SimpleNamespace(loggers=[], is_global_zero=True, should_stop=False)
    monitor.on_fit_end(trainer, None)  # empty history: nothing to judge
    assert monitor.threshold() is None
    diversity.history.append({"step": 2, "epoch": 0, "diversity/vendi_q1": 2.0})
    with pytest.raises(ValueError, match=re.escape("got ['diversity/vendi_q1']")):
        monitor.on_fit_end(trainer, None)


def test_the_state_resumes_the_count_and_a_resumed_stopped_run_waits_for_a_new_evaluation():
    diversity = make_diversity()
    first = DiversityCollapseMonitor(diversity, min_value=3.0, patience=2)
    trainer = SimpleNamespace(loggers=[], is_global_zero=True, should_stop=False)
    diversity.history.extend(
        [{"step": 2, "diversity/vendi_q1": 4.0}, {"step": 4, "diversity/vendi_q1": 2.0}]
    )
    first.on_fit_end(trainer, None)
    resumed = DiversityCollapseMonitor(diversity, min_value=3.0, patience=2)
    resumed.load_state_dict(first.state_dict())
    diversity.history.append({"step": 6, "diversity/vendi_q1": 2.5})
    with pytest.warns(RuntimeWarning, match="at step 6"):
        resumed.on_fit_end(trainer, None)
    assert trainer.should_stop and resumed.collapse_step == 6
    # resumed again after that stop: training goes on until the next evaluation decides
    again = DiversityCollapseMonitor(diversity, min_value=3.0, patience=2)
    again.load_state_dict(resumed.state_dict())
    diversity.load_state_dict(diversity.state_dict())  # the callback restores its history too
    trainer.should_stop = False
    again.on_train_start(trainer, None)
    assert not trainer.should_stop


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "give exactly one of `min_value`"),
        ({"min_value": 1.0, "min_fraction": 0.5}, ValueError, "give exactly one of `min_value`"),
        ({"min_fraction": 1.5}, ValueError, r"`min_fraction` must lie in \(0, 1\], got 1.5"),
        ({"min_fraction": "half"}, TypeError, "`min_fraction` must be a number, got str"),
        ({"min_value": float("nan")}, ValueError, "`min_value` must be finite, got nan"),
        ({"min_value": 2.0, "patience": 0}, ValueError, "`patience` must be an integer >= 1"),
        ({"min_value": 2.0, "mode": "halt"}, ValueError, '`mode` must be "stop" or "warn"'),
    ],
)
def test_invalid_arguments_are_rejected_with_the_argument_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        DiversityCollapseMonitor(make_diversity(), **kwargs)


def test_the_monitored_callback_must_be_a_diversity_callback():
    with pytest.raises(TypeError, match="`diversity` must be a DiversityCallback, got dict"):
        DiversityCollapseMonitor({}, min_value=1.0)


def test_the_default_key_follows_the_evaluator_prefix():
    diversity = DiversityCallback(PROMPTS, embedder=PixelEmbedder(), prefix="val_div")
    assert DiversityCollapseMonitor(diversity, min_value=1.0).monitor == "val_div/vendi_q1"


def test_a_monitor_on_a_0_1_key_fails_naming_the_new_key():
    with pytest.raises(ValueError, match="now logged as 'diversity/per_class_vendi_q2'"):
        DiversityCollapseMonitor(make_diversity(), "diversity/class_conditional_vendi_q2")


def test_a_monitor_whose_callback_is_not_in_the_trainer_fails_at_setup():
    diversity = make_diversity()
    monitor = DiversityCollapseMonitor(diversity, min_value=1.0)
    with pytest.raises(ValueError, match=r"judges a DiversityCallback that is not in the Trainer"):
        fit([monitor, make_diversity()])  # another instance than the one it judges


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"samples_per_condition": 3},
        {"prompts": PROMPTS[:2]},
        {"vendi_kernel": "linear"},
    ],
    ids=["seed", "samples_per_condition", "prompts", "vendi_kernel"],
)
def test_after_a_resume_that_starts_a_fresh_history_the_monitor_judges_it_afresh(
    tmp_path, recwarn, change: dict[str, Any]
):
    def pair(**options: Any) -> tuple[DiversityCallback, DiversityCollapseMonitor]:
        arguments = {"samples_per_condition": 4, "every_n_train_steps": EVERY, **options}
        diversity = DiversityCallback(
            arguments.pop("prompts", PROMPTS), embedder=PixelEmbedder(), sce=False, **arguments
        )
        return diversity, DiversityCollapseMonitor(
            diversity, min_value=1e9, patience=1, mode="warn"
        )

    trainer = fit(list(pair()), max_steps=8)
    trainer.save_checkpoint(tmp_path / "step8.ckpt")
    diversity, monitor = pair(**change)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**{**QUIET, "max_steps": 12, "callbacks": [diversity, monitor]})
    trainer.fit(TinyGenerator(lr=0.0), tiny_data(), ckpt_path=tmp_path / "step8.ckpt")
    # the new history's baseline (global step 8) is judged: below 1e9, it fires at once
    assert diversity.history[0]["global_step"] == 8
    assert monitor.collapse_step == diversity.history[0]["step"]
    assert any("judging starts afresh" in str(w.message) for w in recwarn)


def test_a_resume_with_unchanged_settings_keeps_the_monitors_count(tmp_path, recwarn):
    diversity = make_diversity()
    monitor = DiversityCollapseMonitor(diversity, min_value=1e9, patience=1, mode="warn")
    trainer = fit([diversity, monitor], max_steps=8)
    trainer.save_checkpoint(tmp_path / "step8.ckpt")
    diversity = make_diversity()
    monitor = DiversityCollapseMonitor(diversity, min_value=1e9, patience=1, mode="warn")
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**{**QUIET, "max_steps": 12, "callbacks": [monitor, diversity]})
    trainer.fit(TinyGenerator(lr=0.0), tiny_data(), ckpt_path=tmp_path / "step8.ckpt")
    assert monitor.collapse_step == 0  # the first run's episode goes on: no second alert
    assert not any("afresh" in str(w.message) for w in recwarn)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        ({"judged": "4"}, TypeError, "checkpoint entry 'judged' must be int, got str '4'"),
        ({"below": None}, TypeError, "checkpoint entry 'below' must be int, got NoneType"),
        ({"collapse_step": 2.5}, TypeError, "'collapse_step' must be int or NoneType, got float"),
    ],
)
def test_an_edited_checkpoint_state_fails_naming_the_monitor_and_the_entry(edit, error, message):
    monitor = DiversityCollapseMonitor(make_diversity(), min_value=1.0)
    with pytest.raises(error, match=re.escape(monitor.state_key) + ".*" + re.escape(message)):
        monitor.load_state_dict({**monitor.state_dict(), **edit})
    with pytest.raises(ValueError, match="checkpoint state has no 'judged' entry"):
        monitor.load_state_dict({"below": 0, "collapse_step": None})


def test_the_final_evaluation_is_judged_whatever_the_order_of_the_callbacks():
    last = MAX_STEPS + 1  # off the cadence: only the evaluation at the end of training sees it
    diversity = make_diversity(collapsing_at({last}))
    monitor = DiversityCollapseMonitor(diversity, min_fraction=0.9, patience=1, mode="warn")
    with pytest.warns(RuntimeWarning, match="Diversity collapse"):
        fit([monitor, diversity], max_steps=last)
    assert diversity.history[-1]["global_step"] == last
    assert monitor.collapse_step == diversity.history[-1]["step"]
