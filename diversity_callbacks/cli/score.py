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
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from diversity_callbacks.cli.discovery import (
    PROMPT_SOURCES,
    InputError,
    Run,
    discover,
    run_names,
)
from diversity_callbacks.evaluation import _distributed

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
        metrics: ``{"vendi_q1": ..., "conditional_vendi_q1": ..., "sce": ..., ...}``.
        prompts: the run's distinct prompts.
        counts: samples scored per prompt.
        per_prompt: per-prompt columns (``"vendi_q1"``...), one value per prompt.
        skipped: ``(path, reason)`` of every image left out.
        seconds: wall seconds of reading, embedding and computing.
        files: the run's image files by prompt number (for ``--grids``).
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``score``."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a folder of images (PNG, JPEG, WebP; searched recursively) or an embeddings file "
        "(.pt, .npy); each one is a run to compare",
    )
    parser.add_argument("--names", nargs="+", help="names of the runs (default: folder names)")
    inputs = parser.add_argument_group("prompts")
    inputs.add_argument(
        "--prompts",
        choices=PROMPT_SOURCES,
        default="auto",
        help="where each image's prompt comes from: a manifest (prompts.csv / prompts.jsonl), "
        "a sidecar .txt per image, one sub-folder per prompt, or none; auto: the first of "
        "these that applies (default)",
    )
    inputs.add_argument(
        "--manifest",
        help="manifest file (CSV with columns file,prompt or JSONL with keys file, prompt), "
        "relative to each run folder or a path",
    )
    embedding = parser.add_argument_group("embedder")
    embedding.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    embedding.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip tag, local weights file, or 'none' for random weights",
    )
    embedding.add_argument(
        "--model-config", help="JSON of open_clip config overrides (embed_dim, vision_cfg...)"
    )
    embedding.add_argument(
        "--embedder",
        help="module:attribute or file.py:attribute of your own embedder (an object with "
        "embed_images, a class building one, or a function of (B, 3, H, W) floats in [0, 1]); "
        "replaces --model",
    )
    embedding.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    embedding.add_argument("--batch-size", type=_positive_int, default=64, help="images per batch")
    embedding.add_argument(
        "--workers",
        type=_non_negative_int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader processes decoding images (0: decode in the main process)",
    )
    metrics = parser.add_argument_group("metrics (as DiversityEvaluator's options)")
    metrics.add_argument(
        "--vendi-orders", nargs="+", default=["1", "2"], help="orders q (numbers or inf)"
    )
    metrics.add_argument(
        "--vendi-kernel", choices=("cosine", "linear", "gaussian"), default="cosine"
    )
    metrics.add_argument("--vendi-sigma", type=float, help="bandwidth of the Gaussian kernel")
    metrics.add_argument(
        "--vendi-num-features",
        type=_positive_int,
        help="random Fourier features for the Gaussian kernel (streams; exact without)",
    )
    metrics.add_argument(
        "--per-prompt",
        choices=("auto", "on", "off"),
        default="auto",
        help="per-prompt (conditional) Vendi score, averaged over prompts; auto: with prompts "
        "and a prompt with 2+ images",
    )
    metrics.add_argument(
        "--sce",
        choices=("auto", "on", "off"),
        default="auto",
        help="Schur complement entropy and its text part; auto: with prompts, an embedder of "
        "prompts, and a prompt with 2+ images",
    )
    for flag, score in (("cond-vendi", "Conditional-Vendi"), ("info-vendi", "Information-Vendi")):
        metrics.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"the published {score} score (arXiv 2411.02817); default: with prompts and an "
            "embedder of prompts (embed_texts; for embeddings files, a 'text_embeddings' key)",
        )
    metrics.add_argument("--sce-kernel", choices=("cosine", "linear", "gaussian"), default=None)
    metrics.add_argument("--sce-sigma", type=float)
    metrics.add_argument("--sce-num-features", type=_positive_int)
    metrics.add_argument(
        "--max-kernel-memory",
        type=float,
        default=8.0,
        metavar="GIB",
        help="refuse the exact Gaussian kernel when it would need more than this (default 8)",
    )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--json", metavar="FILE", help="write every score (and per prompt)")
    outputs.add_argument("--csv", metavar="FILE", help="write one row per run")
    outputs.add_argument(
        "--plot", metavar="DIR", help="write PNG charts (needs diversity-callbacks[plot])"
    )
    outputs.add_argument(
        "--grids", action="store_true", help="with --plot: a sample grid per run and prompt"
    )
    outputs.add_argument("--no-progress", action="store_true", help="no progress bars")
    errors = parser.add_argument_group("errors and scale")
    errors.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="an unreadable image or one without a prompt: stop (default) or skip with a warning",
    )
    errors.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        help="processes on this machine (Lightning Fabric DDP; gloo on CPU, NCCL on GPUs)",
    )
    errors.add_argument("--num-nodes", type=_positive_int, default=1, help="machines")
    errors.add_argument(
        "--accelerator", choices=("auto", "cpu", "cuda"), default="auto", help="where to embed"
    )


