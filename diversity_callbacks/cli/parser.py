"""The argparse builder of ``diversity-callbacks score``: one function per option group, in the
order ``--help`` lists them. Parsing imports no torch; the parsed options become a
:class:`~diversity_callbacks.cli.options.ScoreOptions` at the entry point."""

from __future__ import annotations

import argparse
import math

from diversity_callbacks.cli.discovery import PROMPT_SOURCES
from diversity_callbacks.cli.options import (
    DEFAULT_COPY_THRESHOLD,
    DEFAULT_KERNEL,
    KERNEL_NAMES,
    MAX_WORKERS,
    WORKERS_FROM,
)

SWITCH = ("auto", "on", "off")
"""The choices of a metric that is on where it is defined (``auto``), required, or off."""

KERNEL_HELP = (
    f"{'|'.join(KERNEL_NAMES)}, with settings after ':' (sigma=S: the Gaussian bandwidth; "
    "features=M: random Fourier features, which stream, exact without; seed=N), e.g. "
    "gaussian:sigma=3.5,features=2048"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, where it has one that says something (not
    ``None``, not a switch's ``False``, not one the help text already names)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``score``, group by group."""
    add_run_arguments(parser)
    add_prompt_arguments(parser.add_argument_group("prompts"))
    add_embedder_arguments(parser.add_argument_group("embedder"))
    metrics = parser.add_argument_group("metrics (as DiversityEvaluator's options)")
    add_vendi_arguments(metrics)
    add_metric_switches(metrics)
    add_sce_arguments(metrics)
    add_memorization_arguments(parser.add_argument_group("memorization against training data"))
    add_mode_arguments(metrics)
    add_output_arguments(parser.add_argument_group("outputs"))
    add_scale_arguments(parser.add_argument_group("errors and scale"))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The runs and their names."""
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a folder of images (PNG, JPEG, WebP; searched recursively) or an embeddings file "
        "(.pt, .npy); each one is a run to compare",
    )
    parser.add_argument("--names", nargs="+", help="names of the runs (default: folder names)")


def add_prompt_arguments(group: argparse._ArgumentGroup) -> None:
    """Where each image's prompt comes from."""
    group.add_argument(
        "--prompts",
        choices=PROMPT_SOURCES,
        default="auto",
        help="where each image's prompt comes from: a manifest (prompts.csv / prompts.jsonl), "
        "a sidecar .txt per image, one sub-folder per prompt, or none; auto: the first of "
        "these that applies, with a warning when another one almost applies",
    )
    group.add_argument(
        "--manifest",
        help="manifest file (CSV with columns file,prompt or JSONL with keys file, prompt), "
        "relative to each run folder or a path",
    )


def add_embedder_arguments(group: argparse._ArgumentGroup) -> None:
    """The image embedder, its precision, and how images reach it."""
    group.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    group.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip tag, local weights file, or 'none' for random weights",
    )
    group.add_argument(
        "--model-config",
        help="JSON of open_clip config overrides (embed_dim, vision_cfg...); with --model only",
    )
    group.add_argument(
        "--embedder",
        help="module:attribute or file.py:attribute of your own embedder (an object with "
        "embed_images, a class building one, or a function of (B, 3, H, W) floats in [0, 1]); "
        "replaces --model",
    )
    group.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32", help="model precision"
    )
    group.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    group.add_argument(
        "--workers",
        type=non_negative_int,
        help="DataLoader processes decoding images (0: decode in the main process); default: "
        f"none for a share of fewer than {WORKERS_FROM} images, up to {MAX_WORKERS} above",
    )


def add_vendi_arguments(group: argparse._ArgumentGroup) -> None:
    """The Vendi scores' orders and kernel."""
    group.add_argument(
        "--vendi-orders",
        nargs="+",
        type=order,
        default=[1.0, 2.0],
        help="orders q (numbers >= 0 or inf)",
    )
    group.add_argument(
        "--vendi-kernel",
        type=kernel_text,
        default=DEFAULT_KERNEL,
        metavar="KERNEL",
        help=f"kernel of the Vendi scores: {KERNEL_HELP}",
    )
    group.add_argument(
        "--vendi-sigma",
        type=positive_float,
        help="deprecated (until 0.3): --vendi-kernel gaussian:sigma=S",
    )
    group.add_argument(
        "--vendi-num-features",
        type=positive_int,
        help="deprecated (until 0.3): --vendi-kernel gaussian:sigma=S,features=M",
    )


