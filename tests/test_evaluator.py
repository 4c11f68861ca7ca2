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
)
from diversity_callbacks.evaluation import EvaluationSet, sample_seed
from diversity_callbacks.functional import per_condition_vendi_score, vendi_score
from tests.distributed import run_distributed
from tests.lightning_helpers import (
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


def evaluator(**kwargs: Any) -> DiversityEvaluator:
    options = {
        "samples_per_condition": 4,
        "batch_size": 5,
        "embedder": PixelEmbedder(),
        "vendi_orders": (1, 2, "inf"),
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


def test_the_callback_gives_the_plain_loop_values(plain_loop_values):
    callback = DiversityCallback(
        evaluator=evaluator(), every_n_train_steps=2, evaluate_at_start=False
    )
    L.Trainer(**QUIET, max_steps=2, callbacks=[callback]).fit(frozen_generator(), tiny_data())
    (row,) = callback.history
    assert values({k: v for k, v in row.items() if k not in ("step", "epoch")}) == pytest.approx(
        plain_loop_values, rel=1e-9
    )


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


def test_an_unconditional_generator_gets_none_and_only_the_vendi_score():
    callback = fit_with(UnconditionalGenerator(), tiny_data(), num_samples=10)
    row = callback.history[0]
    assert {k for k in row if k.startswith("diversity/")} == {
        "diversity/vendi_q1",
        "diversity/vendi_q2",
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
        ({"x": 3}, TypeError, r"`metrics\['x'\]` must be a torchmetrics Metric"),
    ],
)
def test_bad_plug_ins_are_refused(metrics: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        evaluator(metrics=metrics)


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
