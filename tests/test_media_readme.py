"""The README's "Media and monitoring for every logger" snippet runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lightning_helpers import PROMPTS, PixelEmbedder, TinyGenerator, tiny_data
from tests.readme import python_blocks


def test_media_and_monitoring_snippet_runs_and_writes_media(monkeypatch, tmp_path: Path):
    pytest.importorskip("tensorboard")
    # The snippet's default embedder is CLIP with downloaded weights; tests stay offline.
    monkeypatch.setattr("diversity_callbacks.embedders.clip.CLIPEmbedder", PixelEmbedder)
    monkeypatch.chdir(tmp_path)
    namespace = {"prompts": PROMPTS, "model": TinyGenerator(), "train_loader": tiny_data()}
    exec(python_blocks("Media and monitoring for every logger")[0], namespace)

    trainer, collapse, diversity = (namespace[k] for k in ("trainer", "collapse", "diversity"))
    assert trainer.global_step == 100 and collapse.collapse_step is None  # healthy training
    folders = sorted((tmp_path / "diversity_media").iterdir())
    assert len(folders) == len(diversity.history) >= 2  # one per evaluation, every 50 steps
    for folder in folders:
        assert len(list((folder / "samples").iterdir())) == len(PROMPTS)
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "logs").rglob("metrics.csv"))
