"""The reference set: training samples that the memorization scores compare every sample with.

It is given as samples (a tensor in the evaluator's ``value_range``, a ``Dataset`` or
``DataLoader`` whose items are samples or ``(sample, ...)`` tuples, a folder of images) or as
embeddings already made (a ``.pt`` or ``.npy`` file of an ``(m, D)`` matrix). Samples are embedded
once, with the evaluator's embedder, when the evaluator is prepared: under ``torch.distributed``
each rank embeds a contiguous share and the shares are gathered once. The embeddings are cached
on disk under a key made of the embedder (its type, model name and a digest of its weights) and
of the data (a digest of the tensor's bytes, of the folder's file names, sizes and modification
times, or of a dataset's length and first, middle and last items), so that a resumed run, or
a second run on the same data, reads them back instead of embedding again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diversity_callbacks.embedders.base import check_embeddings
from diversity_callbacks.evaluation.samples import SampleEmbedder
from diversity_callbacks.images import decode_image_file, to_uint8, to_unit_range
from diversity_callbacks.utilities import distributed
from diversity_callbacks.utilities.progress import progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
EMBEDDING_SUFFIXES = (".pt", ".pth", ".npy")

ReferenceSource = Any
"""A tensor of samples, a ``Dataset`` or ``DataLoader``, a folder of images, or an embeddings
file (``.pt``/``.npy``)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/diversity_callbacks/reference`` (``~/.cache/...`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "diversity_callbacks" / "reference"


class ReferenceSet:
    """Training samples (or their embeddings) for the memorization scores.

    Args:
        source: see :data:`ReferenceSource`.
        cache_dir: where embeddings are cached (default :func:`default_cache_dir`); ``False``:
            no cache on disk.
        batch_size: samples per embedder call.

    Raises:
        TypeError, ValueError: for a source of another kind, a missing path or an empty folder,
            naming what was given.
    """

    def __init__(
        self,
        source: ReferenceSource,
        *,
        cache_dir: str | os.PathLike | bool | None = None,
        batch_size: int = 64,
    ) -> None:
        self.embedded: Tensor | None = None  # the (m, D) embeddings once made or loaded
        self.embed_calls = 0
        """How many times samples were embedded (not read from a cache): once per new data."""
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        self.files: list[Path] | None = None
        self.samples: Any = None
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                self.files = sorted(
                    p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                )
                if not self.files:
                    raise ValueError(
                        f"`reference` folder {str(path)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})"
                    )
            elif path.suffix.lower() in EMBEDDING_SUFFIXES and path.is_file():
                self.embedded = _load_embeddings(path)
            else:
                raise ValueError(
                    f"`reference` must be a folder of images or a {'/'.join(EMBEDDING_SUFFIXES)} "
                    f"file of embeddings, got {str(path)!r}, which is neither"
                )
        elif isinstance(source, DataLoader):
            self.samples = source.dataset
        elif isinstance(source, (Tensor, Dataset)):
            self.samples = source
        else:
            raise TypeError(
                "`reference` must be a tensor of samples, a Dataset or DataLoader, a folder of "
                f"images or a .pt/.npy file of embeddings, got {type(source).__name__}"
            )

    def __len__(self) -> int:
        if self.files is not None:
            return len(self.files)
        if self.samples is not None:
            return len(self.samples)
        assert self.embedded is not None
        return self.embedded.shape[0]

    @property
    def has_images(self) -> bool:
        """Whether :meth:`thumbnail` can show a training sample (not for embeddings files)."""
        return self.files is not None or self.samples is not None

    def digest(self) -> str:
        """A digest of the data (see the module docstring)."""
        hasher = hashlib.sha256()
        if self.files is not None:
            for file in self.files:
                stat = file.stat()
                hasher.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        elif isinstance(self.samples, Tensor):
            hasher.update(repr((self.samples.dtype, tuple(self.samples.shape))).encode())
            hasher.update(
                self.samples.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            )
        else:
            size = len(self.samples)
            hasher.update(f"{type(self.samples).__qualname__}\0{size}".encode())
            for index in sorted({0, size // 2, size - 1} if size else set()):
                hasher.update(_item_bytes(_sample_of(self.samples[index])))
        return hasher.hexdigest()[:32]

    def embeddings(
        self, sample_embedder: SampleEmbedder, device: torch.device, progress: bool = True
    ) -> Tensor:
        """The ``(m, D)`` embeddings: made once (a collective under DDP), then kept.

        Args:
            sample_embedder: the evaluator's embedder and value range.
            device: where the embedder runs.
            progress: show a progress bar on rank 0.
        """
        if self.embedded is None:
            path = None
            if self.cache_dir is not None:
                key = f"{embedder_digest(sample_embedder.embedder)}-{self.digest()}"
                path = self.cache_dir / f"{key}.pt"
            # Every rank must take the same branch: embedding is a collective.
            cached = path is not None and path.is_file()
            if distributed.any_rank(not cached, device):
                self.embedded = self._embed(sample_embedder, device, progress)
                if path is not None and distributed.rank_and_world_size()[0] == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_suffix(f".{os.getpid()}.tmp")
                    torch.save(self.embedded, partial)
                    partial.replace(path)  # atomic: a reader never sees half a file
            else:
                self.embedded = torch.load(path, map_location="cpu", weights_only=True)
        return self.embedded.to(device)

    def _embed(
        self, sample_embedder: SampleEmbedder, device: torch.device, progress: bool
    ) -> Tensor:
        """Embed this rank's contiguous share, then gather every rank's in rank order."""
        rank, world_size = distributed.rank_and_world_size()
        total = len(self)
        share = range(rank * total // world_size, (rank + 1) * total // world_size)
        batches = [share[i : i + self.batch_size] for i in range(0, len(share), self.batch_size)]
        bar = progress_bar(
            batches, description="reference set: embedding", enabled=progress and rank == 0
        )
        parts = []
        with torch.no_grad():
            for batch in bar:
                for samples in self._batch_samples(batch, sample_embedder, device):
                    embedded = sample_embedder.embed(samples)
                    parts.append(
                        check_embeddings(embedded, rows=len(samples), source="embedder")
                        .detach()
                        .cpu()
                    )
        bar.close()
        self.embed_calls += 1
        mine = torch.cat(parts) if parts else None
        gathered = [part for part in distributed.all_gather_objects(mine) if part is not None]
        return torch.cat(gathered).to(torch.float32)

    def _batch_samples(
        self, batch: range, sample_embedder: SampleEmbedder, device: torch.device
    ) -> Iterator[Any]:
        """One batch as the embedder takes it (images in [0, 1]; one sub-batch per image size)."""
        if self.files is not None:
            images = [decode_image_file(str(self.files[i])) for i in batch]
            for size in dict.fromkeys(tuple(image.shape) for image in images):
                same = torch.stack([image for image in images if tuple(image.shape) == size])
                yield to_unit_range(same.to(device), "uint8", name="the reference images")
            return
        if isinstance(self.samples, Tensor):
            items = self.samples[batch.start : batch.stop]
        else:
            items = [_sample_of(self.samples[i]) for i in batch]
            if sample_embedder.value_range is not None:
                items = torch.stack(items)
        if sample_embedder.value_range is None:
            yield items
        else:
            yield to_unit_range(
                items.to(device), sample_embedder.value_range, name="the reference images"
            )

    def thumbnail(self, index: int, value_range: str | None, size: int) -> Tensor | None:
        """uint8 ``(3, h, w)`` of training sample ``index``, longest side at most ``size``;
        None when the reference holds no images."""
        if self.files is not None:
            image = to_unit_range(decode_image_file(str(self.files[index]))[None], "uint8")
        elif self.samples is not None and value_range is not None:
            image = to_unit_range(_sample_of(self.samples[index])[None].cpu(), value_range)
        else:
            return None
        return to_uint8(_shrink(image, size))[0]


def _shrink(images: Tensor, size: int) -> Tensor:
    longest = max(images.shape[-2:])
    if longest <= size:
        return images
    shape = [max(1, round(s * size / longest)) for s in images.shape[-2:]]
    return torch.nn.functional.interpolate(
        images.float(), size=shape, mode="bilinear", antialias=True, align_corners=False
    ).clamp_(0, 1)


def shrink_to_uint8(images: Tensor, size: int) -> Tensor:
    """uint8 copies of ``(B, 3, H, W)`` images in [0, 1], longest side at most ``size``."""
    return to_uint8(_shrink(images, size)).cpu()


def embedder_digest(embedder: Any) -> str:
    """A digest of what makes an embedder's output: its type, model name and, for a module,
    every parameter and buffer."""
    hasher = hashlib.sha256()
    hasher.update(type(embedder).__qualname__.encode())
    for name in ("model_name", "pretrained"):
        hasher.update(repr(getattr(embedder, name, None)).encode())
    if isinstance(embedder, torch.nn.Module):
        for key, value in embedder.state_dict().items():
            hasher.update(key.encode())
            hasher.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]


def _sample_of(item: Any) -> Any:
    """A dataset item's sample: the item, or the first element of a ``(sample, ...)`` tuple."""
    return item[0] if isinstance(item, (tuple, list)) else item


def _item_bytes(item: Any) -> bytes:
    if isinstance(item, Tensor):
        return item.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return repr(item).encode()


def _load_embeddings(path: Path) -> Tensor:
    """An ``(m, D)`` float matrix from a ``.npy`` or ``.pt`` file."""
    if path.suffix.lower() == ".npy":
        value: Any = torch.from_numpy(np.load(path, allow_pickle=False))
    else:
        value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, Tensor) or value.ndim != 2 or not value.is_floating_point():
        described = (
            f"shape {tuple(value.shape)} {value.dtype}"
            if isinstance(value, Tensor)
            else type(value).__name__
        )
        raise ValueError(
            f"`reference` file {str(path)!r} must hold an (m, D) float matrix, got {described}"
        )
    return value.to(torch.float32)
