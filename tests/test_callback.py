"""DiversityCallback in one process: evaluation set, cadence, isolation from training, failures."""

from __future__ import annotations

import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

from diversity_callbacks import DiversityCallback, EvaluationError
from tests.helpers.callback import make_callback
from tests.helpers.trainer import (
    PROMPTS,
    QUIET,
    MeanNorm,
    PixelEmbedder,
    TinyGenerator,
    tiny_data,
)


def fit(callbacks: list, module: TinyGenerator | None = None, val: bool = False, **kwargs: Any):
    L.seed_everything(0, verbose=False)
    module = module if module is not None else TinyGenerator()
    trainer = L.Trainer(**{**QUIET, "max_steps": 4, "callbacks": callbacks, **kwargs})
    trainer.fit(module, tiny_data(), tiny_data(shuffle=False) if val else None)
    return trainer, module


def steps(callback: DiversityCallback) -> list[int]:
    """The global steps evaluated (the cadence counts them; ``step`` is the loggers' one)."""
    return [row["global_step"] for row in callback.history]


# ---------------------------------------------------------------- leaving training untouched


def test_training_losses_and_weights_are_bit_identical_with_and_without_the_callback():
    def noisy_sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        torch.rand(3)  # draws from the global RNG, as careless samplers do
        return module.generate(prompts, generators)

    _, plain = fit([], max_steps=6)
    callback = make_callback(every_n_train_steps=1, sample_fn=noisy_sampler)
    _, watched = fit([callback], max_steps=6)
    assert steps(callback) == [1, 2, 3, 4, 5, 6]
    assert watched.losses == plain.losses  # dropout: train mode and RNG state both matter
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sampling_sees_eval_mode_no_grad_and_the_trainer_precision():
    seen = []

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        seen.append(
            (
                module.training,
                module.net.training,
                torch.is_grad_enabled(),
                torch.get_default_dtype(),
            )
        )
        return module.generate(prompts, generators)

    states = []

    class StateEmbedder(PixelEmbedder):
        def embed_images(self, images: Tensor) -> Tensor:
            states.append((images.dtype, vendi.num_samples.dtype, torch.get_default_dtype()))
            return super().embed_images(images)

    callback = make_callback(sample_fn=sampler, embedder=StateEmbedder())
    vendi = callback.evaluator.metrics["vendi"].metric
    fit([callback], max_steps=2, precision="bf16-true")
    assert seen and all(s == (False, False, False, torch.bfloat16) for s in seen)
    # images are widened to float32 for the embedder, outside the bf16 default-dtype context
    assert states and all(s == (torch.float32, torch.long, torch.float32) for s in states)
    assert vendi._defaults["second_moment"].dtype == torch.float64
    assert all(math.isfinite(v) for v in callback.history[0].values())


# ---------------------------------------------------------------- the fixed evaluation set