def add_metric_switches(group: argparse._ArgumentGroup) -> None:
    """Which prompt-aware metrics: each on where defined, required, or off."""
    group.add_argument(
        "--per-prompt",
        choices=SWITCH,
        default="auto",
        help="per-prompt Vendi score (each prompt's own, averaged over prompts); auto: with prompts "
        "and a prompt with 2+ images",
    )
    group.add_argument(
        "--sce",
        choices=SWITCH,
        default="auto",
        help="Schur complement entropy and its text part; auto: with prompts, an embedder of "
        "prompts, and a prompt with 2+ images",
    )
    group.add_argument(
        "--clip-score",
        choices=SWITCH,
        default="auto",
        help="CLIPScore of each image against its prompt (100 * max(cos, 0)), per prompt too; "
        "auto: with prompts and an embedder of prompts",
    )
    for flag, score in (("cond-vendi", "Conditional-Vendi"), ("info-vendi", "Information-Vendi")):
        group.add_argument(
            f"--{flag}",
            choices=SWITCH,
            default="auto",
            help=f"the published {score} score (arXiv 2411.02817); auto: with prompts and an "
            "embedder of prompts (for embeddings files, a 'text_embeddings' key)",
        )


def add_sce_arguments(group: argparse._ArgumentGroup) -> None:
    """The SCE's kernel, and the exact Gaussian kernel's memory guard."""
    group.add_argument(
        "--sce-kernel",
        type=kernel_text,
        metavar="KERNEL",
        help="kernel of the Schur complement entropy (default: its own): " + KERNEL_HELP,
    )
    group.add_argument(
        "--sce-sigma",
        type=positive_float,
        help="deprecated (until 0.3): --sce-kernel gaussian:sigma=S",
    )
    group.add_argument(
        "--sce-num-features",
        type=positive_int,
        help="deprecated (until 0.3): --sce-kernel gaussian:sigma=S,features=M",
    )
    group.add_argument(
        "--max-kernel-memory",
        type=positive_float,
        default=8.0,
        metavar="GIB",
        help="refuse the exact Gaussian kernel when it would need more than this",
    )


def add_memorization_arguments(group: argparse._ArgumentGroup) -> None:
    """The training set the images are compared with."""
    group.add_argument(
        "--reference",
        metavar="FOLDER",
        help="training images (a folder) or their embeddings (.pt/.npy): adds copy_rate, "
        "nn_similarity_*, l2_memorization and authenticity, and with --plot a grid of the "
        "most-copied images beside their nearest training image",
    )
    group.add_argument(
        "--copy-threshold",
        type=float,
        default=DEFAULT_COPY_THRESHOLD,
        metavar="COS",
        help="nearest-neighbour cosine similarity from which an image counts as a copy",
    )


def add_mode_arguments(group: argparse._ArgumentGroup) -> None:
    """The modes shown (listed among the metrics)."""
    group.add_argument(
        "--modes",
        type=positive_int,
        metavar="K",
        help="with --plot: write the K leading modes of each run (a grid per mode) and the "
        "modes of the first run lost and gained in each other run, under DIR/<run>/modes/",
    )


def add_output_arguments(group: argparse._ArgumentGroup) -> None:
    """The files, plots and progress bars."""
    group.add_argument(
        "--json", metavar="FILE", help="write every score (and per prompt); '-': standard output"
    )
    group.add_argument("--csv", metavar="FILE", help="write one row per run")
    group.add_argument(
        "--plot", metavar="DIR", help="write PNG charts (needs diversity-callbacks[plot])"
    )
    group.add_argument(
        "--grids", action="store_true", help="with --plot: a sample grid per run and prompt"
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_scale_arguments(group: argparse._ArgumentGroup) -> None:
    """Bad images, and the processes and machines."""
    group.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="an unreadable image, one without a prompt or one whose embedding fails: stop, "
        "or skip it with a warning",
    )
    group.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        help="processes on this machine (Lightning Fabric DDP; gloo on CPU, NCCL on GPUs)",
    )
    group.add_argument("--num-nodes", type=positive_int, default=1, help="machines")
    group.add_argument(
        "--accelerator", choices=("auto", "cpu", "cuda"), default="auto", help="where to embed"
    )


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse names the flag for the ValueError of a non-integer)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (NaN would disable every comparison)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def kernel_text(text: str) -> str:
    """A kernel's text whose name is a kernel's; the settings are read when the options are
    built (:meth:`~diversity_callbacks.Kernel.parse`, which needs torch)."""
    name = text.partition(":")[0].strip()
    if name not in KERNEL_NAMES:
        raise argparse.ArgumentTypeError(
            f"must be a kernel name ({', '.join(KERNEL_NAMES)}), optionally with settings "
            f"(e.g. gaussian:sigma=3.5,features=2048), got {text!r}"
        )
    return text


def order(text: str) -> float:
    """A Vendi order: a number >= 0 or ``inf``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"takes numbers >= 0 or inf, got {text!r}")
    return value
