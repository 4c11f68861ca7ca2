"""Reading a run: images decoded in DataLoader workers, or a file of precomputed embeddings.

Images are decoded by Pillow into uint8 ``(3, H, W)`` tensors: in worker processes with
``--workers`` (the main process then only embeds), in the main process without (the default
for a small run, where starting workers costs more than they save). A batch holding images of several sizes is split into
one sub-batch per size: every image is embedded at its own size (the embedder resizes), none is
padded or cropped here. An image that cannot be read is named by its path: it fails the run, or,
with ``--on-error skip``, is left out with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diversity_callbacks.cli.discovery import warn_skipped
from diversity_callbacks.cli.errors import ImageReadError, InputError


def decode_image(path: str) -> Tensor:
    """uint8 ``(3, H, W)`` RGB pixels of an image file, decoded by
    :func:`~diversity_callbacks.images.decode_image_file` (EXIF orientation applied, 16-bit grey
    scaled to 8 bits, transparency composited on black, first frame of an animation).

    Raises:
        ImageReadError: naming the path and Pillow's reason.
    """
    from diversity_callbacks.images import decode_image_file

    try:
        return decode_image_file(path)
    except Exception as error:
        raise ImageReadError(
            f"cannot read image {path!r}: {type(error).__name__}: {error}"
        ) from None


class ImageFiles(Dataset):
    """Image files with their condition numbers; an item that cannot be read comes back as its
    error message, and the main process decides (fail or skip with a warning)."""

    def __init__(self, files: Sequence[Path], condition_ids: Sequence[int]) -> None:
        self.files = [str(f) for f in files]
        self.condition_ids = list(condition_ids) or [0] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor | str, int, str]:
        try:
            image = decode_image(self.files[index])
        except ImageReadError as error:
            return str(error), self.condition_ids[index], self.files[index]
        return image, self.condition_ids[index], self.files[index]


def collate_by_size(items: list[tuple[Tensor | str, int, str]]) -> dict[str, Any]:
    """Stack a batch's images into one tensor per image size; keep the unreadable apart."""
    groups: dict[tuple[int, ...], list[int]] = {}
    failed = []
    for index, (image, _, path) in enumerate(items):
        if isinstance(image, str):
            failed.append((path, image))
        else:
            groups.setdefault(tuple(image.shape), []).append(index)
    parts = [
        (
            torch.stack([items[i][0] for i in indices]),
            torch.tensor([items[i][1] for i in indices], dtype=torch.long),
            [items[i][2] for i in indices],
        )
        for indices in groups.values()
    ]
    return {"parts": parts, "failed": failed}


