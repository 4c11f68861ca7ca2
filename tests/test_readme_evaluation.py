"""The README's sections on DiversityEvaluator and DiversityCallback run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.lightning_helpers import PROMPTS, PixelEmbedder, TinyGenerator, tiny_data
from tests.readme import python_blocks


def test_every_evaluator_snippet_runs_and_gives_what_it_prints():
    namespace: dict = {}
    blocks = python_blocks("Evaluating a generator: DiversityEvaluator")
    assert len(blocks) == 5
    for block in blocks:
        exec(block, namespace)
    result, scalars = namespace["result"], namespace["scalars"]
    prompted = namespace["sample_prompts"](["a blue plum"], [torch.Generator().manual_seed(0)])
    assert prompted.shape == (1, 3, 16, 16)
    assert set(result.per_condition) == {"vendi_q1", "vendi_q2"}
    assert result.per_condition["vendi_q1"].shape == (2,)
    assert 1.0 < scalars["diversity/class_conditional_vendi_q1"] <= 16.0
    assert {"diversity/linear_vendi_q2", "diversity/calinski_harabasz"} <= scalars.keys()
    texts = namespace["generate_text"](["a poem"], [torch.Generator().manual_seed(0)])
    assert texts[0].startswith("a poem: ") and len(texts[0]) == len("a poem: ") + 12


def test_the_callback_snippet_runs_on_epochs_shorter_than_any_cadence(monkeypatch, tmp_path):
    # The snippet's default embedder is CLIP with downloaded weights; tests stay offline.
    monkeypatch.setattr("diversity_callbacks.embedders.clip.CLIPEmbedder", PixelEmbedder)
    monkeypatch.chdir(tmp_path)
    namespace = {
        "prompts": PROMPTS,
        "model": TinyGenerator(),
        "train_loader": tiny_data(),  # 8 steps per epoch
        "val_loader": tiny_data(shuffle=False),
    }
    (block,) = python_blocks("DiversityCallback")
    with pytest.warns(UserWarning, match="log_every_n_steps"):
        exec(block, namespace)
    diversity, trainer = namespace["diversity"], namespace["trainer"]
    # the baseline, then one evaluation per validation: each EarlyStopping check saw a fresh value
    assert [row["step"] for row in diversity.history] == [0, 8, 16, 24]
    assert (
        trainer.callback_metrics["diversity/vendi_q1"]
        == diversity.history[-1]["diversity/vendi_q1"]
    )
    (checkpoint,) = Path(trainer.checkpoint_callback.dirpath).iterdir()  # no "diversity/" folder
    assert re.fullmatch(r"step\d+-vendi\d+\.\d\d\.ckpt", checkpoint.name)
