"""The Python blocks of the README and of ``docs/``, and how the tests run them.

Conventions (docs/contributing.md explains them to writers):

- every ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` runs in the test suite;
  the blocks of one page run in order in one namespace, in a fresh working directory;
- ``<!-- test: stand-in -->`` on the line before a block (an optional reason may follow:
  ``<!-- test: stand-in: downloads CLIP weights -->``) runs that block with the offline
  stand-ins of :func:`stand_ins`: it may then need a GPU or the network as written;
- names a block uses without defining (a user's ``model``, ``prompts``, ``train_loader``) come
  from the page's setup in ``tests/test_docs.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<directive>.*?)\s*-->\s*$")
STAND_IN = re.compile(r"stand-in(?:\s*[:(].*)?")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    """Path relative to the repository root: ``README.md``, ``docs/callback.md``."""
    line: int
    """Line of the opening fence, from 1."""
    language: str
    """The fence's info string, lower-cased: ``python``, ``bash``, ``text``."""
    code: str
    section: str | None
    """The title of the nearest heading above the block."""
    directive: str | None
    """What a ``<!-- test: ... -->`` comment right before the block says, if there is one."""
    output: str | None = None
    """For a Python block followed by a line "prints" and a ```` ```text ```` block: that text,
    which the block must print."""
    end: int = 0
    """Index of the line after the closing fence."""

    @property
    def stand_in(self) -> bool:
        return self.directive is not None and STAND_IN.fullmatch(self.directive) is not None


def pages() -> list[str]:
    """The README and every Markdown page of the docs, relative to the repository root."""
    docs = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").rglob("*.md"))
    return ["README.md", *docs]


def blocks(page: str) -> list[Block]:
    """Every fenced block of ``page``, in order (headings inside blocks are not headings)."""
    lines = (ROOT / page).read_text().splitlines()
    found: list[Block] = []
    section = None
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", lines[i])
            if heading:
                section = heading.group(1)
            i += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        start = i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.match(previous)
        if found and found[-1].language == "python" and match.group("info").lower() == "text":
            between = "".join(lines[found[-1].end : start]).strip()
            if re.fullmatch(r"prints:?", between):
                found[-1] = replace(found[-1], output="\n".join(body) + "\n")
        found.append(
            Block(
                page=page,
                line=start + 1,
                language=match.group("info").lower(),
                code="\n".join(body) + "\n",
                section=section,
                directive=marker.group("directive") if marker else None,
                end=i,
            )
        )
    return found


def python_blocks(page: str, section: str | None = None) -> list[str]:
    """The code of every Python block of ``page`` (of the section titled ``section`` if given)."""
    return [
        block.code
        for block in blocks(page)
        if block.language == "python" and (section is None or block.section == section)
    ]


class StandInCLIP(nn.Module):
    """Takes :class:`~diversity_callbacks.CLIPEmbedder`'s arguments, loads nothing: 4 x 4
    average-pooled pixels for images, a hash-seeded vector for prompts (48-D, unit norm)."""

    dim = 48

    def __init__(self, *args: Any, value_range: str = "[0,1]", **kwargs: Any) -> None:
        super().__init__()
        self.value_range = value_range

    def embed_images(self, images: Tensor, value_range: str | None = None) -> Tensor:
        from diversity_callbacks.images import to_unit_range

        images = to_unit_range(images, value_range or self.value_range)
        features = nn.functional.adaptive_avg_pool2d(images.float() * 2 - 1, 4).flatten(1)
        return nn.functional.normalize(features, dim=1)

    def embed_texts(self, prompts: list[str]) -> Tensor:
        import hashlib

        rows = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha1(prompt.encode()).digest()[:4], "little")
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return nn.functional.normalize(torch.stack(rows), dim=1)


def _hub_model(*args: Any, **kwargs: Any) -> nn.Module:
    """What ``torch.hub.load`` returns under the stand-ins: images -> (B, 64) features."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(1), nn.Linear(48, 64))


@contextmanager
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline, CPU-only stand-ins for what a block marked ``<!-- test: stand-in -->`` needs.

    - ``CLIPEmbedder`` (also the callback's and the evaluator's default embedder) is
      :class:`StandInCLIP`: no weights are downloaded or built;
    - ``torch.hub.load`` returns a small random module (images -> 64-D features);
    - without CUDA, ``"cuda"`` in the code means the CPU (see :func:`source`).
    """
    import diversity_callbacks.embedders

    with monkeypatch.context() as patch:
        patch.setattr("diversity_callbacks.embedders.clip.CLIPEmbedder", StandInCLIP)
        patch.setattr(diversity_callbacks.embedders, "CLIPEmbedder", StandInCLIP)
        patch.setattr(torch.hub, "load", _hub_model)
        yield


def source(block: Block) -> str:
    """The code that runs: a stand-in block's CUDA devices become the CPU on machines without
    one (the block is otherwise run as written)."""
    if not block.stand_in or torch.cuda.is_available():
        return block.code
    return block.code.replace('"cuda"', '"cpu"').replace(".cuda()", ".cpu()")


def run_blocks(page: str, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every Python block of ``page`` in order in ``namespace`` (the caller sets the working
    directory). Tracebacks name the page and the line of the block."""
    from diversity_callbacks.media import loggers

    # a block may register a media writer: keep it out of the other tests
    monkeypatch.setattr(loggers, "WRITERS", dict(loggers.WRITERS))
    for block in blocks(page):
        if block.language != "python":
            continue
        if block.directive is not None and not block.stand_in:
            raise ValueError(
                f"{page}:{block.line - 1}: unknown test directive {block.directive!r}; "
                "the one known is 'stand-in' (see docs/contributing.md)"
            )
        # the first line of the code is the line after the fence
        code = compile("\n" * block.line + source(block), f"{ROOT / page}", "exec")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed) if block.output is not None else nullcontext():
            if block.stand_in:
                with stand_ins(monkeypatch):
                    exec(code, namespace)
            else:
                exec(code, namespace)
        if block.output is not None:
            _compare_output(block, printed.getvalue())


def _compare_output(block: Block, printed: str) -> None:
    """The text a page says a block prints is what it prints (trailing spaces aside)."""

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]

    if lines(printed) != lines(block.output or ""):
        raise AssertionError(
            f"{block.page}:{block.line}: the block printed\n{printed}\n"
            f"where the page says it prints\n{block.output}"
        )
