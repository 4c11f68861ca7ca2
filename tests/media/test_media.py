"""Media for every logger: one run with TensorBoard, MLflow, CSV and ``media_dir``, read back with
each tool's own reader; the rendering and the writer registry on their own."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from diversity_callbacks import DiversityCallback
from diversity_callbacks.media import WRITERS, Media, register_writer, wants_media
from diversity_callbacks.media.render import Table, png_bytes, slug
from tests.helpers.trainer import PROMPTS, PixelEmbedder, TinyGenerator, tiny_data

Image = pytest.importorskip("PIL.Image")

GRID_NAMES = ["00_a_red_square", "01_a_blue_circle", "02_a_green_line"]
GRID_SHAPE = (12, 42, 3)  # 4 samples of 8 x 8 in a row with 2-pixel borders


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short fit logging to TensorBoard, MLflow (local file store) and CSV, with media_dir."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("media")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow >= 3.7 wants a database
        mlflow_uri = f"file:{root / 'mlruns'}"
        mlflow = MLFlowLogger(experiment_name="tests", tracking_uri=mlflow_uri)
        tensorboard = TensorBoardLogger(root, name="tb", version=0)
        callback = DiversityCallback(
            PROMPTS,
            samples_per_condition=4,
            every_n_train_steps=2,
            embedder=PixelEmbedder(),
            spectrum=True,
            media_dir=root / "media",
        )
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=4,
            log_every_n_steps=1,
            logger=[tensorboard, mlflow, CSVLogger(root, name="csv", version=0)],
            callbacks=[callback],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
        )
        trainer.fit(TinyGenerator(), tiny_data())
        yield {
            "root": root,
            "callback": callback,
            "tensorboard": tensorboard,
            "mlflow": mlflow,
            "mlflow_uri": mlflow_uri,
        }


def evaluated_steps(run: dict[str, Any]) -> list[int]:
    """The steps the scalars were logged at, from the CSV log: every logger's media must match."""
    rows = list(csv.DictReader((run["root"] / "csv" / "version_0" / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r.get("diversity/vendi_q1")]
    assert len(steps) == len(run["callback"].history) >= 2
    return steps


def test_tensorboard_event_files_hold_grids_spectrum_table_and_scalars_at_evaluated_steps(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        run["tensorboard"].log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    )
    events.Reload()
    steps = evaluated_steps(run)
    tags = events.Tags()
    assert {f"diversity/samples/{name}" for name in GRID_NAMES} <= set(tags["images"])
    for name in GRID_NAMES:
        images = events.Images(f"diversity/samples/{name}")
        assert [image.step for image in images] == steps
        pixels = decode_png(images[-1].encoded_image_string)
        assert pixels.shape == GRID_SHAPE and pixels.max() > 50  # not black
    assert [image.step for image in events.Images("diversity/spectrum")] == steps
    scalars = events.Scalars("diversity/vendi_q1")
    assert [s.step for s in scalars] == steps
    expected = [row["diversity/vendi_q1"] for row in run["callback"].history]
    assert [s.value for s in scalars] == pytest.approx(expected, rel=1e-6)  # float32 in events
    assert "diversity/table/text_summary" in tags["tensors"]
    table = events.Tensors("diversity/table/text_summary")[-1]
    text = table.tensor_proto.string_val[0].decode()
    assert (
        text.startswith("| prompt | vendi_q1 | vendi_q2 | clip_score |")
        and "| a green line |" in text
    )


def test_mlflow_file_store_holds_metrics_and_media_artifacts_per_evaluated_step(run):
    from mlflow.tracking import MlflowClient

    logger: MLFlowLogger = run["mlflow"]
    client = MlflowClient(run["mlflow_uri"])
    steps = evaluated_steps(run)
    history = client.get_metric_history(logger.run_id, "diversity/vendi_q1")
    assert sorted(metric.step for metric in history) == steps
    last = max(history, key=lambda metric: metric.step)
    assert last.value == pytest.approx(run["callback"].history[-1]["diversity/vendi_q1"])
    for step in steps:
        folder = f"diversity/step_{step:06d}"
        listed = {a.path for a in client.list_artifacts(logger.run_id, folder)}
        expected = {"samples", "table.csv", "spectrum.png", "modes"}  # modes: one grid per mode
        assert listed == {f"{folder}/{name}" for name in expected}
        modes = {a.path for a in client.list_artifacts(logger.run_id, f"{folder}/modes")}
        assert f"{folder}/modes/mode_01.png" in modes and f"{folder}/modes/captions.txt" in modes
        grids = {a.path for a in client.list_artifacts(logger.run_id, f"{folder}/samples")}
        assert grids == {f"{folder}/samples/{name}.png" for name in GRID_NAMES}
    local = Path(client.download_artifacts(logger.run_id, f"diversity/step_{steps[-1]:06d}"))
    assert decode_png((local / "samples" / f"{GRID_NAMES[0]}.png").read_bytes()).shape == GRID_SHAPE
    assert (local / "table.csv").read_text().startswith("prompt,vendi_q1,vendi_q2,clip_score\n")


def test_media_dir_holds_png_grids_spectrum_and_a_per_condition_csv_per_step(run):
    callback = run["callback"]
    for step, row in zip(evaluated_steps(run), callback.history, strict=True):
        folder = run["root"] / "media" / f"step_{step:06d}"
        grids = sorted(path.name for path in (folder / "samples").iterdir())
        assert grids == [f"{name}.png" for name in GRID_NAMES]
        pixels = decode_png((folder / "samples" / grids[0]).read_bytes())
        assert pixels.shape == GRID_SHAPE and pixels.max() > 50
        assert decode_png((folder / "spectrum.png").read_bytes()).shape[2] == 3
        table = list(csv.DictReader((folder / "table.csv").open()))
        assert [r["prompt"] for r in table] == PROMPTS
        # the per-prompt column is what per_prompt_vendi_q1 averages
        mean = sum(float(r["vendi_q1"]) for r in table) / len(table)
        assert mean == pytest.approx(row["diversity/per_prompt_vendi_q1"], rel=1e-9)


def test_thumbnails_are_wanted_only_for_loggers_with_a_writer_or_a_media_dir(tmp_path: Path):
    csv_logger = CSVLogger(tmp_path)
    assert not wants_media([csv_logger], None)
    assert wants_media([csv_logger], tmp_path)
    assert wants_media([csv_logger, TensorBoardLogger(tmp_path)], None)


def test_a_registered_writer_receives_scalars_and_media_at_the_step(monkeypatch, tmp_path: Path):
    class RecordingLogger(CSVLogger):
        pass

    received: list[tuple[dict[str, float], Media, int]] = []

    def writer(logger: Logger, scalars: dict[str, float], media: Media, step: int) -> None:
        received.append((dict(scalars), media, step))

    monkeypatch.setattr("diversity_callbacks.media.loggers.WRITERS", dict(WRITERS))
    register_writer(RecordingLogger, writer)
    callback = DiversityCallback(
        PROMPTS, samples_per_condition=2, every_n_train_steps=2, embedder=PixelEmbedder()
    )
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=RecordingLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(TinyGenerator(), tiny_data())
    scalars, media, step = received[-1]
    assert step in (1, 2)  # the last batch's: the one self.log uses, or global_step
    assert scalars["diversity/vendi_q1"] == callback.history[-1]["diversity/vendi_q1"]
    assert [grid.caption for grid in media.grids] == [f"prompt: {p}" for p in PROMPTS]
    assert media.spectrum is None  # spectrum=False


def test_each_image_is_png_encoded_once_for_all_loggers_and_the_media_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """Encoding was most of the logging time: W&B and TensorBoard get the PNG bytes
    :mod:`~diversity_callbacks.media.render` made, Pillow encodes nothing again."""
    wandb = pytest.importorskip("wandb")
    from diversity_callbacks import DiversityEvaluator
    from diversity_callbacks.media import picture, publish, render

    evaluator = DiversityEvaluator(
        PROMPTS, 2, embedder=PixelEmbedder(), value_range="[0,1]", spectrum=True
    )
    result = evaluator.evaluate(
        lambda conditions, generators: torch.stack(
            [torch.rand(3, 8, 8, generator=g) for g in generators]
        ),
        thumbnails=True,
    )
    encoded = []
    png_bytes = picture.png_bytes
    for module in (picture, render):  # the pictures' encoder, and the spectrum's
        monkeypatch.setattr(
            module, "png_bytes", lambda image: encoded.append(1) or png_bytes(image)
        )

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an image was encoded again by Pillow")

    monkeypatch.setattr(Image.Image, "save", refuse)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    loggers = [
        L.pytorch.loggers.WandbLogger(save_dir=tmp_path, offline=True, project="tests"),
        TensorBoardLogger(tmp_path, name="tb"),
        MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}"),
    ]
    publish(loggers, evaluator, result, 0, media_dir=tmp_path / "media")
    wandb.finish()
    assert len(encoded) == len(PROMPTS) + 1  # one grid per prompt, and the spectrum
    assert len(list((tmp_path / "wandb").glob("offline-run-*/files/media/images/**/*.png"))) == 4


@pytest.mark.parametrize(
    ("logger_type", "writer", "message"),
    [
        (CSVLogger, "not callable", "`writer` must be callable"),
        (dict, lambda *args: None, "`logger_type` must be a Logger subclass"),
    ],
)
def test_register_writer_rejects_what_is_not_a_logger_class_or_a_callable(
    logger_type, writer, message
):
    with pytest.raises(TypeError, match=message):
        register_writer(logger_type, writer)


def test_png_encoding_round_trips_through_pil():
    image = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8).numpy()
    assert np.array_equal(decode_png(png_bytes(image)), image)


