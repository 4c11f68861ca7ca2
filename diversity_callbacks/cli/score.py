"""``diversity-callbacks score``: the diversity of folders of images (or embeddings), side by side.

Each run (a folder or an embeddings file) is scored by
:func:`~diversity_callbacks.evaluation.existing.evaluate_existing` with a
:class:`~diversity_callbacks.DiversityEvaluator` built from the options, exactly as a Python loop
would; this module only finds the files, splits them over the processes and writes the outputs.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diversity_callbacks.cli.discovery import (
    InputError,
    Run,
    discover,
    run_names,
    warn_skipped,
)
from diversity_callbacks.cli.options import decoding_workers
from diversity_callbacks.utilities import distributed

GIB = 1024**3
KERNEL_COPIES = 3
"""The exact Gaussian kernel's compute holds about three n x n float64 matrices at once (the
kernel, the copy ``eigvalsh`` works on, its workspace)."""


@dataclass
class RunScore:
    """One run's scores, as written to the table, ``--json``, ``--csv`` and ``--plot``.

    Attributes:
        name: the run's name.
        path: its folder or embeddings file.
        source: where its prompts came from.
        num_images: samples scored (every process's).
        metrics: ``{"vendi_q1": ..., "per_prompt_vendi_q1": ..., "sce": ..., ...}``.
        prompts: the run's distinct prompts.
        counts: samples scored per prompt.
        per_prompt: per-prompt columns (``"vendi_q1"``...), one value per prompt.
        skipped: ``(path, reason)`` of every image left out.
        seconds: wall seconds of reading, embedding and computing.
        files: the run's image files by prompt number (for ``--grids``).
        copies: with ``--reference``, the most-copied images beside their training images
            (for ``--plot``).
        evaluation: the evaluation's result, with its modes (for ``--modes``).
    """

    name: str
    path: str
    source: str
    num_images: int
    metrics: dict[str, float]
    prompts: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    per_prompt: dict[str, list[float]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    files: dict[int, list[str]] = field(default_factory=dict)
    copies: Any = None
    evaluation: Any = None


def run(args: argparse.Namespace) -> int:
    """Score every run; print the table and write the outputs on rank 0."""
    from diversity_callbacks.cli import output

    check_options(args)
    device = _launch(args)
    rank, world_size = distributed.rank_and_world_size()
    progress = not args.no_progress and rank == 0
    names = run_names(args.runs, args.names)
    outputs = output.output_paths(args)
    runs = [
        discover(path, name, args.prompts, args.manifest, args.on_error, exclude=outputs)
        for path, name in zip(_bar(args.runs, "finding images", progress), names, strict=True)
    ]
    for found in runs:
        for path, reason in found.skipped:
            if rank == 0:
                warn_skipped(found.name, path, reason)
    image_embedder = None
    scores = []
    for found in runs:
        embedder = None
        if not found.is_embeddings:
            if image_embedder is None:
                image_embedder = _image_embedder(args, device)
            embedder = image_embedder
        # --modes: every run after the first is compared with the first (lost, gained modes)
        first = scores[0].evaluation if scores else None
        scores.append(score_run(found, embedder, args, device, rank, world_size, progress, first))
    if rank == 0:
        output.write_all(scores, args)
    return 0


def check_options(args: argparse.Namespace) -> None:
    """Refuse options that cannot work together, and unusable output paths, before any work."""
    from diversity_callbacks.cli import output

    if args.grids and not args.plot:
        raise InputError("--grids needs --plot DIR (the folder the grids are written to)")
    if args.reference and not Path(args.reference).exists():
        raise InputError(f"--reference {args.reference!r} does not exist")
    if args.modes and not args.plot:
        raise InputError("--modes needs --plot DIR (the folder the mode grids are written to)")
    if args.embedder and args.model_config:
        raise InputError(
            f"--model-config configures the open_clip model of --model; it cannot apply to "
            f"--embedder {args.embedder!r}: drop one of the two"
        )
    if args.plot:
        output.require_matplotlib()
    output.check_output_paths(args)


@dataclass
class _Source:
    """This rank's batches of one run, and how the evaluator reads them."""

    batches: Iterator[Any]
    embedder: Any
    value_range: str | None
    rows: int  # in the whole run, every rank's
    total: int  # this rank's batches, for the progress bar
    current: list[str] = field(default_factory=list)  # image files of the batch last read


def score_run(
    found: Run,
    image_embedder: Any,
    args: argparse.Namespace,
    device: torch.device,
    rank: int,
    world_size: int,
    progress: bool,
    compare_to: Any = None,
) -> RunScore:
    """Score one run on this rank's share of it (a collective: every rank calls it); with
    ``--modes``, also its modes lost and gained since ``compare_to`` (the first run's result)."""
    from diversity_callbacks.evaluation.errors import EvaluationError
    from diversity_callbacks.evaluation.existing import evaluate_existing

    while True:  # again without a batch that failed to embed (--on-error skip)
        skipped: list[tuple[str, str]] = list(found.skipped)
        if found.is_embeddings:
            source = _embedding_source(found, args.batch_size, rank, world_size)
        else:
            source = _image_source(found, image_embedder, args, rank, world_size, skipped)
        check_kernel_memory(args, found, source.rows)
        evaluator = build_evaluator(
            found.prompts, _counts(found), source.embedder, source.value_range, args
        )
        try:
            result = evaluate_existing(
                evaluator,
                source.batches,
                device=device,
                progress=progress,
                total=source.total,
                description=f"{found.name}: embedding",
                compare_to=compare_to,
                previews=bool(args.modes),
            )
            break
        except EvaluationError as error:
            _skip_failed_batch(found, source.current, error, args.on_error, world_size, skipped)
    all_skipped = [item for part in distributed.all_gather_objects(skipped) for item in part]
    all_skipped = list(dict.fromkeys(map(tuple, all_skipped)))
    metrics = {
        key.split("/", 1)[1]: value
        for key, value in result.scalars.items()
        if not key.endswith("/eval_seconds")
    }
    return RunScore(
        name=found.name,
        path=str(found.path),
        source=found.source,
        num_images=sum(distributed.all_gather_objects(result.num_samples)),
        metrics=metrics,
        prompts=list(found.prompts),
        counts=_counts(found, excluded={path for path, _ in all_skipped}),
        per_prompt={key: column.tolist() for key, column in result.per_condition.items()},
        skipped=[tuple(item) for item in all_skipped],
        seconds=result.scalars[f"{evaluator.prefix}/eval_seconds"],
        files=_files_by_prompt(found),
        copies=result.copies,
        evaluation=result if args.modes else None,
    )


def _skip_failed_batch(
    found: Run,
    files: list[str],
    error: Exception,
    on_error: str,
    world_size: int,
    skipped: list[tuple[str, str]],
) -> None:
    """Name the image files of a batch that failed to embed (one process); with
    ``--on-error skip``, leave them out of ``found`` so that the run is scored again without
    them."""
    from diversity_callbacks.evaluation.errors import EvaluationError

    # Not a batch of images (reading, an embeddings file, the metrics' compute), or another
    # process's batch may have failed: this one's files would be the wrong ones.
    if not files or world_size > 1:
        raise error
    shown = ", ".join(repr(Path(file).name) for file in files[:8])
    more = f" and {len(files) - 8} more" if len(files) > 8 else ""
    named = f"run {found.name!r}: {error} (the batch's images: {shown}{more})"
    if on_error != "skip":
        raise EvaluationError(named + "; pass --on-error skip to leave them out") from error
    reason = f"its batch failed to embed: {error}"
    found.skipped = skipped + [(file, reason) for file in files]
    for file in files:
        warn_skipped(found.name, file, reason)
    left_out = {path for path, _ in found.skipped}
    kept = [i for i, file in enumerate(found.files) if str(file) not in left_out]
    if not kept:
        raise EvaluationError(f"run {found.name!r}: no image left to score; {error}") from error
    if found.condition_ids:
        found.condition_ids = [found.condition_ids[i] for i in kept]
    found.files = [found.files[i] for i in kept]


def _counts(found: Run, excluded: set[str] | frozenset[str] = frozenset()) -> list[int]:
    """Samples per prompt, leaving out the ``excluded`` image files."""
    counts = [0] * len(found.prompts)
    if not found.prompts:
        return counts
    files = [str(file) for file in found.files] or [""] * len(found.condition_ids)
    for file, condition in zip(files, found.condition_ids, strict=True):
        if file not in excluded:
            counts[condition] += 1
    return counts


def _files_by_prompt(found: Run) -> dict[int, list[str]]:
    """The image files of each prompt number (all under 0 without prompts), for ``--grids``."""
    files: dict[int, list[str]] = {}
    if found.is_embeddings:
        return files
    ids = found.condition_ids or [0] * len(found.files)
    for file, condition in zip(found.files, ids, strict=True):
        files.setdefault(condition, []).append(str(file))
    return files


def _image_source(
    found: Run,
    embedder: Any,
    args: argparse.Namespace,
    rank: int,
    world_size: int,
    skipped: list[tuple[str, str]],
) -> _Source:
    """This rank's share of a folder's images, decoded in DataLoader workers."""
    from diversity_callbacks.cli.loading import image_batches

    current: list[str] = []
    share = _share(len(found.files), rank, world_size)
    ids = found.condition_ids or [0] * len(found.files)
    batches = image_batches(
        found.files[share.start : share.stop],
        ids[share.start : share.stop],
        batch_size=args.batch_size,
        workers=decoding_workers(args.workers, len(share)),
        skip=args.on_error == "skip",
        skipped=skipped,
        conditional=bool(found.prompts),
        run=found.name,
        current=current,
    )
    total = math.ceil(len(share) / args.batch_size)  # one more per extra image size
    return _Source(batches, embedder, "uint8", len(found.files), total, current)


def build_evaluator(
    prompts: Sequence[str],
    counts: Sequence[int],
    embedder: Any,
    value_range: str | None,
    args: argparse.Namespace,
) -> Any:
    """The :class:`~diversity_callbacks.DiversityEvaluator` of one run, from the options.

    ``--per-prompt``, ``--sce`` and ``--clip-score`` ``auto`` turn the metric on where it is
    defined: prompts, a prompt with two or more images (not for CLIPScore), and (SCE, CLIPScore)
    an embedder with ``embed_texts``.
    """
    from diversity_callbacks.evaluation.evaluator import DiversityEvaluator
    from diversity_callbacks.evaluation.samples import SampleEmbedder

    repeated = any(count >= 2 for count in counts)
    texts = SampleEmbedder(value_range, embedder).embeds_texts
    per_condition = _switch(
        args.per_prompt,
        "--per-prompt",
        [
            ("prompts (none were found)", bool(prompts)),
            ("a prompt with 2 or more images", repeated),
        ],
    )
    sce = _switch(
        args.sce,
        "--sce",
        [
            ("prompts (none were found)", bool(prompts)),
            ("a prompt with 2 or more images", repeated),
            (_TEXT_EMBEDDER, texts),
        ],
    )
    clip_score = _switch(
        args.clip_score,
        "--clip-score",
        [("prompts (none were found)", bool(prompts)), (_TEXT_EMBEDDER, texts)],
    )
    sce_kwargs = {
        key: value
        for key, value in (
            ("kernel", args.sce_kernel),
            ("sigma", args.sce_sigma),
            ("num_features", args.sce_num_features),
        )
        if value is not None
    }
    options: dict[str, Any] = {
        "embedder": embedder,
        "value_range": value_range,
        "batch_size": args.batch_size,
        "modes": args.modes or 0,
        "vendi_orders": list(args.vendi_orders),
        "vendi_kernel": args.vendi_kernel,
        "vendi_sigma": args.vendi_sigma,
        "vendi_num_features": args.vendi_num_features,
        "sce_kwargs": sce_kwargs,
        "clip_score": clip_score,
        **_reference_options(args, value_range),
        **{
            name: _switch(
                choice,
                f"--{name.replace('_', '-')}",
                [
                    ("prompts (none were found)", bool(prompts)),
                    (_TEXT_EMBEDDER, texts),
                    ("--vendi-kernel cosine or gaussian", args.vendi_kernel != "linear"),
                ],
            )
            for name, choice in (("cond_vendi", args.cond_vendi), ("info_vendi", args.info_vendi))
        },
    }
    try:
        if prompts:
            return DiversityEvaluator(
                list(prompts),
                samples_per_condition=2,
                per_condition=per_condition,
                sce=sce,
                **options,
            )
        return DiversityEvaluator(num_samples=1, per_condition=False, sce=False, **options)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error


def _reference_options(args: argparse.Namespace, value_range: str | None) -> dict[str, Any]:
    """The evaluator's ``reference=`` and threshold from ``--reference``; a folder of training
    images needs an image run (an embeddings run has no image embedder to embed them with)."""
    if not args.reference:
        return {}
    if value_range is None and Path(args.reference).is_dir():
        raise InputError(
            f"--reference {args.reference!r} is a folder of images, but the run is a file of "
            "embeddings, which has no image embedder: give --reference the training set's "
            "embeddings (.pt/.npy) made by the same embedder"
        )
    return {
        "reference": args.reference,
        "memorization_kwargs": {"threshold": args.copy_threshold},
    }


def check_kernel_memory(args: argparse.Namespace, found: Run, rows: int) -> None:
    """Refuse the exact Gaussian kernel when its n x n matrices would exceed the limit."""
    if args.vendi_kernel != "gaussian" or args.vendi_num_features is not None:
        return
    needed = KERNEL_COPIES * 8 * rows * rows
    if needed > args.max_kernel_memory * GIB:
        raise InputError(
            f"run {found.name!r}: the exact Gaussian kernel of {rows:,} images needs about "
            f"{needed / GIB:,.1f} GiB ({KERNEL_COPIES} float64 {rows:,} x {rows:,} matrices), "
            f"above --max-kernel-memory {args.max_kernel_memory:g} GiB. Stream instead with "
            "random Fourier features (--vendi-num-features 4096: a D x D state whatever the "
            "number of images) or the cosine kernel (--vendi-kernel cosine), or raise "
            "--max-kernel-memory if the machine has the memory"
        )


def _embedding_source(found: Run, batch_size: int, rank: int, world_size: int) -> _Source:
    """This rank's share of an embeddings file; sets the run's prompts from the file."""
    from diversity_callbacks.cli.loading import PromptTable, Rows, load_embeddings

    data = load_embeddings(found.path)
    embeddings = data["embeddings"]
    if data["prompts"] is not None:
        numbers: dict[str, int] = {}
        found.condition_ids = [numbers.setdefault(p, len(numbers)) for p in data["prompts"]]
        found.prompts = list(numbers)
    if data["text_embeddings"] is not None:
        where = f"embeddings file {str(found.path)!r}"
        embedder: Any = PromptTable(data["prompts"], data["text_embeddings"], where)
    else:
        embedder = Rows()
    share = _share(embeddings.shape[0], rank, world_size)
    ids = torch.tensor(found.condition_ids, dtype=torch.long) if found.condition_ids else None

    def batches() -> Iterator[Any]:
        for start in range(share.start, share.stop, batch_size):
            stop = min(start + batch_size, share.stop)
            yield embeddings[start:stop], None if ids is None else ids[start:stop]

    total = math.ceil(len(share) / batch_size)
    return _Source(batches(), embedder, None, embeddings.shape[0], total)


_TEXT_EMBEDDER = (
    "an embedder of prompts (embed_texts; for embeddings files, a 'text_embeddings' key)"
)


def _switch(choice: str, flag: str, needs: list[tuple[str, bool]]) -> bool:
    missing = [need for need, holds in needs if not holds]
    if choice == "on" and missing:
        raise InputError(f"{flag} on needs {' and '.join(missing)}")
    return choice != "off" and not missing


def _share(total: int, rank: int, world_size: int) -> range:
    """This rank's contiguous share; no padding, possibly empty (as the evaluator's sets)."""
    return range(rank * total // world_size, (rank + 1) * total // world_size)


def _image_embedder(args: argparse.Namespace, device: torch.device) -> Any:
    from diversity_callbacks.cli.embedders import clip_embedder, import_embedder

    if args.embedder:
        embedder = import_embedder(args.embedder)
        if isinstance(embedder, torch.nn.Module):
            embedder.to(device)
        return embedder
    return clip_embedder(
        args.model,
        args.pretrained,
        device=device,
        precision=args.precision,
        batch_size=args.batch_size,
        model_config=args.model_config,
    )


def _launch(args: argparse.Namespace) -> torch.device:
    """Start the processes (``--devices``, ``--num-nodes``, or under ``torchrun``); this one's
    device."""
    accelerator = args.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ
    if args.devices == 1 and args.num_nodes == 1 and not torchrun:
        return torch.device("cuda" if accelerator == "cuda" else "cpu")
    from lightning.fabric import Fabric

    devices = int(os.environ.get("LOCAL_WORLD_SIZE", args.devices)) if torchrun else args.devices
    nodes = int(os.environ["WORLD_SIZE"]) // devices if torchrun else args.num_nodes
    if accelerator == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp")
    fabric.launch()
    return fabric.device


def _bar(items: Sequence[Any], description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False, disable=None if enabled else True)
