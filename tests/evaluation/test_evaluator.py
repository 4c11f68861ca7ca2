"""DiversityEvaluator: one evaluation in a plain loop, under bare torch.distributed and in the
callback; conditions of every kind; samples of any kind; metrics as plug-ins."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor
from torchmetrics.clustering import CalinskiHarabaszScore

from diversity_callbacks import (
    DiversityCallback,
    DiversityEvaluator,
    EvaluationError,
    EvaluationMetric,
    SchurComplementEntropy,
    VendiScore,
    evaluate_existing,
)
from diversity_callbacks.evaluation import EvaluationSet, sample_seed
from diversity_callbacks.evaluation.evaluator import eval_mode
from diversity_callbacks.functional import (
    embedding_clip_score,
    per_condition_vendi_score,
    vendi_score,
)
from tests.helpers.distributed import run_distributed
from tests.helpers.trainer import (
    PROMPTS,
    QUIET,
    ClassConditionalGenerator,
    LetterEmbedder,
    MeanNorm,
    PixelEmbedder,
    TextGenerator,
    TinyGenerator,
    UnconditionalGenerator,
    text_data,
    tiny_data,
)


def frozen_generator() -> TinyGenerator:
    torch.manual_seed(0)
    return TinyGenerator(lr=0.0)


def brightness(images: Tensor) -> Tensor:
    """A per-sample quality of images in [0, 1]: their mean pixel value."""
    assert images.min() >= 0 and images.max() <= 1  # the generator's [-1, 1] as the embedder's
    return images.mean(dim=(1, 2, 3))


def evaluator(**kwargs: Any) -> DiversityEvaluator:
    options = {
        "samples_per_condition": 4,
        "batch_size": 5,
        "embedder": PixelEmbedder(),
        "vendi_orders": (1, 2, "inf"),
        "quality": brightness,
        "metrics": {
            "mean_norm": MeanNorm(),
            "calinski_harabasz": EvaluationMetric(
                CalinskiHarabaszScore(), inputs=("embeddings", "condition_ids")
            ),
        },
    }
    options.update(kwargs)
    return DiversityEvaluator(PROMPTS, **options)


def values(scalars: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in scalars.items() if not k.endswith("eval_seconds")}


def evaluate_on_ranks(rank: int, world_size: int) -> dict[str, float]:
    module = frozen_generator()
    result = evaluator().evaluate(module.generate, module=module, progress=False)
    return values(result.scalars)


def differing_on_rank_one(rank: int, world_size: int) -> dict[str, str]:
    """Each setting built otherwise on rank 1 than on rank 0: what every rank raised."""
    module, raised = frozen_generator(), {}
    changes = {
        "samples_per_condition": {"samples_per_condition": 3},
        "seed": {"seed": 1},
        "vendi_kernel": {"vendi_kernel": "linear"},
        "vendi_orders": {"vendi_orders": (1, 2)},
        "conditions": {"prompts": ["x", "y"]},
    }
    for name, change in changes.items():
        options = change if rank == 1 else {}
        built = (
            DiversityEvaluator(options.pop("prompts"), 4, embedder=PixelEmbedder())
            if "prompts" in options
            else evaluator(**options)
        )
        try:
            built.evaluate(module.generate, progress=False)
        except EvaluationError as error:
            raised[name] = str(error)
    return raised


# ---------------------------------------------------------------- one evaluation, three ways


@pytest.fixture(scope="module")
def plain_loop_values() -> dict[str, float]:
    module = frozen_generator()
    result = evaluator().evaluate(module.generate, module=module, progress=False)
    return values(result.scalars)


def test_a_plain_loop_gives_the_metrics_of_the_samples_it_drew(plain_loop_values):
    module, embedder = frozen_generator(), PixelEmbedder()
    indices = range(12)
    generators = [torch.Generator().manual_seed(sample_seed(0, i)) for i in indices]
    prompts = [PROMPTS[i // 4] for i in indices]
    with torch.no_grad():  # in the evaluator's batches of 5: float32 results depend on them
        images = [
            module.eval().generate(prompts[i : i + 5], generators[i : i + 5])
            for i in range(0, 12, 5)
        ]
        features = torch.cat([embedder.embed_images((x + 1) / 2) for x in images])
    expected = vendi_score(features, q=[1, 2, "inf"])
    per_prompt = per_condition_vendi_score(features, torch.arange(12) // 4, q=[1, 2, "inf"])
    for key, value in expected.items():
        assert plain_loop_values[f"diversity/vendi_{key}"] == pytest.approx(float(value), rel=1e-9)
    for column, key in enumerate(expected):
        mean = float(per_prompt[:, column].mean())
        assert plain_loop_values[f"diversity/per_prompt_vendi_{key}"] == pytest.approx(
            mean, rel=1e-9
        )
    norm = float(features.double().norm(dim=1).mean())
    assert plain_loop_values["diversity/mean_norm"] == pytest.approx(norm, rel=1e-9)
    texts = embedder.embed_texts(prompts)
    clip = float(embedding_clip_score(features, texts).mean())
    assert plain_loop_values["diversity/clip_score"] == pytest.approx(clip, rel=1e-9)
    quality = float(brightness((torch.cat(images) + 1) / 2).double().mean())
    assert plain_loop_values["diversity/quality"] == pytest.approx(quality, rel=1e-9)
    for key, value in expected.items():
        qvendi = plain_loop_values[f"diversity/qvendi_{key}"]
        assert qvendi == pytest.approx(quality * float(value), rel=1e-9)
    assert (
        "diversity/calinski_harabasz" in plain_loop_values and "diversity/sce" in plain_loop_values
    )


def test_two_torch_distributed_ranks_without_lightning_give_the_plain_loop_values(
    plain_loop_values,
):
    # 12 samples on 2 ranks in batches of 5: the ranks' batches (5 + 1 each) differ from one
    # process's (5 + 5 + 2), and the float32 generator's outputs differ in the last bits with the
    # batch, so the values agree to float32 round-off (measured: 7e-9), not to float64's.
    for ranked in run_distributed(evaluate_on_ranks):
        assert ranked.keys() == plain_loop_values.keys()
        for key, value in plain_loop_values.items():
            assert ranked[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.timeout(300)
def test_ranks_built_with_different_evaluators_are_refused_naming_the_rank_and_setting():
    for raised in run_distributed(differing_on_rank_one):
        assert raised.keys() == {
            "samples_per_condition",
            "seed",
            "vendi_kernel",
            "vendi_orders",
            "conditions",
        }
        for name, message in raised.items():
            assert message.startswith("rank 1's DiversityEvaluator differs from rank 0's: ")
            assert f"{name} " in message
        assert "samples_per_condition 4 on rank 0, 3 on rank 1" in raised["samples_per_condition"]


def test_the_callback_gives_the_plain_loop_values(plain_loop_values):
    callback = DiversityCallback(
        evaluator=evaluator(), every_n_train_steps=2, evaluate_at_start=False
    )
    L.Trainer(**QUIET, max_steps=2, callbacks=[callback]).fit(frozen_generator(), tiny_data())
    (row,) = callback.history
    assert values(
        {k: v for k, v in row.items() if k not in ("step", "global_step", "epoch")}
    ) == pytest.approx(plain_loop_values, rel=1e-9)


def test_evaluation_restores_the_mode_and_the_global_random_state():
    module = frozen_generator().train()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    evaluator().evaluate(module.generate, module=module, progress=False)
    assert module.training and torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- conditions of every kind


def fit_with(module: L.LightningModule, data: Any, **kwargs: Any) -> DiversityCallback:
    options = {
        "embedder": PixelEmbedder(),
        "every_n_train_steps": 2,
        "batch_size": 4,
        "evaluate_at_start": False,
    }
    callback = DiversityCallback(**{**options, **kwargs})
    L.seed_everything(0, verbose=False)
    L.Trainer(**QUIET, max_steps=4, callbacks=[callback]).fit(module, data)
    return callback


def test_a_class_conditional_generator_gets_its_labels_and_a_per_class_vendi_score():
    seen = []

    class Recording(ClassConditionalGenerator):
        def generate(self, labels: Tensor, generators: list) -> Tensor:
            seen.append(labels.tolist())
            return super().generate(labels, generators)

    callback = fit_with(
        Recording(), tiny_data(), class_labels={"cat": 2, "dog": 0}, samples_per_condition=3
    )
    assert seen[:2] == [[2, 2, 2, 0], [0, 0]]  # the labels, not the condition numbers
    row = callback.history[0]
    assert {"diversity/vendi_q1", "diversity/per_class_vendi_q1"} <= row.keys()
    assert "diversity/per_prompt_vendi_q1" not in row and "diversity/sce" not in row
    assert 1.0 < row["diversity/per_class_vendi_q1"] <= 3.0
    assert callback.evaluation_set.names == ("cat", "dog")


def test_an_unconditional_generator_gets_none_and_only_the_vendi_score_and_its_modes():
    callback = fit_with(UnconditionalGenerator(), tiny_data(), num_samples=10)
    row = callback.history[0]
    assert {k for k in row if k.startswith("diversity/")} == {
        "diversity/vendi_q1",
        "diversity/vendi_q2",
        "diversity/num_modes",
        "diversity/lost_mode_mass",
        "diversity/gained_mode_mass",
        "diversity/eval_seconds",
    }
    assert 1.0 < row["diversity/vendi_q1"] <= 10.0


def test_a_text_generator_is_evaluated_with_a_string_embedder_and_loses_diversity():
    texts = []

    def sample(module: TextGenerator, prompts: list[str], generators: list) -> list[str]:
        texts.append(module.generate(prompts, generators))
        return texts[-1]

    callback = fit_with(
        TextGenerator(),
        text_data(),
        prompts=["story", "poem"],
        samples_per_condition=6,
        embedder=LetterEmbedder(),
        value_range=None,
        sample_fn=sample,
        every_n_train_steps=1,
    )
    assert all(isinstance(t, str) and t.startswith(("story: ", "poem: ")) for t in texts[0])
    first, last = callback.history[0], callback.history[-1]
    assert {"diversity/per_prompt_vendi_q1", "diversity/sce"} <= first.keys()
    # trained toward one text, the model draws fewer distinct ones
    assert last["diversity/per_prompt_vendi_q1"] < first["diversity/per_prompt_vendi_q1"]
    assert last["diversity/vendi_q1"] < first["diversity/vendi_q1"]


def test_unconditional_samples_per_condition_does_not_apply():
    evaluation_set = EvaluationSet.from_arguments(num_samples=5, samples_per_condition=3)
    assert evaluation_set.num_samples == 5 and evaluation_set.conditions_for([0, 1], "cpu") is None


def test_an_evaluation_set_hashes_its_conditions_once(monkeypatch: pytest.MonkeyPatch):
    """The callback's state key holds the digest and Lightning reads it several times a step:
    hashing 10,000 prompts each time cost 0.66 ms a read."""
    from diversity_callbacks.evaluation import conditions

    calls = []
    sha1 = conditions.hashlib.sha1
    monkeypatch.setattr(conditions.hashlib, "sha1", lambda data: calls.append(1) or sha1(data))
    evaluation_set = EvaluationSet.from_arguments(prompts=["a", "b"], samples_per_condition=2)
    assert {evaluation_set.digest() for _ in range(6)} == {"fcd127ffa101"}
    assert len(calls) == 1


# ---------------------------------------------------------------- metrics as plug-ins


def test_a_custom_metric_reaches_the_loggers_without_editing_the_package(tmp_path: Path):
    logger = CSVLogger(tmp_path, name="", version="run")
    callback = DiversityCallback(
        PROMPTS,
        3,
        embedder=PixelEmbedder(),
        every_n_train_steps=2,
        metrics={"mean_norm": MeanNorm(), "linear_vendi": VendiScore(q=[1, 2], kernel="linear")},
    )
    trainer = L.Trainer(**{**QUIET, "logger": logger}, max_steps=4, callbacks=[callback])
    trainer.fit(TinyGenerator(), tiny_data())
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("diversity/mean_norm")]
    # the baseline, then after the batches that made global_step 2 and 4 (self.log steps 1, 3)
    assert [int(row["step"]) for row in rows] == [0, 1, 3]
    for row, expected in zip(rows, callback.history, strict=True):
        for key in ("mean_norm", "linear_vendi_q1", "linear_vendi_q2"):
            assert float(row[f"diversity/{key}"]) == pytest.approx(expected[f"diversity/{key}"])
    assert rows[0]["diversity/linear_vendi_q1"] != rows[0]["diversity/vendi_q1"]


def test_a_metric_taking_condition_embeddings_gets_each_samples_prompt_embedding():
    module = frozen_generator()
    plugged = EvaluationMetric(
        SchurComplementEntropy(kernel="linear", compute_image_vendi=False),
        inputs=("embeddings", "condition_embeddings"),
    )
    result = evaluator(metrics={"my_sce": plugged}, sce_kwargs={"kernel": "linear"}).evaluate(
        module.generate, module=module, progress=False
    )
    assert result.scalars["diversity/my_sce_sce"] == pytest.approx(
        result.scalars["diversity/sce"], rel=1e-12
    )


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ({"vendi": MeanNorm()}, ValueError, "`metrics` name 'vendi' is taken"),
        ({"vendi_q1": MeanNorm()}, ValueError, "`metrics` name 'vendi_q1' is taken"),
        ({"eval_seconds": MeanNorm()}, ValueError, "`metrics` name 'eval_seconds' is taken"),
        ({"sce_text": MeanNorm()}, ValueError, "`metrics` name 'sce_text' is taken"),
        ({"x": 3}, TypeError, r"`metrics\['x'\]` must be a torchmetrics Metric"),
    ],
)
def test_bad_plug_ins_are_refused(metrics: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        evaluator(metrics=metrics)


def test_a_plug_in_whose_dict_result_collides_is_refused_at_compute_naming_both():
    module = frozen_generator()
    clash = EvaluationMetric(MeanNorm())
    clash.metric.compute = lambda: {"vendi_q1": torch.tensor(123.0)}  # per_prompt_vendi_q1
    with pytest.raises(ValueError, match=r"metric 'per_prompt' logs 'per_prompt_vendi_q1'"):
        evaluator(metrics={"per_prompt": clash}).evaluate(module.generate, progress=False)
    timing = EvaluationMetric(MeanNorm())
    timing.metric.compute = lambda: {"seconds": torch.tensor(1.0)}
    with pytest.raises(ValueError, match=r"metric 'eval' logs 'eval_seconds'.*timing"):
        evaluator(metrics={"eval": timing}).evaluate(module.generate, progress=False)


def test_a_plug_in_taking_prompt_embeddings_needs_embed_texts_at_construction():
    class ImagesOnly:
        def embed_images(self, images: Tensor) -> Tensor:
            return PixelEmbedder().embed_images(images)

    plugged = EvaluationMetric(
        SchurComplementEntropy(kernel="linear"), inputs=("embeddings", "condition_embeddings")
    )
    with pytest.raises(ValueError, match=r"\['my_sce'\] take 'condition_embeddings'.*ImagesOnly"):
        evaluator(embedder=ImagesOnly(), metrics={"my_sce": plugged})


def test_a_plug_in_must_declare_known_inputs_and_compute_scalars():
    with pytest.raises(ValueError, match=r"`inputs` must be a non-empty sequence of"):
        EvaluationMetric(MeanNorm(), inputs=("images",))
    module = frozen_generator()
    table = EvaluationMetric(MeanNorm())
    table.metric.compute = lambda: torch.zeros(3)  # a metric computing a vector
    with pytest.raises(EvaluationError, match=r"metric 'table'.*scalar.*shape \(3,\)"):
        evaluator(metrics={"table": table}).evaluate(module.generate, progress=False)


# ---------------------------------------------------------------- what the embedder returns


def test_an_embedder_returning_too_few_rows_is_reported_as_the_embedders_fault():
    class Short(PixelEmbedder):
        def embed_images(self, images: Tensor) -> Tensor:
            return super().embed_images(images)[:1]

    module = frozen_generator()
    with pytest.raises(
        EvaluationError, match=r"embedder.embed_images must return .* \(5, D\), got shape \(1, 48\)"
    ):
        evaluator(embedder=Short()).evaluate(module.generate, progress=False)


def test_a_text_embedder_returning_too_few_rows_is_reported():
    class Short(PixelEmbedder):
        def embed_texts(self, prompts: list[str]) -> Tensor:
            return super().embed_texts(prompts)[:1]

    module = frozen_generator()
    with pytest.raises(EvaluationError, match=r"embedder.embed_texts must return .* \(2, D\)"):
        evaluator(embedder=Short(), batch_size=8).evaluate(module.generate, progress=False)


def test_one_sample_per_condition_logs_no_per_condition_score():
    scalars = (
        evaluator(samples_per_condition=1, metrics=None)
        .evaluate(frozen_generator().generate, progress=False)
        .scalars
    )
    assert not any("per_prompt" in key or "per_class" in key for key in scalars)


def test_the_0_1_conditional_option_still_works_with_a_warning_naming_per_condition():
    with pytest.warns(FutureWarning, match="`conditional` is now `per_condition`"):
        off = evaluator(conditional=False)
    assert "per_prompt_vendi" not in off.metrics and "per_prompt_vendi" in evaluator().metrics
    with pytest.raises(TypeError, match="unexpected keyword argument 'conditionl'"):
        evaluator(conditionl=False)


# ---------------------------------------------------------------- one evaluation at a time


def test_a_second_evaluation_while_one_runs_is_refused_naming_the_evaluator():
    import threading

    module, shared = frozen_generator(), evaluator(metrics=None, quality=None)
    started, release = threading.Event(), threading.Event()

    def waiting(prompts: list[str], generators: list) -> Tensor:
        started.set()
        release.wait(timeout=30)
        return module.generate(prompts, generators)

    first = threading.Thread(target=lambda: shared.evaluate(waiting, progress=False))
    first.start()
    try:
        assert started.wait(timeout=30)
        with pytest.raises(RuntimeError, match=r"DiversityEvaluator \(prefix 'diversity'.*already"):
            shared.evaluate(module.generate, progress=False)
        with pytest.raises(RuntimeError, match="already evaluating"):
            evaluate_existing(shared, [], progress=False)
    finally:
        release.set()
        first.join(timeout=60)
    alone = shared.evaluate(module.generate, progress=False).scalars  # free again afterwards
    expected = (
        evaluator(metrics=None, quality=None).evaluate(module.generate, progress=False).scalars
    )
    assert values(alone) == pytest.approx(values(expected), rel=1e-12)


# ---------------------------------------------------------------- evaluate_existing's batches


def existing_evaluator() -> DiversityEvaluator:
    return DiversityEvaluator(
        ["a", "b"], 2, embedder=lambda s: s, value_range=None, vendi_kernel="linear", sce=False
    )


def test_a_none_batch_is_refused_naming_it_not_taken_as_the_end():
    batches = [(torch.eye(2), [0, 0]), None, (torch.eye(2), [1, 1])]
    with pytest.raises(EvaluationError, match=r"batch 1 \(after 2 samples\).*pair, got NoneType"):
        evaluate_existing(existing_evaluator(), batches, progress=False)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ((torch.eye(2).to_sparse(), [0, 1]), r"`samples` must be a dense tensor, got .*sparse"),
        ((torch.eye(2), ["a", "b"]), r"`condition_ids` must hold integers, got str 'a' at pos"),
        ((torch.eye(2), [0, 2**70]), r"`condition_ids` must hold integers within int64, got 11"),
        ((torch.eye(2), [0, 1.0]), r"`condition_ids` must hold integers, got float 1.0 at pos"),
        ((torch.eye(2), torch.tensor([True, False])), r"`condition_ids` must hold integers, got a"),
        ((torch.eye(2), [0]), r"`condition_ids` must be 2 integers, one per sample, got shape"),
    ],
)
def test_bad_batches_are_refused_naming_the_argument_and_what_came(batch: tuple, match: str):
    with pytest.raises(EvaluationError, match=r"batch 0 \(after 0 samples\): \w+Error: " + match):
        evaluate_existing(existing_evaluator(), [batch], progress=False)


def test_an_empty_batch_is_skipped():
    batches = [(torch.zeros(0, 2), []), (torch.eye(2), [0, 1])]
    result = evaluate_existing(existing_evaluator(), batches, progress=False)
    assert result.num_samples == 2 and result.scalars["diversity/vendi_q1"] == pytest.approx(2.0)


# ---------------------------------------------------------------- alignment and quality


def test_the_per_prompt_clip_scores_reach_the_table():
    module = frozen_generator()
    result = evaluator(metrics=None, quality=None).evaluate(module.generate, progress=False)
    table = result.per_condition["clip_score"]
    assert table.shape == (len(PROMPTS),)
    assert float(table.mean()) == pytest.approx(result.scalars["diversity/clip_score"], rel=1e-9)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"class_labels": [0, 1], "embedder": PixelEmbedder()}, "text prompts"),
        ({"prompts": PROMPTS, "embedder": len, "value_range": None}, "embedder with embed_texts"),
    ],
)
def test_clip_score_where_it_is_not_defined_is_refused(arguments: dict, match: str):
    with pytest.raises(ValueError, match=f"`clip_score=True` needs .*{match}"):
        DiversityEvaluator(clip_score=True, samples_per_condition=2, **arguments)


def test_clip_score_can_be_turned_off_and_is_off_without_prompts_of_one_space():
    class OtherSpace(PixelEmbedder):
        def embed_texts(self, prompts: list[str]) -> Tensor:
            return super().embed_texts(prompts)[:, :8]  # SCE takes any dimension

    module = frozen_generator()
    off = evaluator(clip_score=False, metrics=None).evaluate(module.generate, progress=False)
    assert "diversity/clip_score" not in off.scalars and "clip_score" not in off.per_condition
    with pytest.raises(EvaluationError, match="dimension 48 and prompt embeddings of 8; pass clip"):
        evaluator(embedder=OtherSpace(), metrics=None).evaluate(module.generate, progress=False)


def test_a_quality_of_the_embeddings_weights_the_vendi_scores():
    seen: list[Tensor] = []

    def norm(embeddings: Tensor) -> Tensor:
        seen.append(embeddings)
        return embeddings.norm(dim=1)

    module = frozen_generator()
    result = evaluator(quality=norm, quality_input="embeddings", metrics=None).evaluate(
        module.generate, progress=False
    )
    quality = float(torch.cat([rows.norm(dim=1) for rows in seen]).double().mean())
    scalars = result.scalars
    assert scalars["diversity/quality"] == pytest.approx(quality, rel=1e-12)
    for key in ("q1", "q2", "qinf"):
        expected = quality * scalars[f"diversity/vendi_{key}"]
        assert scalars[f"diversity/qvendi_{key}"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("quality", "match"),
    [
        (lambda images: images.mean(), r"`quality` must be a floating tensor of shape \(5,\)"),
        (lambda images: [0.5] * len(images), "`quality` must be a torch.Tensor"),
        (lambda images: torch.full((len(images),), float("inf")), "`quality` must be finite"),
    ],
)
def test_a_quality_scorer_returning_other_than_one_finite_float_per_sample_fails(quality, match):
    module = frozen_generator()
    with pytest.raises(EvaluationError, match=match):
        evaluator(quality=quality, metrics=None).evaluate(module.generate, progress=False)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"quality": 0.5}, TypeError, "`quality` must be a callable"),
        ({"quality": brightness, "quality_input": "images"}, ValueError, "`quality_input` must"),
        ({"metrics": {"qvendi": MeanNorm()}}, ValueError, "'qvendi' is taken"),
    ],
)
def test_bad_quality_options_are_refused_at_construction(options: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        evaluator(**options)


class _SeenSamples(EvaluationMetric):
    """A plug-in that records the ``samples`` field of every batch it is given."""

    def __init__(self, inputs: tuple[str, ...]) -> None:
        super().__init__(MeanNorm(), inputs=inputs)
        self.seen: list[Any] = []

    def update(self, batch: Any) -> None:
        self.seen.append(batch.samples)
        self.metric.update(batch.embeddings)


def test_the_samples_are_handed_over_only_when_a_metric_asks_for_them():
    module = frozen_generator()
    for inputs, handed in ((("embeddings",), False), (("embeddings", "samples"), True)):
        plugin = _SeenSamples(inputs)
        evaluator(metrics={"seen": plugin}, quality=None).evaluate(module.generate, progress=False)
        assert all((samples is not None) == handed for samples in plugin.seen), inputs


def test_a_metric_of_the_samples_is_a_plug_in_and_evaluate_existing_refuses_it():
    class Brightness(MeanNorm):
        def update(self, images: Tensor) -> None:
            super().update(images.flatten(1))

    plugin = EvaluationMetric(Brightness(), inputs=("samples",))
    module = frozen_generator()
    scorer = evaluator(metrics={"pixel_norm": plugin}, quality=None)
    result = scorer.evaluate(module.generate, progress=False)
    assert result.scalars["diversity/pixel_norm"] > 0
    with pytest.raises(ValueError, match=r"metric\(s\) \['pixel_norm'\] take the 'samples' input"):
        evaluate_existing(scorer, [(torch.zeros(2, 3, 8, 8), [0, 1])], progress=False)
    with pytest.raises(ValueError, match=r"\['qvendi'\] take the 'samples' input"):
        evaluate_existing(evaluator(metrics=None), [], progress=False)


def test_a_prompts_file_that_is_not_utf8_is_named_with_the_offending_byte(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red apple\nun caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"prompts\.txt' must be UTF-8 text, got a byte 0xe9"):
        DiversityEvaluator(path, embedder=PixelEmbedder())


def test_eval_mode_restores_each_submodule_mode_also_on_error():
    module = TinyGenerator().train()
    module.net[2].eval()  # a frozen dropout must stay in eval mode afterwards
    with pytest.raises(KeyError), eval_mode(module):
        assert not any(m.training for m in module.modules())
        raise KeyError("boom")
    assert module.training and module.net[0].training and not module.net[2].training
