"""Tiny language models built offline: a character-level GPT-2 tokenizer written at test time, a
random GPT-2 from a config, a random BERT sentence embedder saved to a folder, and a
LightningModule fine-tuning the GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

CHARACTERS = "abcdefghijklmnopqrstuvwxyz.,!?"
SPACE = "\u0120"  # GPT-2's byte-level BPE writes a space as this character
PROMPTS = ["the cat", "a dog is", "hello"]


def write_char_tokenizer(folder: Path) -> Path:
    """A GPT-2 vocabulary of single characters (and the space) with no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate([*CHARACTERS, SPACE])}
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def char_tokenizer(folder: Path):
    from transformers import GPT2Tokenizer

    folder = write_char_tokenizer(folder)
    return GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def tiny_gpt2(seed: int = 0, vocab_size: int = len(CHARACTERS) + 2, positions: int = 64):
    """A random 2-layer GPT-2, the same for a seed in every process; end of text is the last id."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_sentence_transformer(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer BERT with mean pooling saved as a SentenceTransformer folder."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    # single characters and their word-continuation pieces: every word splits into letters
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *CHARACTERS,
        *(f"##{c}" for c in CHARACTERS),
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"), tokenize_chinese_chars=False)
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=len(words),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    )
    bert.save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    transformer = models.Transformer(str(folder / "bert"), max_seq_length=96)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "st"))
    return folder / "st"


class LanguageModule(L.LightningModule):
    """Fine-tunes a causal LM held in ``self.model`` on fixed token sequences (teacher forcing)."""

    def __init__(self, model, lr: float = 1e-2) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        loss = self.model(input_ids=ids, labels=ids).loss
        self.losses.append(loss.item())
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def repeated_text_data(tokenizer, text: str = "the cat sat.", num: int = 16) -> DataLoader:
    """One sentence repeated: a model fitted on it loses diversity."""
    ids = torch.tensor(tokenizer(text)["input_ids"]).expand(num, -1)
    return DataLoader(TensorDataset(ids), batch_size=4)