def run(args: argparse.Namespace) -> int:
    """Score every run; print the table and write the outputs on rank 0."""
    if args.grids and not args.plot:
        raise InputError("--grids needs --plot DIR (the folder the grids are written to)")
    if args.plot:
        from diversity_callbacks.cli.output import require_matplotlib

        require_matplotlib()
    device = _launch(args)
    rank, world_size = _distributed.rank_and_world_size()
    progress = not args.no_progress and rank == 0
    names = run_names(args.runs, args.names)
    runs = [
        discover(path, name, args.prompts, args.manifest, args.on_error)
        for path, name in zip(_bar(args.runs, "finding images", progress), names, strict=True)
    ]
    for found in runs:
        for path, reason in found.skipped:
            if rank == 0:
                _warn(f"run {found.name!r}: skipped {path}: {reason}")
    image_embedder = None
    scores = []
    for found in runs:
        embedder = None
        if not found.is_embeddings:
            if image_embedder is None:
                image_embedder = _image_embedder(args, device)
            embedder = image_embedder
        scores.append(score_run(found, embedder, args, device, rank, world_size, progress))
    if rank == 0:
        from diversity_callbacks.cli import output

        print(output.table(scores))
        if args.json:
            output.write_json(scores, args.json, vars(args))
        if args.csv:
            output.write_csv(scores, args.csv)
        if args.plot:
            written = output.write_plots(scores, args.plot, grids=args.grids)
            print(f"plots: {', '.join(written)}")
    return 0


@dataclass
class _Source:
    """This rank's batches of one run, and how the evaluator reads them."""

    batches: Iterator[Any]
    embedder: Any
    value_range: str | None
    rows: int  # in the whole run, every rank's
    total: int  # this rank's batches, for the progress bar


def score_run(
    found: Run,
    image_embedder: Any,
    args: argparse.Namespace,
    device: torch.device,
    rank: int,
    world_size: int,
    progress: bool,
) -> RunScore:
    """Score one run on this rank's share of it (a collective: every rank calls it)."""
    from diversity_callbacks.evaluation.existing import evaluate_existing

    skipped: list[tuple[str, str]] = list(found.skipped)
    if found.is_embeddings:
        source = _embedding_source(found, args.batch_size, rank, world_size)
    else:
        source = _image_source(found, image_embedder, args, rank, world_size, skipped)
    check_kernel_memory(args, found, source.rows)
    evaluator = build_evaluator(
        found.prompts, _counts(found), source.embedder, source.value_range, args
    )
    result = evaluate_existing(
        evaluator,
        source.batches,
        device=device,
        progress=progress,
        total=source.total,
        description=f"{found.name}: embedding",
    )
    all_skipped = [item for part in _distributed.all_gather_objects(skipped) for item in part]
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
        num_images=sum(_distributed.all_gather_objects(result.num_samples)),
        metrics=metrics,
        prompts=list(found.prompts),
        counts=_counts(found, excluded={path for path, _ in all_skipped}),
        per_prompt={key: column.tolist() for key, column in result.per_condition.items()},
        skipped=[tuple(item) for item in all_skipped],
        seconds=result.scalars[f"{evaluator.prefix}/eval_seconds"],
        files=_files_by_prompt(found),
    )


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

    share = _share(len(found.files), rank, world_size)
    ids = found.condition_ids or [0] * len(found.files)
    batches = image_batches(
        found.files[share.start : share.stop],
        ids[share.start : share.stop],
        batch_size=args.batch_size,
        workers=args.workers,
        skip=args.on_error == "skip",
        skipped=skipped,
        conditional=bool(found.prompts),
    )
    total = math.ceil(len(share) / args.batch_size)  # one more per extra image size
    return _Source(batches, embedder, "uint8", len(found.files), total)


def build_evaluator(
    prompts: Sequence[str],
    counts: Sequence[int],
    embedder: Any,
    value_range: str | None,
    args: argparse.Namespace,
) -> Any:
    """The :class:`~diversity_callbacks.DiversityEvaluator` of one run, from the options.

    ``--per-prompt`` and ``--sce`` ``auto`` turn the metric on where it is defined: prompts, a
    prompt with two or more images, and (SCE) an embedder with ``embed_texts``.
    """
    from diversity_callbacks.evaluation.evaluator import DiversityEvaluator
    from diversity_callbacks.evaluation.samples import SampleEmbedder

    repeated = any(count >= 2 for count in counts)
    texts = SampleEmbedder(value_range, embedder).embeds_texts
    conditional = _switch(
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
            (
                "an embedder of prompts (embed_texts; for embeddings files, a "
                "'text_embeddings' key)",
                texts,
            ),
        ],
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
        "vendi_orders": [_order(q) for q in args.vendi_orders],
        "vendi_kernel": args.vendi_kernel,
        "vendi_sigma": args.vendi_sigma,
        "vendi_num_features": args.vendi_num_features,
        "sce_kwargs": sce_kwargs,
        "cond_vendi": args.cond_vendi,
        "info_vendi": args.info_vendi,
    }
    try:
        if prompts:
            return DiversityEvaluator(
                list(prompts), samples_per_condition=2, conditional=conditional, sce=sce, **options
            )
        return DiversityEvaluator(num_samples=1, conditional=False, sce=False, **options)
    except (TypeError, ValueError) as error:
        raise InputError(str(error)) from error


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


def _switch(choice: str, flag: str, needs: list[tuple[str, bool]]) -> bool:
    missing = [need for need, holds in needs if not holds]
    if choice == "on" and missing:
        raise InputError(f"{flag} on needs {' and '.join(missing)}")
    return choice != "off" and not missing


def _order(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--vendi-orders takes numbers >= 0 or inf, got {text!r}") from None


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


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value
