"""A tiny conditional generator as a LightningModule, a cheap embedder and a reader of offline
W&B run files, for the callback tests.

Both are deterministic under ``torch.manual_seed`` and fast on one CPU thread, so the same model
trained in one process or in two DDP ranks gives the same samples.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Metric

PROMPTS = ["a red square", "a blue circle", "a green line"]
QUIET = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "enable_progress_bar": False,
}
"""Trainer options of a test run: one CPU device, nothing written, nothing printed."""
IMAGE_SIZE = 8
LATENT = 4


class TinyGenerator(L.LightningModule):
    """Noise and a prompt embedding -> a (3, 8, 8) image in [-1, 1]; trained to match targets.

    ``losses`` records every training loss, to compare runs step by step.
    """

    def __init__(
        self, prompts: list[str] = PROMPTS, lr: float = 0.05, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.prompts = list(prompts)
        self.prompt_embedding = nn.Embedding(len(self.prompts), 8)
        self.net = nn.Sequential(
            nn.Linear(LATENT + 8, 32),
            nn.Tanh(),
            nn.Dropout(dropout),  # makes train/eval mode and RNG use observable in losses
            nn.Linear(32, 3 * IMAGE_SIZE * IMAGE_SIZE),
        )
        self.lr = lr
        self.losses: list[float] = []

    def forward(self, noise: Tensor, prompt_ids: Tensor) -> Tensor:
        hidden = torch.cat([noise, self.prompt_embedding(prompt_ids)], dim=1)
        return torch.tanh(self.net(hidden)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> Tensor:
        """The sampling contract of DiversityCallback: one image per (prompt, generator)."""
        noise = torch.stack(
            [torch.randn(LATENT, generator=g, device=self.device) for g in generators]
        )
        ids = torch.tensor([self.prompts.index(p) for p in prompts], device=self.device)
        return self(noise, ids)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        noise, ids, target = batch
        loss = (self(noise, ids) - target).pow(2).mean()
        self.losses.append(loss.item())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        noise, ids, target = batch
        loss = (self(noise, ids) - target).pow(2).mean()
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class ClassConditionalGenerator(TinyGenerator):
    """The tiny generator conditioned on class labels 0..2 instead of prompts."""

    def generate(self, labels: Tensor, generators: list[torch.Generator]) -> Tensor:
        assert labels.dtype == torch.long and labels.device == self.device
        return self(self.noise(generators), labels)

    def noise(self, generators: list[torch.Generator]) -> Tensor:
        return torch.stack(
            [torch.randn(LATENT, generator=g, device=self.device) for g in generators]
        )


class UnconditionalGenerator(ClassConditionalGenerator):
    """The tiny generator with every sample drawn for class 0: no condition at all."""

    def generate(self, conditions: None, generators: list[torch.Generator]) -> Tensor:
        assert conditions is None
        labels = torch.zeros(len(generators), dtype=torch.long, device=self.device)
        return self(self.noise(generators), labels)


class TextGenerator(L.LightningModule):
    """A tiny language model: each of 6 positions draws a letter from its own learned logits;
    trained toward "abcabc", so its samples lose diversity as it learns."""

    LETTERS = "abcdef"

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(6, len(self.LETTERS)))

    def generate(self, prompts: list[str], generators: list[torch.Generator]) -> list[str]:
        probabilities = self.logits.softmax(dim=1)
        texts = []
        for prompt, generator in zip(prompts, generators, strict=True):
            draws = torch.multinomial(probabilities, 1, generator=generator).flatten()
            texts.append(prompt + ": " + "".join(self.LETTERS[int(i)] for i in draws))
        return texts

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        (target,) = batch
        return nn.functional.cross_entropy(
            self.logits.expand(len(target), -1, -1).flatten(0, 1), target.flatten()
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def text_data(num: int = 32) -> DataLoader:
    """Targets "abcabc" as letter indices, for TextGenerator."""
    target = torch.tensor([0, 1, 2, 0, 1, 2]).expand(num, -1)
    return DataLoader(TensorDataset(target), batch_size=4)


class LetterEmbedder:
    """Texts -> letter counts (a bag of characters): embeds generated texts and prompts alike."""

    def embed_samples(self, texts: list[str]) -> Tensor:
        return torch.stack(
            [torch.tensor([text.count(c) for c in "abcdefghijklmnopqrstuvwxyz"]) for text in texts]
        ).double()

    embed_texts = embed_samples


def tiny_data(num: int = 32, batch_size: int = 4, shuffle: bool = True) -> DataLoader:
    """Random (noise, prompt id, target image) triples; the order is drawn from the global RNG."""
    generator = torch.Generator().manual_seed(1234)
    noise = torch.randn(num, LATENT, generator=generator)
    ids = torch.randint(0, len(PROMPTS), (num,), generator=generator)
    target = torch.rand(num, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1
    return DataLoader(TensorDataset(noise, ids, target), batch_size=batch_size, shuffle=shuffle)


class PixelEmbedder:
    """Image features: 4 x 4 average-pooled pixels in [-1, 1] (48-D); text: a hash-seeded vector.

    Satisfies the ImageEmbedder and TextEmbedder protocols without any model weights.
    """

    dim = 48

    def embed_images(self, images: Tensor) -> Tensor:
        return nn.functional.adaptive_avg_pool2d(images * 2 - 1, 4).flatten(
            1
        )  # centred: cosine spreads

    def embed_texts(self, prompts: list[str]) -> Tensor:
        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha1(prompt.encode()).digest()[:4], "little")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)


class MeanNorm(Metric):
    """A user's own plug-in metric: the mean embedding norm, summed across ranks."""

    higher_is_better = None
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, embeddings: Tensor) -> None:
        self.total += embeddings.double().norm(dim=1).sum()
        self.count += embeddings.shape[0]

    def compute(self) -> Tensor:
        return self.total / self.count


BLOCK = 32768  # the run file is a LevelDB-style log: 32 KiB blocks of 7-byte-headed chunks
HEADER = 7  # both the file header (":W&B", magic, version) and each chunk header (crc, len, type)


def run_records(path: Path) -> Iterator[object]:
    """Parse the protobuf records of an offline ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a header is zero padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        position += HEADER
        pending += data[position : position + length]
        position += length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history_rows(run_dir: Path) -> list[dict]:
    """The history rows of an offline run folder, flattened to ``{"a/b": value}`` dicts."""
    (path,) = run_dir.glob("run-*.wandb")
    rows = []
    for record in run_records(path):
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}
            )
    return rows
