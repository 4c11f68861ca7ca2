"""The options of ``diversity-callbacks score``, kept apart from the scoring so that the command
line parses (and ``--help`` answers) before torch, torchmetrics or Lightning are imported."""

from __future__ import annotations

import argparse
import math
import os

from diversity_callbacks.cli.discovery import PROMPT_SOURCES

DEFAULT_COPY_THRESHOLD = 0.95
"""MemorizationScore's default threshold, written here so that ``--help`` imports no torch
(a test keeps the two equal)."""


WORKERS_FROM = 1000
"""Images per process from which ``--workers`` defaults to worker processes. Below it, starting
the workers and sharing the cores with them costs more than decoding in the main process saves
(500 small images: 0.63 of the bare embedder with 2 workers, 0.98 without; docs/performance.md)."""

MAX_WORKERS = 4
"""The most decoding processes ``--workers`` defaults to (never more than the CPUs)."""


def decoding_workers(requested: int | None, images: int) -> int:
    """The DataLoader workers decoding ``images`` files: ``--workers`` when given, else none
    below :data:`WORKERS_FROM` images and up to :data:`MAX_WORKERS` (the CPU count) above.

    Examples:
        >>> decoding_workers(None, 500), decoding_workers(3, 500)
        (0, 3)
    """
    if requested is not None:
        return requested
    return 0 if images < WORKERS_FROM else min(MAX_WORKERS, os.cpu_count() or 1)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, where it has one that says something (not
    ``None``, not a switch's ``False``, not one the help text already names)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


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
        "these that applies, with a warning when another one almost applies",
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
        "--model-config",
        help="JSON of open_clip config overrides (embed_dim, vision_cfg...); with --model only",
    )
    embedding.add_argument(
        "--embedder",
        help="module:attribute or file.py:attribute of your own embedder (an object with "
        "embed_images, a class building one, or a function of (B, 3, H, W) floats in [0, 1]); "
        "replaces --model",
    )
    embedding.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="model precision"
    )
    embedding.add_argument("--batch-size", type=_positive_int, default=64, help="images per batch")
    embedding.add_argument(
        "--workers",
        type=_non_negative_int,
        help="DataLoader processes decoding images (0: decode in the main process); default: "
        f"none for a share of fewer than {WORKERS_FROM} images, up to {MAX_WORKERS} above",
    )
    metrics = parser.add_argument_group("metrics (as DiversityEvaluator's options)")
    metrics.add_argument(
        "--vendi-orders",
        nargs="+",
        type=_order,
        default=[1.0, 2.0],
        help="orders q (numbers >= 0 or inf)",
    )
    metrics.add_argument(
        "--vendi-kernel",
        choices=("cosine", "linear", "gaussian"),
        default="cosine",
        help="kernel of the Vendi scores",
    )
    metrics.add_argument(
        "--vendi-sigma", type=_positive_float, help="bandwidth of the Gaussian kernel"
    )
    metrics.add_argument(
        "--vendi-num-features",
        type=_positive_int,
        help="random Fourier features for the Gaussian kernel (streams; exact without)",
    )
    metrics.add_argument(
        "--per-prompt",
        choices=("auto", "on", "off"),
        default="auto",
        help="per-prompt Vendi score (each prompt's own, averaged over prompts); auto: with prompts "
        "and a prompt with 2+ images",
    )
    metrics.add_argument(
        "--sce",
        choices=("auto", "on", "off"),
        default="auto",
        help="Schur complement entropy and its text part; auto: with prompts, an embedder of "
        "prompts, and a prompt with 2+ images",
    )
    metrics.add_argument(
        "--clip-score",
        choices=("auto", "on", "off"),
        default="auto",
        help="CLIPScore of each image against its prompt (100 * max(cos, 0)), per prompt too; "
        "auto: with prompts and an embedder of prompts",
    )
    for flag, score in (("cond-vendi", "Conditional-Vendi"), ("info-vendi", "Information-Vendi")):
        metrics.add_argument(
            f"--{flag}",
            choices=("auto", "on", "off"),
            default="auto",
            help=f"the published {score} score (arXiv 2411.02817); auto: with prompts and an "
            "embedder of prompts (for embeddings files, a 'text_embeddings' key)",
        )
    metrics.add_argument(
        "--sce-kernel",
        choices=("cosine", "linear", "gaussian"),
        help="kernel of the Schur complement entropy (None: its own default)",
    )
    metrics.add_argument(
        "--sce-sigma", type=_positive_float, help="bandwidth of the SCE's Gaussian kernel"
    )
    metrics.add_argument(
        "--sce-num-features", type=_positive_int, help="random Fourier features of the SCE"
    )
    metrics.add_argument(
        "--max-kernel-memory",
        type=_positive_float,
        default=8.0,
        metavar="GIB",
        help="refuse the exact Gaussian kernel when it would need more than this",
    )
    memorization = parser.add_argument_group("memorization against training data")
    memorization.add_argument(
        "--reference",
        metavar="FOLDER",
        help="training images (a folder) or their embeddings (.pt/.npy): adds copy_rate, "
        "nn_similarity_*, l2_memorization and authenticity, and with --plot a grid of the "
        "most-copied images beside their nearest training image",
    )
    memorization.add_argument(
        "--copy-threshold",
        type=float,
        default=DEFAULT_COPY_THRESHOLD,
        metavar="COS",
        help="nearest-neighbour cosine similarity from which an image counts as a copy",
    )
    metrics.add_argument(
        "--modes",
        type=_positive_int,
        metavar="K",
        help="with --plot: write the K leading modes of each run (a grid per mode) and the "
        "modes of the first run lost and gained in each other run, under DIR/<run>/modes/",
    )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--json", metavar="FILE", help="write every score (and per prompt); '-': standard output"
    )
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
        help="an unreadable image, one without a prompt or one whose embedding fails: stop, "
        "or skip it with a warning",
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


def _positive_int(text: str) -> int:
    value = int(text)  # argparse names the flag for the ValueError of a non-integer
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):  # NaN would disable every comparison
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _order(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"takes numbers >= 0 or inf, got {text!r}")
    return value
