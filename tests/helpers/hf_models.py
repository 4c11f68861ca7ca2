"""A Hugging Face Trainer fine-tuning the tiny GPT-2 on one repeated sentence, with the diversity
callback; also run as a script under torchrun (see tests/scripts/train_hf.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diversity_callbacks import SentenceEmbedder, TransformersSampler, lexical_metrics
from diversity_callbacks.integrations.hf import DiversityTrainerCallback
from tests.helpers.text import PROMPTS, char_tokenizer, tiny_gpt2, tiny_sentence_transformer

SENTENCE = "the cat sat."


class Sentences(torch.utils.data.Dataset):
    def __init__(self, tokenizer, num: int = 32) -> None:
        self.ids = torch.tensor(tokenizer(SENTENCE)["input_ids"])
        self.num = num

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids, "labels": self.ids}


def evaluator_options(folder: Path) -> dict[str, Any]:
    """What the Lightning and the Trainer runs share: prompts, embedder, plug-ins."""
    embedder = folder / "st"
    if not embedder.exists():
        tiny_sentence_transformer(embedder)
    return {
        "prompts": PROMPTS,
        "samples_per_condition": 3,
        "batch_size": 4,
        "embedder": SentenceEmbedder(embedder / "st"),
        "metrics": lexical_metrics(tokenizer=list),
    }


def hf_trainer(
    folder: Path, max_steps: int = 4, every: int = 2, resume: str | None = None, **arguments
) -> tuple[Any, DiversityTrainerCallback]:
    from transformers import Trainer, TrainingArguments

    # Files first: once TrainingArguments set up torch.distributed, save_pretrained writes
    # nothing on ranks other than 0.
    tokenizer = char_tokenizer(folder / "tokenizer")
    shared = evaluator_options(folder)
    options = {
        "output_dir": str(folder / "out"),
        "max_steps": max_steps,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "logging_steps": every,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    args = TrainingArguments(**{**options, **arguments})
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=Sentences(tokenizer))
    callback = DiversityTrainerCallback(
        trainer,
        sample_fn=TransformersSampler(None, tokenizer, max_new_tokens=16),
        **shared,
    )
    trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback
