"""``diversity-callbacks score``: the diversity of folders of images (or embeddings), side by side.

Each run (a folder or an embeddings file) is scored by
:func:`~diversity_callbacks.evaluation.existing.evaluate_existing` with a
:class:`~diversity_callbacks.DiversityEvaluator` built from the options, exactly as a Python loop
would; this module only finds the files, splits them over the processes and hands the scores
to :mod:`~diversity_callbacks.cli.output`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from diversity_callbacks.cli import output
from diversity_callbacks.cli.discovery import Run, discover, run_names, warn_skipped
from diversity_callbacks.cli.embedders import image_embedder
from diversity_callbacks.cli.errors import InputError
from diversity_callbacks.cli.metrics import build_evaluator, check_kernel_memory
from diversity_callbacks.cli.options import ScaleOptions, ScoreOptions
from diversity_callbacks.cli.results import RunScore
from diversity_callbacks.cli.sources import Source, read_source
from diversity_callbacks.evaluation.errors import EvaluationError
from diversity_callbacks.evaluation.existing import evaluate_existing, per_condition_counts
from diversity_callbacks.evaluation.results import TIMING_KEY
from diversity_callbacks.utilities import distributed


def run(options: ScoreOptions) -> int:
    """Score every run; print the table and write the outputs on rank 0."""
    check_inputs(options)
    device = launch(options.scale)
    rank, _ = distributed.rank_and_world_size()
    progress = not options.outputs.no_progress and rank == 0
    runs = find_runs(options, progress)
    embedder = None
    scores: list[RunScore] = []
    for found in runs:
        if not found.is_embeddings and embedder is None:
            embedder = image_embedder(options.embedder, device)
        # --modes: every run after the first is compared with the first (lost, gained modes)
        first = scores[0].evaluation if scores else None
        scorer = None if found.is_embeddings else embedder
        scores.append(score_run(found, scorer, options, device, progress, first))
    if rank == 0:
        output.write_all(scores, options)
    return 0


def check_inputs(options: ScoreOptions) -> None:
    """Refuse a missing reference and unusable outputs before any work."""
    reference = options.metrics.reference
    if reference and not Path(reference).exists():
        raise InputError(f"--reference {reference!r} does not exist")
    if options.outputs.plot:
        output.require_matplotlib()
    output.check_output_paths(options.outputs)


def find_runs(options: ScoreOptions, progress: bool) -> list[Run]:
    """Every run's images and prompts (the command's own outputs left out); rank 0 warns of the
    images left out."""
    names = run_names(options.runs, options.names)
    exclude = output.output_paths(options.outputs)
    runs = [
        discover(
            path,
            name,
            options.prompts.prompts,
            options.prompts.manifest,
            options.scale.on_error,
            exclude=exclude,
        )
        for path, name in zip(_bar(options.runs, "finding images", progress), names, strict=True)
    ]
    if distributed.rank_and_world_size()[0] == 0:
        for found in runs:
            for path, reason in found.skipped:
                warn_skipped(found.name, path, reason)
    return runs


def score_run(
    found: Run,
    image_embedder: Any,
    options: ScoreOptions,
    device: torch.device,
    progress: bool,
    compare_to: Any = None,
) -> RunScore:
    """Score one run on this rank's share of it (a collective: every rank calls it); with
    ``--modes``, also its modes lost and gained since ``compare_to`` (the first run's result)."""
    while True:  # again without a batch that failed to embed (--on-error skip)
        source = read_source(found, image_embedder, options.embedder, options.scale)
        found = source.run
        check_kernel_memory(options.metrics, found.name, source.rows)
        evaluator = build_evaluator(
            found.prompts,
            _counts(found) or [source.rows],
            source.embedder,
            source.value_range,
            options.metrics,
            options.embedder.batch_size,
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
                previews=bool(options.metrics.modes),
            )
            break
        except EvaluationError as error:
            found = without_failed_batch(source, error, options.scale)
    return _run_score(source, result, evaluator, keep=bool(options.metrics.modes))


def _run_score(source: Source, result: Any, evaluator: Any, keep: bool) -> RunScore:
    """What the outputs show of one run's result (every rank's skipped images gathered), its
    scores in the order the metrics declare them."""
    found = source.run
    gathered = [item for part in distributed.all_gather_objects(source.skipped) for item in part]
    skipped = list(dict.fromkeys(map(tuple, gathered)))
    timing = evaluator.key(TIMING_KEY)
    start = len(evaluator.key(""))  # the names as the metrics declare them, after the prefix
    # In the metrics' declared order; a key no metric declares (none today) is kept, last.
    keys = dict.fromkeys([*evaluator.result_keys(), *result.scalars])
    metrics = {key[start:]: result.scalars[key] for key in keys if key in result.scalars}
    del metrics[TIMING_KEY]
    return RunScore(
        name=found.name,
        path=str(found.path),
        source=found.source,
        num_images=sum(distributed.all_gather_objects(result.num_samples)),
        metrics=metrics,
        prompts=list(found.prompts),
        counts=_counts(found, excluded={path for path, _ in skipped}),
        per_prompt={key: column.tolist() for key, column in result.per_condition.items()},
        skipped=[tuple(item) for item in skipped],
        seconds=result.scalars[timing],
        files=_files_by_prompt(found),
        copies=result.copies,
        evaluation=result if keep else None,
    )


def without_failed_batch(source: Source, error: Exception, scale: ScaleOptions) -> Run:
    """The run without the image files of a batch that failed to embed (one process,
    ``--on-error skip``), to be scored again; otherwise the error, naming the batch's files."""
    found, files = source.run, list(source.current)
    # Not a batch of images (reading, an embeddings file, the metrics' compute), or another
    # process's batch may have failed: this one's files would be the wrong ones.
    if not files or distributed.rank_and_world_size()[1] > 1:
        raise error
    shown = ", ".join(repr(Path(file).name) for file in files[:8])
    more = f" and {len(files) - 8} more" if len(files) > 8 else ""
    named = f"run {found.name!r}: {error} (the batch's images: {shown}{more})"
    if not scale.skip:
        raise EvaluationError(named + "; pass --on-error skip to leave them out") from error
    reason = f"its batch failed to embed: {error}"
    skipped = source.skipped + [(file, reason) for file in files]
    for file in files:
        warn_skipped(found.name, file, reason)
    left_out = {path for path, _ in skipped}
    kept = [i for i, file in enumerate(found.files) if str(file) not in left_out]
    if not kept:
        raise EvaluationError(f"run {found.name!r}: no image left to score; {error}") from error
    return dataclasses.replace(
        found,
        files=[found.files[i] for i in kept],
        condition_ids=[found.condition_ids[i] for i in kept] if found.condition_ids else [],
        skipped=skipped,
    )


def _counts(found: Run, excluded: set[str] | frozenset[str] = frozenset()) -> list[int]:
    """Samples per prompt, leaving out the ``excluded`` image files."""
    if not found.prompts:
        return []
    files = [str(file) for file in found.files] or [""] * len(found.condition_ids)
    kept = [c for file, c in zip(files, found.condition_ids, strict=True) if file not in excluded]
    return per_condition_counts(kept, len(found.prompts))


def _files_by_prompt(found: Run) -> dict[int, list[str]]:
    """The image files of each prompt number (all under 0 without prompts), for ``--grids``."""
    files: dict[int, list[str]] = {}
    if found.is_embeddings:
        return files
    ids = found.condition_ids or [0] * len(found.files)
    for file, condition in zip(found.files, ids, strict=True):
        files.setdefault(condition, []).append(str(file))
    return files


def launch(scale: ScaleOptions) -> torch.device:
    """Start the processes (``--devices``, ``--num-nodes``, or under ``torchrun``); this one's
    device."""
    accelerator = scale.accelerator
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ
    if scale.devices == 1 and scale.num_nodes == 1 and not torchrun:
        return torch.device("cuda" if accelerator == "cuda" else "cpu")
    from lightning.fabric import Fabric

    devices = int(os.environ.get("LOCAL_WORLD_SIZE", scale.devices)) if torchrun else scale.devices
    nodes = int(os.environ["WORLD_SIZE"]) // devices if torchrun else scale.num_nodes
    if accelerator == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp")
    fabric.launch()
    return fabric.device


def _bar(items: Sequence[Any], description: str, enabled: bool) -> Any:
    from diversity_callbacks.utilities.progress import progress_bar

    return progress_bar(items, description=description, enabled=enabled)
