"""DiversityCallback with a WandbLogger in offline mode: read the run file back and check it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from diversity_callbacks import DiversityCallback
from tests.helpers.trainer import PROMPTS, PixelEmbedder, TinyGenerator, history_rows, tiny_data

wandb = pytest.importorskip("wandb")
Image = pytest.importorskip("PIL.Image")


def test_offline_run_holds_scalars_at_their_steps_and_non_black_sample_grids(tmp_path: Path):
    callback = DiversityCallback(
        PROMPTS,
        samples_per_condition=4,
        every_n_train_steps=2,
        embedder=PixelEmbedder(),
        spectrum=True,
        max_thumbnail_conditions=2,
    )
    logger = L.pytorch.loggers.WandbLogger(save_dir=tmp_path, offline=True, project="tests")
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        log_every_n_steps=1,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(TinyGenerator(), tiny_data())
    wandb.finish()
    wandb.teardown()  # flushes the run file

    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = [row for row in history_rows(run_dir) if "diversity/vendi_q1" in row]
    # one history row per evaluation, at trainer/global_step, scalars and media together
    # the baseline, then after the batches that made global_step 2 and 4 (self.log steps 1, 3)
    assert [row["trainer/global_step"] for row in rows] == [0, 1, 3]
    for row, expected in zip(rows, callback.history, strict=True):
        for key in (
            "vendi_q1",
            "vendi_q2",
            "per_prompt_vendi_q1",
            "sce",
            "sce_text",
            "clip_score",
        ):
            assert row[f"diversity/{key}"] == pytest.approx(expected[f"diversity/{key}"], rel=1e-12)
        assert row["diversity/eval_seconds"] > 0
        assert row["diversity/samples/captions"] == [f"prompt: {p}" for p in PROMPTS[:2]]
        assert row["diversity/table/nrows"] == len(PROMPTS)
        assert row["diversity/spectrum/_type"] == "image-file"
        grids = [run_dir / "files" / name for name in row["diversity/samples/filenames"]]
        for grid in grids:
            pixels = np.asarray(Image.open(grid))
            # 4 samples of 8 x 8 in a row with 2-pixel borders, not black
            assert pixels.dtype == np.uint8 and pixels.shape == (12, 42, 3)
            assert pixels.max() > 50
    table = json.loads((run_dir / "files" / rows[-1]["diversity/table/path"]).read_text())
    assert table["columns"] == ["prompt", "samples", "vendi_q1", "vendi_q2", "clip_score"]
    assert [r[0] for r in table["data"]] == PROMPTS
    # the per-prompt column is what per_prompt_vendi_q1 averages, and it tells prompts apart
    per_prompt = [r[2] for r in table["data"]]
    mean = callback.history[-1]["diversity/per_prompt_vendi_q1"]
    assert sum(per_prompt) / len(per_prompt) == pytest.approx(mean, rel=1e-9)
    assert len(set(per_prompt)) == len(PROMPTS)
