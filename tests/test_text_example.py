"""The language-model example (examples/text_collapse.py): a reduced run end to end, its reward."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "text_collapse.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("text_collapse", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def test_the_reward_counts_the_favoured_phrasings_leading_characters():
    favoured = example.FAVOURED
    rewards = example.reward([favoured, favoured[:4] + "x", "", "no"])
    assert rewards.tolist() == [1.0, 4 / len(favoured), 0.0, 0.0]


@pytest.mark.slow  # a whole (short) training run
def test_a_reduced_run_writes_its_history_and_plot(tmp_path: Path):
    threads = torch.get_num_threads()
    args = ["--pretrain-steps", "10", "--finetune-steps", "10", "--eval-every", "10"]
    args += ["--samples-per-prompt", "2", "--rollouts", "2", "--corpus-size", "128"]
    try:
        summary = example.main([*args, "--threads", "1", "--output-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    history = summary["history"]
    assert [row["global_step"] for row in history] == [0, 10, 20]
    for row in history:
        assert set(row) == {"global_step", *example.KEYS}
        assert 1.0 <= row["diversity/vendi_q1"] <= 12.0
        assert 0.0 <= row["diversity/quality"] <= 1.0
    assert (tmp_path / "text_collapse.png").stat().st_size > 10_000
