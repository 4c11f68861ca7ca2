"""The diversity callback in language-model fine-tuning loops: Lightning's and the Hugging Face
Trainer's (same values, its loggers, resume from its checkpoints, torchrun with 2 gloo ranks)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

from diversity_callbacks import DiversityCallback, TransformersSampler
from tests.helpers.hf_models import evaluator_options, hf_trainer
from tests.helpers.text import LanguageModule, char_tokenizer, repeated_text_data, tiny_gpt2
from tests.helpers.trainer import QUIET

REPO = Path(__file__).resolve().parents[2]


def scores(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if k.startswith("diversity/") and "seconds" not in k}


def lightning_history(folder: Path, max_steps: int = 4) -> list[dict]:
    tokenizer = char_tokenizer(folder / "tokenizer")
    callback = DiversityCallback(
        sample_fn=TransformersSampler("model", tokenizer, max_new_tokens=16),
        every_n_train_steps=2,
        log_images=False,
        **evaluator_options(folder),
    )
    trainer = L.Trainer(**QUIET, max_steps=max_steps, callbacks=[callback])
    trainer.fit(LanguageModule(tiny_gpt2()), repeated_text_data(tokenizer, "the cat sat.", 32))
    return callback.history


@pytest.mark.slow  # two fine-tuning runs
def test_the_trainer_adapter_logs_what_the_lightning_callback_logs(tmp_path: Path):
    lightning = lightning_history(tmp_path)
    trainer, callback = hf_trainer(tmp_path, report_to=["tensorboard"])
    assert [row["global_step"] for row in lightning] == [0, 2, 4]
    assert [row["step"] for row in callback.history] == [0, 2, 4]
    # the same model and seeds before training: the same values
    start, baseline = scores(callback.history[0]), scores(lightning[0])
    assert start.keys() == baseline.keys()
    assert {"diversity/distinct_2", "diversity/self_bleu", "diversity/sce"} <= start.keys()
    for key, value in baseline.items():
        assert math.isclose(start[key], value, rel_tol=1e-9, abs_tol=1e-12), key
    # the completions follow the training, in both loops
    for history in (lightning, callback.history):
        assert history[-1]["diversity/distinct_1"] != history[0]["diversity/distinct_1"]
    # through Trainer.log: in log_history and in the report_to loggers
    logged = [row for row in trainer.state.log_history if "diversity/vendi_q1" in row]
    assert [row["step"] for row in logged] == [0, 2, 4]
    # the trainer's own loss rows survive our logging at the same steps
    assert [row["step"] for row in trainer.state.log_history if "loss" in row] == [2, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (tmp_path / "out").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    written = accumulator.Scalars("train/diversity/vendi_q1")
    assert [event.step for event in written] == [0, 2, 4]
    assert written[0].value == pytest.approx(start["diversity/vendi_q1"], rel=1e-6)


@pytest.mark.slow  # a fine-tuning run and its resumption
def test_a_resumed_trainer_gets_its_history_back_from_the_checkpoint(tmp_path: Path):
    _, first = hf_trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert checkpoint.is_dir()
    _, resumed = hf_trainer(
        tmp_path, max_steps=4, resume=str(checkpoint), save_strategy="steps", save_steps=2
    )
    # no baseline at the resume step; the rows before it come from trainer_state.json
    assert [row["step"] for row in resumed.history] == [0, 2, 4]
    for before, after in zip(first.history[:2], resumed.history[:2], strict=True):
        assert scores(after) == pytest.approx(scores(before), rel=1e-12)


@pytest.mark.slow  # torchrun with two processes
@pytest.mark.timeout(400)
def test_the_trainer_adapter_runs_under_torchrun_with_two_gloo_ranks(tmp_path: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            str(REPO / "tests/scripts/train_hf.py"),
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # every rank holds the same, gathered values (its own timing aside)
    assert [scores(row) for row in ranks[0]] == [scores(row) for row in ranks[1]]
    assert [row["step"] for row in ranks[0]] == [0, 2, 4]
    # before training, 2 ranks score what one process scores
    single = lightning_history(tmp_path / "single", max_steps=1)[0]
    for key, value in scores(single).items():
        assert math.isclose(ranks[0][0][key], value, rel_tol=1e-9), key


def _free_port() -> int:
    from tests.helpers.distributed import free_port

    return free_port()


@pytest.mark.slow  # a Lightning and a Trainer fine-tuning run
def test_the_text_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import diversity_callbacks.embedders.sentence as sentence
    from tests.helpers.docs import run_blocks
    from tests.helpers.hf_models import Sentences
    from tests.helpers.text import PROMPTS, tiny_sentence_transformer

    folder = tiny_sentence_transformer(tmp_path / "st")
    real = sentence.SentenceEmbedder
    # the page names a hub model: the tiny random one stands in for it, offline
    monkeypatch.setattr(sentence, "SentenceEmbedder", lambda name, **options: real(folder))
    monkeypatch.chdir(tmp_path)
    tokenizer = char_tokenizer(tmp_path / "tokenizer")
    namespace = {
        "prompts": PROMPTS,
        "tokenizer": tokenizer,
        "module": LanguageModule(tiny_gpt2()),
        "train_loader": repeated_text_data(tokenizer),
        "lm": tiny_gpt2(),
        "train_dataset": Sentences(tokenizer),
    }
    run_blocks("docs/text.md", namespace, monkeypatch)
    assert [row["global_step"] for row in namespace["diversity"].history] == [0, 2, 4]
    logged = [r for r in namespace["trainer"].state.log_history if "diversity/self_bleu" in r]
    assert [row["step"] for row in logged] == [0, 1, 2]
    assert list((tmp_path / "out").rglob("events.out.tfevents.*"))