def test_sample_i_gets_the_same_prompt_and_seed_at_every_evaluation():
    calls = []

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        calls.append(list(zip(prompts, [g.initial_seed() for g in generators], strict=True)))
        return module.generate(prompts, generators)

    callback = make_callback(sample_fn=sampler, seed=7)
    fit([callback], max_steps=4)
    assert [len(c) for c in calls] == [4, 4, 1, 4, 4, 1]  # 9 samples in batches of 4, twice
    first = [sample for batch in calls[:3] for sample in batch]
    second = [sample for batch in calls[3:] for sample in batch]
    expected = [(PROMPTS[i // 3], DiversityCallback.sample_seed(7, i)) for i in range(9)]
    assert first == second == expected
    assert len({seed for _, seed in first}) == 9
    assert DiversityCallback.sample_seed(8, 0) not in {seed for _, seed in first}


def test_unchanged_model_gives_identical_scores_at_every_evaluation():
    callback = make_callback(vendi_orders=(1, 2, "inf"))
    fit([callback], module=TinyGenerator(lr=0.0), max_steps=4)
    first, second = (
        {k: v for k, v in row.items() if "seconds" not in k and "step" not in k}
        for row in callback.history
    )
    assert first == second
    assert set(first) == {
        "epoch",
        "diversity/vendi_q1",
        "diversity/vendi_q2",
        "diversity/vendi_qinf",
        "diversity/per_prompt_vendi_q1",
        "diversity/per_prompt_vendi_q2",
        "diversity/per_prompt_vendi_qinf",
        "diversity/clip_score",
        "diversity/num_modes",
        "diversity/lost_mode_mass",
        "diversity/gained_mode_mass",
        *(
            f"diversity/{name}_{q}"
            for name in ("cond_vendi", "info_vendi")
            for q in ("q1", "q2", "qinf")
        ),
    }
    assert (
        1.0
        <= first["diversity/vendi_qinf"]
        <= first["diversity/vendi_q2"]
        <= first["diversity/vendi_q1"]
        <= 9
    )


# ---------------------------------------------------------------- cadence


def test_fires_once_per_optimizer_step_under_gradient_accumulation():
    callback = make_callback(every_n_train_steps=2)
    fit([callback], max_steps=6, accumulate_grad_batches=2)
    assert steps(callback) == [2, 4, 6]


def test_every_n_epochs_evaluates_at_epoch_ends():
    callback = make_callback(every_n_train_steps=None, every_n_epochs=2)
    fit([callback], max_steps=-1, max_epochs=4, limit_train_batches=2)
    assert steps(callback) == [4, 8]


def test_validation_cadence_skips_the_sanity_check_and_feeds_early_stopping():
    # EarlyStopping listed first: the callback evaluates in on_validation_epoch_end, before any
    # callback's on_validation_end reads trainer.callback_metrics.
    stopper = EarlyStopping(monitor="diversity/vendi_q1", mode="max", patience=0, strict=True)
    callback = make_callback(every_n_train_steps=None, after_validation=True)
    trainer, _ = fit(
        [stopper, callback],
        module=TinyGenerator(lr=0.0),
        val=True,
        max_steps=-1,
        max_epochs=6,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
    )
    assert steps(callback) == [2, 4]  # nothing at step 0; stopped: constant diversity
    assert trainer.should_stop and trainer.current_epoch == 2


def test_model_checkpoint_can_monitor_a_diversity_key(tmp_path: Path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, monitor="diversity/vendi_q2", mode="max", every_n_train_steps=2
    )
    callback = make_callback(every_n_train_steps=2)
    fit([callback, checkpoint], max_steps=4, enable_checkpointing=True)
    best = max(row["diversity/vendi_q2"] for row in callback.history)
    assert checkpoint.best_model_score is not None
    assert float(checkpoint.best_model_score) == pytest.approx(best, rel=1e-12)


# ---------------------------------------------------------------- loggers


class TwoOptimizers(TinyGenerator):  # like a GAN: global_step moves by 2 per batch
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        for optimizer in self.optimizers():
            optimizer.zero_grad()
            self.manual_backward(super().training_step(batch, batch_idx))
            optimizer.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.net.parameters()),
            torch.optim.SGD(self.prompt_embedding.parameters()),
        ]


def csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    text = Path(logger.log_dir, "metrics.csv").read_text().splitlines()
    header = text[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in text[1:]]


@pytest.mark.parametrize("module", [TinyGenerator, TwoOptimizers])
def test_values_share_the_x_axis_of_self_log_for_the_same_batch(tmp_path: Path, module: type):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    csv, board = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    media_dir = tmp_path / "media"
    callback = make_callback(every_n_train_steps=4, evaluate_at_start=True, media_dir=media_dir)
    fit([callback], module=module(), max_steps=8, logger=[csv, board], log_every_n_steps=1)
    rows = csv_rows(csv)
    losses = [int(r["step"]) for r in rows if r["train_loss"]]  # one per batch
    logged = [r for r in rows if r["diversity/vendi_q1"]]
    values = [float(r["diversity/vendi_q1"]) for r in logged]
    assert values == pytest.approx([row["diversity/vendi_q1"] for row in callback.history])
    # the baseline, then the evaluations after the batches that made global_step 4 and 8: the
    # batches' own self.log steps, whatever the number of optimizers per batch
    batches = [b // 2 if module is TwoOptimizers else b for b in (4, 8)]
    aligned = [0] + [losses[b - 1] for b in batches]
    assert [int(r["step"]) for r in logged] == aligned
    # one step per evaluation everywhere: history, media_dir and the loggers
    assert [row["step"] for row in callback.history] == aligned
    assert sorted(path.name for path in media_dir.iterdir()) == [f"step_{s:06d}" for s in aligned]
    assert steps(callback) == [0, 4, 8]  # the global steps, kept as their own field
    assert all(r["epoch"] == "0" for r in logged)  # filled, as on self.log rows
    events = EventAccumulator(board.log_dir)
    events.Reload()
    assert [e.step for e in events.Scalars("diversity/per_prompt_vendi_q1")] == aligned
    assert [e.step for e in events.Scalars("train_loss")][: aligned[-1] + 1] == losses[
        : aligned[-1] + 1
    ]


@pytest.mark.parametrize("final", [True, False])
def test_the_final_model_is_scored_when_its_step_was_not_evaluated(tmp_path: Path, final: bool):
    csv = CSVLogger(tmp_path)
    callback = make_callback(every_n_train_steps=5, evaluate_on_train_end=final)
    fit([callback], max_steps=12, logger=csv)
    assert steps(callback) == ([5, 10, 12] if final else [5, 10])
    logged = [int(r["step"]) for r in csv_rows(csv) if r["diversity/vendi_q1"]]
    assert logged == [row["step"] for row in callback.history]
    on_cadence = make_callback(every_n_train_steps=4, evaluate_on_train_end=True)
    fit([on_cadence], max_steps=12)
    assert steps(on_cadence) == [4, 8, 12]  # the last step was evaluated: not twice


@pytest.mark.parametrize(("enabled", "terminal"), [(True, True), (False, True), (True, False)])
def test_progress_bar_draws_where_the_trainers_bar_would_on_a_terminal(
    enabled: bool, terminal: bool, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    fit([make_callback()], max_steps=2, enable_progress_bar=enabled)
    assert ("diversity: sampling" in capsys.readouterr().err) is (enabled and terminal)


def test_images_in_0_1_declared_minus_1_1_warn_once():
    def unit_range(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        return (module.generate(prompts, generators) + 1) / 2  # diffusers' output_type="pt"

    callback = make_callback(sample_fn=unit_range)  # the default value_range="[-1,1]"
    with pytest.warns(
        UserWarning, match=r"no value of this evaluation's images lies below 0"
    ) as caught:
        fit([callback], max_steps=4)
    assert sum("value_range='[0,1]'" in str(w.message) for w in caught) == 1  # two evaluations
    with warnings.catch_warnings():
        # the same generator, declared right, and a real [-1, 1] generator: no range warning
        warnings.filterwarnings("error", message=".*value_range")
        fit([make_callback(sample_fn=unit_range, value_range="[0,1]")], max_steps=4)
        fit([make_callback()], max_steps=4)


# ---------------------------------------------------------------- resume and coexistence


def test_resume_continues_the_schedule_and_the_history_of_each_instance(tmp_path: Path):
    def pair() -> tuple[DiversityCallback, DiversityCallback]:
        return make_callback(every_n_train_steps=2), make_callback(
            prompts=PROMPTS[:2], every_n_train_steps=3, prefix="pair"
        )

    first = pair()
    assert first[0].state_key != first[1].state_key
    trainer, _ = fit(list(first), max_steps=4)
    trainer.save_checkpoint(tmp_path / "step4.ckpt")
    resumed = pair()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(**{**QUIET, "max_steps": 8, "callbacks": list(resumed)})
    trainer.fit(TinyGenerator(), tiny_data(), ckpt_path=tmp_path / "step4.ckpt")
    assert steps(resumed[0]) == [2, 4, 6, 8]
    assert steps(resumed[1]) == [3, 6]
    assert resumed[0].history[:2] == first[0].history


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"vendi_kernel": "linear"}, "vendi_kernel: 'cosine' -> 'linear'"),
        ({"vendi_orders": (1,)}, "vendi_orders: ['1.0', '2.0'] -> ['1.0']"),
        ({"vendi_kernel": "gaussian", "vendi_sigma": 1.0}, "vendi_sigma: None -> 1.0"),
        ({"metrics": {"norm": MeanNorm()}}, "'norm': 'MeanNorm', 'per_prompt_vendi'"),
    ],
)
def test_a_resume_that_changes_how_scores_are_computed_starts_a_fresh_history(
    tmp_path: Path, change: dict[str, Any], named: str
):
    first = make_callback(every_n_train_steps=2)
    trainer, _ = fit([first], max_steps=4)
    trainer.save_checkpoint(tmp_path / "step4.ckpt")
    resumed = make_callback(every_n_train_steps=2, evaluate_at_start=True, **change)
    assert resumed.state_key == first.state_key  # the same evaluation set...
    trainer = L.Trainer(**{**QUIET, "max_steps": 8, "callbacks": [resumed]})
    with pytest.warns(UserWarning, match=re.escape(named) + ".*starting a fresh history"):
        trainer.fit(TinyGenerator(), tiny_data(), ckpt_path=tmp_path / "step4.ckpt")
    # ...but other numbers: a new baseline at the resumed step, never the old rows
    assert steps(resumed) == [4, 6, 8] and not resumed.resumed


