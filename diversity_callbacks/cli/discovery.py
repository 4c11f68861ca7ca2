"""What each run of ``diversity-callbacks score`` holds: its images and their prompts.

A run is a folder of images (searched recursively) or a file of precomputed embeddings. A
folder's prompts come from one of four sources, chosen with ``--prompts`` (``auto`` picks the
first that applies, in this order):

=============  ==========================================================================
source         layout
=============  ==========================================================================
``manifest``   ``prompts.csv`` or ``prompts.jsonl`` in the folder (or ``--manifest``): one
               row per image, columns ``file`` (relative to the folder) and ``prompt``
``sidecar``    ``cat_001.png`` with ``cat_001.txt`` beside it, holding the prompt
``folders``    one sub-folder per prompt: ``a red apple/001.png`` (the sub-folder's name,
               underscores read as spaces)
``none``       no prompts: only the Vendi score of all images
=============  ==========================================================================
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from diversity_callbacks.cli.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EMBEDDING_SUFFIXES = (".pt", ".npy")
MANIFEST_NAMES = ("prompts.csv", "prompts.jsonl")
PROMPT_SOURCES = ("auto", "manifest", "sidecar", "folders", "none")


@dataclass
class Run:
    """One run to score: its images (or embeddings file) and the prompt of each image.

    Attributes:
        name: shown in tables and plots.
        path: the folder or embeddings file.
        files: the images, sorted; empty for an embeddings file.
        prompts: the distinct prompts in order of first appearance (empty: no prompts).
        condition_ids: each image's index into ``prompts`` (empty without prompts).
        source: where the prompts came from (``"manifest"``, ``"sidecar"``, ``"folders"``,
            ``"embeddings"`` or ``"none"``).
        skipped: images left out, with the reason (``--on-error skip``).
    """

    name: str
    path: Path
    files: list[Path] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    condition_ids: list[int] = field(default_factory=list)
    source: str = "none"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_embeddings(self) -> bool:
        """Whether the run is a file of precomputed embeddings."""
        return self.path.is_file()


def warn_skipped(run: str, path: str, reason: str) -> None:
    """The one wording of a skipped image's warning (``--on-error skip``)."""
    print(f"warning: run {run!r}: skipped {path}: {reason}", file=sys.stderr)


