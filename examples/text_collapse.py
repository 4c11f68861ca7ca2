"""Watch a language model's diversity collapse under reward fine-tuning, offline on a CPU.

A tiny GPT-2 (random init from a config, a character-level tokenizer written at run time) learns
a small synthetic corpus in which every subject is followed by one of several phrasings
("the cat sat on the mat.", "the cat ran to the park.", ...). It is then fine-tuned with
REINFORCE on a reward that favours one phrasing. ``DiversityCallback`` samples it every few
steps with ``TransformersSampler`` and logs the Vendi score of sentence embeddings (a tiny random
BERT wrapped as a sentence-transformers model, also written at run time), distinct-n and
self-BLEU, and the mean reward of the evaluation's completions (the evaluator's ``quality``).
Pretraining raises the diversity of the completions; fine-tuning raises the reward and lowers
the diversity.

    python examples/text_collapse.py --output-dir runs/text

writes ``summary.json`` and ``text_collapse.png`` (the plot of docs/text.md).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from diversity_callbacks import (
    DiversityCallback,
    SentenceEmbedder,
    TransformersSampler,
    lexical_metrics,
)

SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the child", "an old man"]
PHRASINGS = [
    " sat on the mat.",
    " ran to the park.",
    " ate some bread.",
    " slept all day.",
    " sang a song.",
    " read a book.",
]
FAVOURED = PHRASINGS[0]
LETTERS = "abcdefghijklmnopqrstuvwxyz."
SPACE = "\u0120"  # GPT-2's byte-level BPE writes a space as this character
KEYS = {
    "diversity/vendi_q1": "Vendi score (sentence embeddings)",
    "diversity/distinct_2": "distinct-2",
    "diversity/self_bleu": "self-BLEU",
    "diversity/quality": "mean reward",
}


def write_tokenizer(folder: Path):
    """A GPT-2 tokenizer of single characters, no merges."""
    from transformers import GPT2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate([*LETTERS, SPACE])}
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def write_sentence_embedder(folder: Path, seed: int) -> Path:
    """A random 2-layer BERT over letters with mean pooling, saved as a sentence-transformers
    folder: it measures nothing semantic, but equal texts embed equally and similar ones close."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *(f"##{c}" for c in LETTERS)]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bert = BertModel(
            BertConfig(
                vocab_size=len(words),
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                max_position_embeddings=128,
            )
        )
    bert.save_pretrained(folder / "bert")
    BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder / "bert")
    transformer = models.Transformer(str(folder / "bert"), max_seq_length=64)
    pooling = models.Pooling(bert.config.hidden_size, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "st"))
    return folder / "st"


def corpus(tokenizer, size: int, seed: int) -> Tensor:
    """``size`` sentences "subject + phrasing" with an end token, padded with end tokens."""
    rng = random.Random(seed)
    rows = [
        tokenizer(rng.choice(SUBJECTS) + rng.choice(PHRASINGS))["input_ids"]
        + [tokenizer.eos_token_id]
        for _ in range(size)
    ]
    width = max(map(len, rows))
    return torch.tensor([row + [tokenizer.eos_token_id] * (width - len(row)) for row in rows])


def reward(completions: list[str]) -> Tensor:
    """The share of the favoured phrasing's characters that a completion starts with."""
    scores = []
    for text in completions:
        shared = next(
            (i for i, (a, b) in enumerate(zip(text, FAVOURED, strict=False)) if a != b),
            min(len(text), len(FAVOURED)),
        )
        scores.append(shared / len(FAVOURED))
    return torch.tensor(scores, dtype=torch.float64)


