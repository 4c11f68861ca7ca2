"""The Hugging Face Trainer adapter inside TRL's ``DPOTrainer`` (offline, CPU, tiny GPT-2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")
pytest.importorskip("sentence_transformers")

from diversity_callbacks import TransformersSampler
from diversity_callbacks.integrations.hf import DiversityTrainerCallback
from tests.helpers.hf_models import evaluator_options
from tests.helpers.text import char_tokenizer, tiny_gpt2

TRIPLES = [
    ("the cat", " sat.", " ran!"),
    ("a dog is", " here.", " gone?"),
    ("hello", " there.", " you,"),
    ("the dog", " sat.", " hid."),
    ("a cat is", " calm.", " mad!"),
    ("hi", " friend.", " foe."),
    ("the sun", " rose.", " fell."),
    ("a bird", " sang.", " cried."),
]


def dpo_trainer(folder: Path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = char_tokenizer(folder / "tokenizer")
    tokenizer.pad_token = tokenizer.eos_token  # DPO pads its batches
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in TRIPLES]
    args = DPOConfig(
        output_dir=str(folder / "out"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return DPOTrainer(
        model=tiny_gpt2(),
        ref_model=tiny_gpt2(),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    ), tokenizer


@pytest.mark.slow  # a DPO run
@pytest.mark.timeout(180)
def test_the_trainer_adapter_logs_inside_trls_dpo_trainer(tmp_path: Path):
    trainer, tokenizer = dpo_trainer(tmp_path)
    trainer.add_callback(
        DiversityTrainerCallback(
            trainer,
            sample_fn=TransformersSampler(None, tokenizer, max_new_tokens=8),
            **evaluator_options(tmp_path),
        )
    )
    trainer.train()
    history = trainer.state.log_history
    ours = [row for row in history if "diversity/vendi_q1" in row]
    assert [row["step"] for row in ours] == [0, 2, 4]
    for row in ours:
        values = {k: v for k, v in row.items() if k.startswith("diversity/")}
        assert {"diversity/distinct_2", "diversity/self_bleu", "diversity/sce"} <= values.keys()
        assert all(math.isfinite(v) for v in values.values()), values
        # Trainer.log itself: TRL's running averages are not flushed into our rows
        assert not any(k.startswith("rewards/") or k == "loss" for k in row), row
    # TRL's own rows are still there, every logging step, with its DPO metrics
    dpo = [row for row in history if "loss" in row]
    assert [row["step"] for row in dpo] == [2, 4]
    assert all(math.isfinite(row["loss"]) and "rewards/margins" in row for row in dpo), dpo