def run_names(paths: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """Names of the runs: ``--names`` if given, else each path's last part (made unique)."""
    if names:
        if len(names) != len(paths):
            raise InputError(
                f"--names must give one name per run ({len(paths)}: {list(paths)}), got "
                f"{len(names)}: {list(names)}"
            )
        if len(set(names)) != len(names):
            raise InputError(f"--names must be distinct, got {list(names)}")
        return list(names)
    found: list[str] = []
    for path in paths:
        base = Path(path).resolve().name
        stem = base.rsplit(".", 1)[0] if Path(path).is_file() else base
        name, count = stem or "run", 2
        while name in found:
            name, count = f"{stem}-{count}", count + 1
        found.append(name)
    return found


def discover(
    path: str | os.PathLike,
    name: str,
    source: str = "auto",
    manifest: str | None = None,
    on_error: str = "fail",
    exclude: Sequence[Path] = (),
) -> Run:
    """Find a run's images and their prompts (see the module table).

    Args:
        path: a folder of images, or a ``.pt`` / ``.npy`` embeddings file.
        name: the run's name.
        source: one of ``PROMPT_SOURCES``.
        manifest: a manifest file name (relative to the folder) or path; implies ``manifest``.
        on_error: ``"fail"`` or ``"skip"`` images without a prompt (skipped ones are listed in
            :attr:`Run.skipped`).
        exclude: resolved files and folders left out (the command's own outputs, so that
            scoring a folder twice finds the same images).

    Raises:
        InputError: naming the path, what was expected and what was found.
    """
    root = Path(path)
    if root.is_file():
        if root.suffix.lower() not in EMBEDDING_SUFFIXES:
            raise InputError(
                f"run {str(root)!r} must be a folder of images or an embeddings file "
                f"({', '.join(EMBEDDING_SUFFIXES)}), got a file with suffix {root.suffix!r}"
            )
        return Run(name, root, source="embeddings")
    run = Run(name, root, files=_image_files(root, exclude))
    run.source = _chosen_source(root, run.files, source, manifest)
    if run.source == "manifest":
        prompts = _manifest_prompts(root, run.files, manifest)
    elif run.source == "sidecar":
        prompts = [_sidecar_prompt(file) for file in run.files]
    elif run.source == "folders":
        prompts = [_folder_prompt(root, file) for file in run.files]
    else:
        return run
    _assign(run, prompts, on_error)
    return run


def _image_files(root: Path, exclude: Sequence[Path]) -> list[Path]:
    """The folder's image files, searched recursively, sorted by relative path."""
    if not root.is_dir():
        raise InputError(
            f"run {str(root)!r} must be a folder of images or an embeddings file; nothing exists there"
        )
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not _excluded(p, exclude)
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise InputError(
            f"run {str(root)!r} holds no image (looked recursively for "
            f"{', '.join(IMAGE_SUFFIXES)} files): an empty folder, or the wrong path?"
        )
    return files


def _chosen_source(root: Path, files: list[Path], source: str, manifest: str | None) -> str:
    """The prompt source to read: ``--manifest`` implies a manifest, ``auto`` looks."""
    if manifest is not None and source in ("auto", "manifest"):
        return "manifest"
    if manifest is not None:
        raise InputError(
            f"--manifest {manifest!r} was given with --prompts {source!r}; use --prompts manifest"
        )
    if source == "auto":
        return _auto_source(root, files)
    if source not in PROMPT_SOURCES:
        raise InputError(f"--prompts must be one of {list(PROMPT_SOURCES)}, got {source!r}")
    return source


def _excluded(file: Path, exclude: Sequence[Path]) -> bool:
    resolved = file.resolve()
    return any(resolved == path or path in resolved.parents for path in exclude)


def _auto_source(root: Path, files: list[Path]) -> str:
    """The first source that gives every image a prompt, or one that gives most of them one.

    A source that almost applies (one stray image at the root of a folders layout, one
    sidecar missing) is chosen all the same, so that :func:`_assign` names the images without
    a prompt (or skips them with ``--on-error skip``) instead of every prompt being dropped.
    """
    if any((root / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    counts = {
        "sidecar": sum(file.with_suffix(".txt").is_file() for file in files),
        "folders": sum(file.parent != root for file in files),
    }
    for source, count in counts.items():
        if count == len(files):
            return source
    for source, count in counts.items():
        if 2 * count > len(files):
            return source
    return "none"


def _assign(run: Run, prompts: list[str | None], on_error: str) -> None:
    """Number the prompts; images without one fail or are skipped."""
    missing = [file for file, prompt in zip(run.files, prompts, strict=True) if prompt is None]
    if missing and on_error != "skip":
        shown = ", ".join(repr(str(f)) for f in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(
            f"run {str(run.path)!r}: {len(missing)} image(s) have no prompt in the "
            f"{run.source!r} source: {shown}{more}; give them a prompt, pass --on-error skip "
            "to leave them out, or --prompts none to score every image without prompts"
        )
    numbers: dict[str, int] = {}
    kept: list[Path] = []
    for file, prompt in zip(run.files, prompts, strict=True):
        if prompt is None:
            run.skipped.append((str(file), f"no prompt in the {run.source!r} source"))
            continue
        kept.append(file)
        run.condition_ids.append(numbers.setdefault(prompt, len(numbers)))
    if not kept:
        raise InputError(
            f"run {str(run.path)!r}: no image has a prompt in the {run.source!r} source"
        )
    run.files = kept
    run.prompts = list(numbers)


def _manifest_prompts(root: Path, files: list[Path], manifest: str | None) -> list[str | None]:
    if manifest is None:
        candidates = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
        if not candidates:
            raise InputError(
                f"run {str(root)!r}: --prompts manifest needs {' or '.join(MANIFEST_NAMES)} in the "
                "folder (or --manifest PATH), found neither"
            )
        path = candidates[0]
    else:
        path = Path(manifest) if Path(manifest).is_absolute() else root / manifest
        if not path.is_file() and Path(manifest).is_file():
            path = Path(manifest)
        if not path.is_file():
            raise InputError(
                f"--manifest {manifest!r}: no such file in run folder {str(root)!r} or as given"
            )
    rows = read_manifest(path)
    by_file: dict[str, tuple[int, str]] = {}
    for number, (file, prompt) in rows:
        target = Path(file) if Path(file).is_absolute() else root / file
        if not target.is_file():
            raise InputError(
                f"manifest {str(path)!r} line {number}: file {file!r} does not exist in "
                f"{str(root)!r}"
            )
        first, earlier = by_file.setdefault(target.resolve().as_posix(), (number, prompt))
        if earlier != prompt:
            raise InputError(
                f"manifest {str(path)!r}: file {file!r} has two prompts, {earlier!r} on line "
                f"{first} and {prompt!r} on line {number}; give each image one row"
            )
    return [by_file.get(file.resolve().as_posix(), (0, None))[1] for file in files]


def read_manifest(path: Path) -> list[tuple[int, tuple[str, str]]]:
    """``(line number, (file, prompt))`` rows of a CSV (header with ``file`` and ``prompt``) or
    JSONL manifest.

    Raises:
        InputError: for another suffix, missing columns or keys, a malformed line, or a file
            that is not UTF-8.
    """
    try:
        return _manifest_rows(path)
    except UnicodeDecodeError as error:
        raise InputError(f"manifest {str(path)!r} must be UTF-8 text: {error}") from None


def _manifest_rows(path: Path) -> list[tuple[int, tuple[str, str]]]:
    suffix = path.suffix.lower()
    rows: list[tuple[str, str]] = []
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "file" not in columns or "prompt" not in columns:
                raise InputError(
                    f"manifest {str(path)!r} must have a header row with columns 'file' and "
                    f"'prompt', got columns {columns}"
                )
            for number, row in enumerate(reader, start=2):
                file, prompt = row.get("file"), row.get("prompt")
                if not file or prompt is None:
                    raise InputError(
                        f"manifest {str(path)!r} line {number}: expected a file and a prompt, got {row}"
                    )
                rows.append((number, (file, prompt)))
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(
                        f"manifest {str(path)!r} line {number}: not valid JSON ({error.msg}), "
                        f'expected {{"file": ..., "prompt": ...}}'
                    ) from None
                if (
                    not isinstance(item, dict)
                    or not isinstance(item.get("file"), str)
                    or not isinstance(item.get("prompt"), str)
                ):
                    raise InputError(
                        f"manifest {str(path)!r} line {number}: expected an object with string "
                        f'"file" and "prompt", got {line.strip()[:120]}'
                    )
                rows.append((number, (item["file"], item["prompt"])))
    else:
        raise InputError(
            f"manifest {str(path)!r} must be a .csv or .jsonl file, got suffix {path.suffix!r}"
        )
    if not rows:
        raise InputError(f"manifest {str(path)!r} holds no row")
    return rows


def _sidecar_prompt(file: Path) -> str | None:
    sidecar = file.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    try:
        prompt = sidecar.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise InputError(f"sidecar prompt {str(sidecar)!r} must be UTF-8 text: {error}") from None
    return prompt or None


def _folder_prompt(root: Path, file: Path) -> str | None:
    parts = file.relative_to(root).parts
    if len(parts) < 2:
        return None
    try:
        parts[0].encode("utf-8")
    except UnicodeEncodeError:  # a name that is not UTF-8 decodes with surrogates
        raise InputError(
            f"prompt folder {str(root / parts[0])!r} must have a UTF-8 name (the name is the "
            "prompt); rename it, or use a manifest"
        ) from None
    return parts[0].replace("_", " ")