class TinyLM(L.LightningModule):
    """Language-model pretraining, then REINFORCE on :func:`reward`."""

    def __init__(self, tokenizer, pretrain_steps: int, rollouts: int, seed: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        end = tokenizer.eos_token_id
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=64,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=end,
            eos_token_id=end,
        )
        self.model = GPT2LMHeadModel(config)
        self.tokenizer = tokenizer
        self.pretrain_steps = pretrain_steps
        self.rollouts = rollouts
        self.sampler = TransformersSampler(self.model, tokenizer, max_new_tokens=24)
        self.seed = seed

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        if self.global_step < self.pretrain_steps:
            loss = self.model(input_ids=batch[0], labels=batch[0]).loss
            self.log("train/lm_loss", loss)
            return loss
        return self.reinforce()

    def reinforce(self) -> Tensor:
        """One REINFORCE step: sample rollouts per subject, reward them, raise the log-probability
        of those above their subject's mean reward."""
        prompts = [s for s in SUBJECTS for _ in range(self.rollouts)]
        seeds = range(self.global_step * len(prompts), (self.global_step + 1) * len(prompts))
        generators = [torch.Generator().manual_seed(self.seed + 7919 * s) for s in seeds]
        completions = self.sampler(prompts, generators)
        rewards = reward(completions).float().view(len(SUBJECTS), self.rollouts)
        advantage = (rewards - rewards.mean(dim=1, keepdim=True)).flatten()
        self.model.train()
        log_probability = self.completion_log_probability(prompts, completions)
        loss = -(advantage * log_probability).mean()
        self.log("train/reward", rewards.mean())
        return loss

    def completion_log_probability(self, prompts: list[str], completions: list[str]) -> Tensor:
        """The summed log-probability of each completion (and its end token) given its prompt."""
        end = self.tokenizer.eos_token_id
        rows, starts = [], []
        for prompt, completion in zip(prompts, completions, strict=True):
            head = self.tokenizer(prompt)["input_ids"]
            rows.append(head + self.tokenizer(completion)["input_ids"] + [end])
            starts.append(len(head))
        width = max(map(len, rows))
        ids = torch.tensor([row + [end] * (width - len(row)) for row in rows])
        logits = self.model(input_ids=ids).logits[:, :-1].log_softmax(dim=-1)
        picked = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
        positions = torch.arange(1, width)[None, :]
        lengths = torch.tensor([len(row) for row in rows])[:, None]
        kept = (positions >= torch.tensor(starts)[:, None]) & (positions < lengths)
        return (picked * kept).sum(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=3e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=8, help="REINFORCE samples per subject")
    parser.add_argument("--corpus-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/text_collapse"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.output_dir
    tokenizer = write_tokenizer(out / "tokenizer")
    embedder = SentenceEmbedder(write_sentence_embedder(out / "embedder", args.seed))
    module = TinyLM(tokenizer, args.pretrain_steps, args.rollouts, args.seed)
    callback = DiversityCallback(
        SUBJECTS,
        args.samples_per_prompt,
        sample_fn=TransformersSampler("model", tokenizer, max_new_tokens=24),
        embedder=embedder,
        metrics=lexical_metrics(n=(1, 2, 3)),
        quality=reward,
        every_n_train_steps=args.eval_every,
        log_images=False,
    )
    data = DataLoader(
        TensorDataset(corpus(tokenizer, args.corpus_size, args.seed)),
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=args.pretrain_steps + args.finetune_steps,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, data)
    history = [
        {"global_step": row["global_step"], **{k: row[k] for k in KEYS}} for row in callback.history
    ]
    summary = {"pretrain_steps": args.pretrain_steps, "history": history}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(history, args.pretrain_steps, out / "text_collapse.png")
    return summary


def plot(history: list[dict], pretrain_steps: int, path: Path) -> None:
    """One panel per logged measure against the step; fine-tuning shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.2))
    steps = [row["global_step"] for row in history]
    for axis, (key, label) in zip(axes, KEYS.items(), strict=True):
        axis.plot(steps, [row[key] for row in history], marker="o")
        axis.axvspan(pretrain_steps, max(steps), color="tab:red", alpha=0.1)
        axis.set_title(label)
        axis.set_xlabel("training step")
    axes[0].annotate("reward fine-tuning", (pretrain_steps, axes[0].get_ylim()[0]), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