def test_monitors_find_the_values_before_the_first_evaluation_of_a_resumed_run(tmp_path: Path):
    first = make_callback(every_n_train_steps=4)
    trainer, _ = fit([first], max_steps=4)
    trainer.save_checkpoint(tmp_path / "step4.ckpt")
    seen = {}

    class Peek(L.Callback):  # runs before the callback's first evaluation after the resume
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            seen.setdefault("value", trainer.callback_metrics.get("diversity/vendi_q1"))

    resumed = make_callback(every_n_train_steps=4, evaluate_at_start=True)
    trainer = L.Trainer(**{**QUIET, "max_steps": 8, "callbacks": [Peek(), resumed]})
    trainer.fit(TinyGenerator(), tiny_data(), ckpt_path=tmp_path / "step4.ckpt")
    assert float(seen["value"]) == first.history[-1]["diversity/vendi_q1"]
    assert steps(resumed) == [4, 8]  # no second baseline on resume


def test_the_baseline_comes_before_the_first_step_and_early_stopping_finds_its_key():
    calls = []

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        calls.append(module.global_step)
        return module.generate(prompts, generators)

    # epochs of 8 steps end long before the first cadence evaluation at step 500
    callback = make_callback(every_n_train_steps=500, evaluate_at_start=True, sample_fn=sampler)
    stopping = EarlyStopping(monitor="diversity/vendi_q1", mode="max", patience=5)
    trainer, _ = fit([callback, stopping], max_steps=24)
    assert trainer.global_step == 24 and steps(callback) == [0] and set(calls) == {0}
    with pytest.raises(RuntimeError, match="not available"):  # what 0.1 did
        fit([make_callback(every_n_train_steps=500), EarlyStopping(monitor="diversity/vendi_q1")])