def decoded_batches(images: ImageFiles, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    """:func:`collate_by_size` batches of ``images``, decoded by ``workers`` DataLoader
    processes, or in this process when ``workers`` is 0: a plain loop then, since a DataLoader
    without workers only adds its own per-batch work (samplers, fetchers, pinning checks)."""
    if not workers:
        for start in range(0, len(images), batch_size):
            stop = min(start + batch_size, len(images))
            yield collate_by_size([images[index] for index in range(start, stop)])
        return
    yield from DataLoader(
        images,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_by_size,
        prefetch_factor=4,
        persistent_workers=False,
    )


def image_batches(
    files: Sequence[Path],
    condition_ids: Sequence[int],
    *,
    batch_size: int,
    workers: int,
    skip: bool,
    skipped: list[tuple[str, str]],
    conditional: bool,
    run: str,
    current: list[str],
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """``(uint8 images, condition ids)`` batches of these files, decoded in ``workers`` processes.

    Unreadable images are appended to ``skipped`` (with a warning on stderr naming each and the
    run ``run``) when ``skip``; otherwise the first one raises :class:`ImageReadError`.
    ``current`` holds the files of the batch being embedded (emptied when the next one is
    asked for), so that a batch that fails to embed can be named by its files.
    """
    for batch in decoded_batches(ImageFiles(files, condition_ids), batch_size, workers):
        for path, reason in batch["failed"]:
            if not skip:
                raise ImageReadError(f"{reason} (pass --on-error skip to leave it out)")
            warn_skipped(run, path, reason)
            skipped.append((path, reason))
        for images, ids, names in batch["parts"]:
            current[:] = names
            yield images, ids if conditional else None
            current.clear()  # taken: a failure from here on is not this batch's


@dataclass(frozen=True)
class Embeddings:
    """The checked contents of an embeddings file.

    Attributes:
        embeddings: ``(N, D)`` floats, one row per sample.
        prompts: each row's prompt (None: no prompts).
        text_embeddings: ``(N, D')``, row i the embedding of row i's prompt (None: not given).
    """

    embeddings: Tensor
    prompts: list[str] | None = None
    text_embeddings: Tensor | None = None


EMBEDDING_KEYS = ("embeddings", "prompts", "text_embeddings")


def load_embeddings(path: Path) -> Embeddings:
    """The contents of an embeddings file, checked: ``embeddings`` ``(N, D)`` floats, and
    optionally ``prompts`` (``N`` strings) and ``text_embeddings`` (``(N, D')``, row i the
    embedding of sample i's prompt).

    A ``.npy`` file holds the ``(N, D)`` array alone; a ``.pt`` file holds that tensor alone or
    a dict with the keys above (read with ``torch.load(weights_only=True)``).

    Raises:
        InputError: naming the file, the key, what was expected and what was found.
    """
    where = f"embeddings file {str(path)!r}"
    content = _read(path, where)
    if isinstance(content, Tensor):
        content = {"embeddings": content}
    if not isinstance(content, dict) or "embeddings" not in content:
        got = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise InputError(
            f"{where} must hold an (N, D) tensor or a dict with key 'embeddings' (and optionally "
            f"'prompts', 'text_embeddings'), got {got}"
        )
    unknown = set(content) - set(EMBEDDING_KEYS)
    if unknown:
        raise InputError(
            f"{where}: unknown keys {sorted(unknown)}; expected 'embeddings', 'prompts', "
            "'text_embeddings'"
        )
    embeddings = _matrix(content["embeddings"], f"{where} key 'embeddings'")
    rows = embeddings.shape[0]
    prompts = content.get("prompts")
    if prompts is not None:
        prompts = _prompts(prompts, rows, where)
    text = content.get("text_embeddings")
    if text is not None:
        if prompts is None:
            raise InputError(f"{where} has 'text_embeddings' but no 'prompts'; give both")
        text = _matrix(text, f"{where} key 'text_embeddings'")
        if text.shape[0] != rows:
            raise InputError(
                f"{where} key 'text_embeddings' must have {rows} rows (row i: the embedding of "
                f"sample i's prompt), got shape {tuple(text.shape)}"
            )
    return Embeddings(embeddings, prompts, text)


def _read(path: Path, where: str) -> Any:
    """What an embeddings file holds: a ``.npy`` array as a tensor, or a ``.pt`` file's
    contents (tensors, lists and dicts only)."""
    if path.suffix.lower() == ".npy":
        import numpy as np

        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except Exception as error:
            raise InputError(f"{where}: cannot read it as a NumPy array ({error})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"{where}: cannot read it with torch.load(weights_only=True) ({type(error).__name__}); "
            "it must hold a tensor or a dict of tensors and a list of strings"
        ) from None


def _prompts(prompts: Any, rows: int, where: str) -> list[str]:
    """The ``prompts`` key: a list of ``rows`` strings, or an error saying what it holds."""
    if (
        isinstance(prompts, (list, tuple))
        and len(prompts) == rows
        and all(isinstance(p, str) for p in prompts)
    ):
        return list(prompts)
    got = (
        f"{type(prompts).__name__} of length {len(prompts)}"
        if hasattr(prompts, "__len__")
        else type(prompts).__name__
    )
    if isinstance(prompts, (list, tuple)):
        bad = next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)
        if bad is not None:
            got += f" whose item {bad} is {type(prompts[bad]).__name__} {prompts[bad]!r}"
    if isinstance(prompts, Tensor):
        got += " (class numbers? give each row its prompt text, e.g. [names[i] for i in ids])"
    raise InputError(
        f"{where} key 'prompts' must be a list of {rows} strings, one per row of "
        f"'embeddings', got {got}"
    )


def _matrix(value: Any, where: str) -> Tensor:
    if not isinstance(value, Tensor) or value.ndim != 2 or not value.is_floating_point():
        got = (
            f"{value.dtype} of shape {tuple(value.shape)}"
            if isinstance(value, Tensor)
            else type(value).__name__
        )
        raise InputError(f"{where} must be a floating (N, D) tensor, got {got}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise InputError(
            f"{where} must have at least one row and one column, got shape {tuple(value.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        row = int((~torch.isfinite(value)).any(dim=1).nonzero()[0])
        raise InputError(f"{where} must be finite, got NaN or Inf in row {row}")
    return value