def test_table_csv_quotes_cells_a_spreadsheet_would_run_but_not_numbers():
    table = Table(["prompt", "vendi_q1"], [["=cmd|' /C calc'!A0", 1.5], ["-1.5", -2.0]])
    table = Table(table.columns, [*table.rows, ["@SUM(A1)", 1.0], ["\tx", 1.0], ["+1+1", 1.0]])
    rows = list(csv.reader(io.StringIO(table.csv())))
    assert [row[0] for row in rows[1:]] == [
        "'=cmd|' /C calc'!A0",
        "-1.5",
        "'@SUM(A1)",
        "'\tx",
        "'+1+1",
    ]
    assert rows[2][1] == "-2.0"


def test_table_renders_as_csv_and_as_a_markdown_table_with_escaped_names():
    table = Table(["prompt", "vendi_q1"], [["a, b | c", 1.5], ["d", 2.0]])
    assert table.csv() == 'prompt,vendi_q1\n"a, b | c",1.5\nd,2.0\n'
    assert table.markdown().splitlines() == [
        "| prompt | vendi_q1 |",
        "| --- | --- |",
        "| a, b \\| c | 1.5 |",
        "| d | 2 |",
    ]


def test_condition_names_become_file_and_tag_safe_slugs():
    assert slug("A photo of a cat / dog, 4k") == "a_photo_of_a_cat_dog_4k"
    assert slug("!!!") == "condition"
    assert len(slug("word " * 40)) == 48