# ---------------------------------------------------------------- failure policy


def failing_on(prompt: str):
    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        if prompt in prompts:
            raise RuntimeError("out of memory")
        return module.generate(prompts, generators)

    return sampler


def test_a_sampling_failure_raises_naming_the_step_and_the_prompt():
    module = TinyGenerator()
    callback = make_callback(sample_fn=failing_on(PROMPTS[2]), every_n_train_steps=3)
    with pytest.raises(
        RuntimeError,
        match=r"at global step 3 while sampling or embedding: samples 4\.\.7 \(prompts "
        r"'a blue circle', 'a green line'\): out of memory",
    ):
        fit([callback], module=module, max_steps=4)
    assert module.training and module.net[2].training  # modes restored after the failure


def test_on_error_warn_skips_the_evaluation_and_training_goes_on():
    callback = make_callback(sample_fn=failing_on(PROMPTS[0]), on_error="warn")
    with pytest.warns(RuntimeWarning, match=r"'a red square'.*on_error='warn'") as caught:
        trainer, _ = fit([callback], max_steps=4)
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    # both evaluations ran and failed; neither left a row or a monitored value behind
    assert [re.search(r"global step (\d+)", m).group(1) for m in messages] == ["2", "4"]
    assert trainer.global_step == 4 and callback.history == []
    assert not any(key.startswith("diversity/") for key in trainer.callback_metrics)


def test_on_error_warn_covers_a_failure_of_the_metric_computation():
    def constant(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        return torch.zeros(len(prompts), 3, 8, 8)  # centred pixels: every embedding is zero

    callback = make_callback(sample_fn=constant, vendi_kernel="linear", on_error="warn")
    with pytest.warns(RuntimeWarning, match=r"global step 2 while computing the metrics.*zero"):
        trainer, _ = fit([callback], max_steps=2)
    assert trainer.global_step == 2 and callback.history == []
    with pytest.raises(EvaluationError, match=r"global step 2 while computing the metrics"):
        fit([make_callback(sample_fn=constant, vendi_kernel="linear")], max_steps=2)


def test_after_a_skipped_evaluation_the_next_one_starts_empty():
    calls = []

    def flaky(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        calls.append(prompts)
        if len(calls) == 2:  # the first evaluation's second batch, after the first was embedded
            raise RuntimeError("out of memory")
        return module.generate(prompts, generators)

    def frozen() -> TinyGenerator:
        torch.manual_seed(0)
        return TinyGenerator(lr=0.0)

    callback, clean = make_callback(sample_fn=flaky, on_error="warn"), make_callback()
    with pytest.warns(RuntimeWarning, match="out of memory"):
        fit([callback], module=frozen(), max_steps=4)
    fit([clean], module=frozen(), max_steps=4)
    assert steps(callback) == [4] and steps(clean) == [2, 4]
    drop = {"diversity/eval_seconds"}
    assert callback.history[0].keys() - drop == clean.history[1].keys() - drop
    for key in callback.history[0].keys() - drop:
        assert callback.history[0][key] == clean.history[1][key], key


def test_an_embedding_failure_is_reported_like_a_sampling_failure():
    class BrokenEmbedder(PixelEmbedder):
        def embed_images(self, images: Tensor) -> Tensor:
            raise ValueError("wrong input size")

    with pytest.raises(EvaluationError, match=r"global step 2 .*'a red square'.*wrong input size"):
        fit([make_callback(embedder=BrokenEmbedder())], max_steps=2)


@pytest.mark.parametrize(
    ("output", "image_range", "match"),
    [
        (lambda x: x[:, :1], "[-1,1]", r"shape \(B, 3, H, W\), got \(4, 1, 8, 8\)"),
        (lambda x: x[:2], "[-1,1]", r"one image per generator, 4 in all, got a batch of 2"),
        (lambda x: (x * 100).long(), "[-1,1]", r"must be a floating dtype, got torch.int64"),
        (lambda x: x, "uint8", r"must be torch.uint8, got torch.float32"),
        (lambda x: x * 5, "[-1,1]", r"must lie in \[-1, 1\]"),
        (lambda x: x.fill_(math.nan), "[-1,1]", r"must be finite, got 768 NaN"),
    ],
)
def test_bad_generator_output_fails_clearly_before_any_embedding(
    output, image_range: str, match: str
):
    embedded = []

    class CountingEmbedder(PixelEmbedder):
        def embed_images(self, images: Tensor) -> Tensor:
            embedded.append(images.shape[0])
            return super().embed_images(images)

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        return output(module.generate(prompts, generators))

    callback = make_callback(
        sample_fn=sampler, embedder=CountingEmbedder(), value_range=image_range
    )
    with pytest.raises(RuntimeError, match=match):
        fit([callback], max_steps=2)
    assert embedded == []


def test_a_module_without_generate_and_no_sample_fn_is_reported():
    class NoGenerate(TinyGenerator):
        generate = None

    with pytest.raises(
        AttributeError, match=r"NoGenerate has no generate\(conditions, generators\)"
    ):
        fit([make_callback()], module=NoGenerate(), max_steps=2)


def test_a_callback_reused_in_a_second_fit_starts_a_fresh_history():
    calls = []

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        calls.append(len(prompts))
        return module.generate(prompts, generators)

    callback = make_callback(sample_fn=sampler)
    fit([callback], max_steps=4)
    first_calls = len(calls)
    fit([callback], max_steps=4)  # a new Trainer, a new model, the same callback
    assert first_calls > 0 and len(calls) == 2 * first_calls  # the second run evaluated too
    assert steps(callback) == [2, 4]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("watcher", [EarlyStopping, ModelCheckpoint])
def test_early_stopping_or_checkpointing_on_a_0_1_key_fails_naming_the_new_key(
    watcher: type, tmp_path: Path
):
    watching = watcher(monitor="diversity/conditional_vendi_q1", mode="max")
    checkpoints = {"enable_checkpointing": True, "default_root_dir": tmp_path}
    with pytest.raises(ValueError, match="now logged as 'diversity/per_prompt_vendi_q1'"):
        fit([make_callback(), watching], max_steps=2, **checkpoints)


def test_a_sampler_that_declares_its_range_sets_the_default_value_range():
    class UnitSampler:
        value_range = "[0,1]"

        def __call__(self, module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
            return (module.generate(prompts, generators) + 1) / 2

    declared = make_callback(sample_fn=UnitSampler())
    assert declared.evaluator.sample_embedder.value_range == "[0,1]"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*value_range")
        fit([declared], max_steps=2)  # [0, 1] images accepted, no range warning
    assert (
        make_callback(
            sample_fn=UnitSampler(), value_range="uint8"
        ).evaluator.sample_embedder.value_range
        == "uint8"
    )


def test_without_any_cadence_it_evaluates_every_epoch():
    callback = make_callback(every_n_train_steps=None)
    fit([callback], max_steps=24)  # 8 batches per epoch: 3 epochs
    assert steps(callback) == [8, 16, 24]
    assert [row["epoch"] for row in callback.history] == [0, 1, 2]


# ---------------------------------------------------------------- embedders and SCE

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "width": 64, "heads": 2, "layers": 1},
}


def test_sce_is_logged_when_the_embedder_embeds_texts():
    from diversity_callbacks.functional import schur_complement_entropy

    images = []

    def sampler(module: TinyGenerator, prompts: list[str], generators: list) -> Tensor:
        images.append((module.generate(prompts, generators) + 1) / 2)
        return images[-1] * 2 - 1

    callback = make_callback(sce=None, sample_fn=sampler)  # PixelEmbedder has embed_texts
    fit([callback], max_steps=2)
    row = callback.history[0]
    embedder = PixelEmbedder()
    prompts = [p for p in PROMPTS for _ in range(3)]
    expected = schur_complement_entropy(
        embedder.embed_images(torch.cat(images)), embedder.embed_texts(prompts), kernel="cosine"
    )
    assert row["diversity/sce"] == pytest.approx(float(expected.sce), rel=1e-9)
    assert row["diversity/sce_text"] == pytest.approx(float(expected.text_part), rel=1e-9)
    assert make_callback(sce=None, samples_per_condition=1).evaluator.sce is False


def test_sce_is_off_by_default_for_a_function_embedder_without_text_fn():
    from diversity_callbacks import FunctionEmbedder

    callback = make_callback(embedder=FunctionEmbedder(lambda x: x.mean(dim=(2, 3))), sce=None)
    fit([callback], max_steps=2)
    assert (
        "diversity/sce" not in callback.history[0] and "diversity/vendi_q1" in callback.history[0]
    )
    with pytest.raises(ValueError, match="`sce=True` needs an embedder with embed_texts"):
        make_callback(embedder=FunctionEmbedder(lambda x: x.mean(dim=(2, 3))), sce=True)


def test_the_default_clip_embedder_is_built_at_setup_without_disturbing_training(monkeypatch):
    from diversity_callbacks.embedders import clip

    built, original = [], clip.CLIPEmbedder

    def tiny_clip() -> clip.CLIPEmbedder:  # the default, but random and tiny: no download
        built.append(original(pretrained=None, model_kwargs=TINY_CLIP))
        return built[-1]

    monkeypatch.setattr(clip, "CLIPEmbedder", tiny_clip)
    _, plain = fit([], max_steps=2)
    callback = make_callback(embedder=None, sce=None, every_n_train_steps=1)
    assert callback.evaluator.embedder is None
    tester = make_callback(embedder=None)
    tester.setup(L.Trainer(**QUIET), TinyGenerator(), stage="test")  # never evaluates
    assert tester.evaluator.embedder is None and built == []
    _, watched = fit([callback], max_steps=2)
    assert callback.evaluator.embedder is built[0]
    assert watched.losses == plain.losses
    assert {"diversity/vendi_q1", "diversity/sce"} <= callback.history[0].keys()


def test_one_prompt_and_one_order_give_plain_scalars():
    callback = make_callback(prompts=PROMPTS[:1], vendi_orders=2, samples_per_condition=4)
    fit([callback], max_steps=2)
    row = callback.history[0]
    assert row["diversity/vendi_q2"] == pytest.approx(
        row["diversity/per_prompt_vendi_q2"], rel=1e-9
    )


def test_several_optimizers_per_batch_keep_the_cadence():
    callback = make_callback(every_n_train_steps=3)
    fit([callback], module=TwoOptimizers(), max_steps=12)
    assert steps(callback) == [4, 6, 10, 12]  # the first batch end at or past 3, 6, 9, 12
