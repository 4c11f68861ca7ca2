"""The options of ``diversity-callbacks score`` as typed, frozen values, built once from the
command line (:meth:`ScoreOptions.from_namespace`) and checked together there.

The entry point (:func:`diversity_callbacks.cli.main`) is the only code that sees argparse's
``Namespace``; everything below it takes the option group it needs. Nothing here imports torch,
so the command line parses (and ``--help`` answers) before torch, torchmetrics or Lightning.
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from diversity_callbacks.cli.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from diversity_callbacks.functional.kernels import Kernel

DEFAULT_COPY_THRESHOLD = 0.95
"""MemorizationScore's default threshold, written here so that ``--help`` imports no torch
(a test keeps the two equal)."""


WORKERS_FROM = 1000
"""Images per process from which ``--workers`` defaults to worker processes. Below it, starting
the workers and sharing the cores with them costs more than decoding in the main process saves
(500 small images: 0.63 of the bare embedder with 2 workers, 0.98 without; docs/performance.md)."""

MAX_WORKERS = 4
"""The most decoding processes ``--workers`` defaults to (never more than the CPUs)."""

KERNEL_NAMES = ("cosine", "linear", "gaussian")
DEFAULT_KERNEL = "cosine"
""":data:`~diversity_callbacks.functional.kernels.KERNEL_NAMES` and its ``DEFAULT_KERNEL``,
written here so that ``--help`` imports no torch (a test keeps them equal); the kernel's text
itself is read by :meth:`~diversity_callbacks.Kernel.parse` alone."""

DEPRECATED_KERNEL_FLAGS = {
    "vendi_sigma": ("--vendi-sigma", "--vendi-kernel", "sigma"),
    "vendi_num_features": ("--vendi-num-features", "--vendi-kernel", "features"),
    "sce_sigma": ("--sce-sigma", "--sce-kernel", "sigma"),
    "sce_num_features": ("--sce-num-features", "--sce-kernel", "features"),
}
"""The kernel flags of 0.1 (one release, with a FutureWarning): ``dest: (flag, the kernel flag
that now holds the setting, its key in the kernel's text)``."""


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


@dataclass(frozen=True)
class PromptOptions:
    """Where each image's prompt comes from.

    Attributes:
        prompts: ``--prompts``: ``"auto"``, ``"manifest"``, ``"sidecar"``, ``"folders"`` or
            ``"none"``.
        manifest: ``--manifest``: a manifest file, relative to each run folder or a path.
    """

    prompts: str = "auto"
    manifest: str | None = None


@dataclass(frozen=True)
class EmbedderOptions:
    """The image embedder and how images reach it.

    Attributes:
        model: open_clip architecture (``--model``).
        pretrained: open_clip tag, weights file or ``"none"`` (``--pretrained``).
        model_config: JSON of open_clip config overrides (``--model-config``).
        embedder: ``module:attribute`` of the user's own embedder (``--embedder``).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        batch_size: images per batch.
        workers: DataLoader processes decoding images (None: from the number of images).
    """

    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    model_config: str | None = None
    embedder: str | None = None
    precision: str = "fp32"
    batch_size: int = 64
    workers: int | None = None


@dataclass(frozen=True)
class MetricOptions:
    """The evaluator's options: which metrics, their kernels, memorization and modes.

    ``per_prompt``, ``sce``, ``clip_score``, ``cond_vendi`` and ``info_vendi`` are ``"auto"``
    (on where defined), ``"on"`` (an error where not) or ``"off"``.

    Attributes:
        vendi_orders: orders q of the Vendi score.
        vendi_kernel: the Vendi scores' kernel (``--vendi-kernel``, e.g.
            ``gaussian:sigma=3.5,features=2048``); None: the default, cosine.
        per_prompt: the per-prompt Vendi score.
        sce: the Schur complement entropy and its text part.
        clip_score: CLIPScore of each image against its prompt.
        cond_vendi: the published Conditional-Vendi score.
        info_vendi: the published Information-Vendi score.
        sce_kernel: the SCE's kernel (None: its own default).
        max_kernel_memory: GiB above which the exact Gaussian kernel is refused.
        reference: training images (a folder) or their embeddings file, for memorization.
        copy_threshold: the similarity from which an image counts as a copy.
        modes: the number of leading modes to show (None: none).
    """

    vendi_orders: tuple[float, ...] = (1.0, 2.0)
    vendi_kernel: Kernel | None = None
    per_prompt: str = "auto"
    sce: str = "auto"
    clip_score: str = "auto"
    cond_vendi: str = "auto"
    info_vendi: str = "auto"
    sce_kernel: Kernel | None = None
    max_kernel_memory: float = 8.0
    reference: str | None = None
    copy_threshold: float = DEFAULT_COPY_THRESHOLD
    modes: int | None = None

    @property
    def kernel_name(self) -> str:
        """The Vendi kernel's name: ``"cosine"``, ``"linear"`` or ``"gaussian"``."""
        return DEFAULT_KERNEL if self.vendi_kernel is None else str(self.vendi_kernel.name)

    @property
    def exact_gaussian(self) -> bool:
        """Whether the Vendi kernel is the exact Gaussian (an n x n matrix, no random features)."""
        kernel = self.vendi_kernel
        return (
            kernel is not None
            and kernel.name == "gaussian"
            and kernel.num_features is None
            and kernel.frequencies is None
        )

    def recorded(self) -> dict[str, Any]:
        """The options under their flag names, as ``--json`` records them (the kernels as their
        text, and the settings of 0.1's kernel flags)."""
        recorded: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("vendi_kernel", "sce_kernel"):
                family = field.name.split("_")[0]
                recorded[field.name] = None if value is None else str(value)
                recorded[f"{family}_sigma"] = getattr(value, "sigma", None)
                recorded[f"{family}_num_features"] = getattr(value, "num_features", None)
            else:
                recorded[field.name] = list(value) if isinstance(value, tuple) else value
        return recorded


@dataclass(frozen=True)
class OutputOptions:
    """What is written besides the table.

    Attributes:
        json: ``--json`` file (``"-"``: standard output).
        csv: ``--csv`` file.
        plot: ``--plot`` folder.
        grids: with ``plot``, a sample grid per run.
        no_progress: no progress bars.
    """

    json: str | None = None
    csv: str | None = None
    plot: str | None = None
    grids: bool = False
    no_progress: bool = False


@dataclass(frozen=True)
class ScaleOptions:
    """What to do with bad images, and on how many processes.

    Attributes:
        on_error: ``"fail"`` or ``"skip"`` an unreadable image, one without a prompt, or a batch
            that fails to embed.
        devices: processes on this machine.
        num_nodes: machines.
        accelerator: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    on_error: str = "fail"
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"

    @property
    def skip(self) -> bool:
        """Whether bad images are left out (``--on-error skip``) rather than fatal."""
        return self.on_error == "skip"


Group = TypeVar("Group")


@dataclass(frozen=True)
class ScoreOptions:
    """Every option of ``score``, by group.

    Attributes:
        runs: the folders of images and embeddings files to score.
        names: the runs' names (None: from their paths).
        prompts: where prompts come from.
        embedder: the image embedder.
        metrics: the evaluator's options.
        outputs: the files and plots written.
        scale: errors and processes.
    """

    runs: tuple[str, ...]
    names: tuple[str, ...] | None = None
    prompts: PromptOptions = PromptOptions()
    embedder: EmbedderOptions = EmbedderOptions()
    metrics: MetricOptions = MetricOptions()
    outputs: OutputOptions = OutputOptions()
    scale: ScaleOptions = ScaleOptions()

    def __post_init__(self) -> None:
        if self.outputs.grids and not self.outputs.plot:
            raise InputError("--grids needs --plot DIR (the folder the grids are written to)")
        if self.metrics.modes and not self.outputs.plot:
            raise InputError("--modes needs --plot DIR (the folder the mode grids are written to)")
        if self.embedder.embedder and self.embedder.model_config:
            raise InputError(
                f"--model-config configures the open_clip model of --model; it cannot apply to "
                f"--embedder {self.embedder.embedder!r}: drop one of the two"
            )

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> ScoreOptions:
        """The options of a parsed ``score`` command line (the one place that reads it).

        Raises:
            InputError: for options that cannot work together (``--grids`` or ``--modes``
                without ``--plot``, ``--model-config`` beside ``--embedder``).
        """
        return cls(
            runs=tuple(args.runs),
            names=None if args.names is None else tuple(args.names),
            prompts=_group(PromptOptions, args),
            embedder=_group(EmbedderOptions, args),
            metrics=_group(
                MetricOptions,
                args,
                vendi_orders=tuple(args.vendi_orders),
                vendi_kernel=kernel_option(args, "vendi"),
                sce_kernel=kernel_option(args, "sce"),
            ),
            outputs=_group(OutputOptions, args),
            scale=_group(ScaleOptions, args),
        )

    def recorded(self) -> dict[str, Any]:
        """The options as ``--json`` records them: ``{"runs": [...], "vendi_kernel": ...}``,
        one flat entry per command-line option, under its argparse name."""
        return {
            "runs": list(self.runs),
            "names": None if self.names is None else list(self.names),
            **asdict(self.prompts),
            **asdict(self.embedder),
            **self.metrics.recorded(),
            **asdict(self.outputs),
            **asdict(self.scale),
        }


def _group(kind: type[Group], args: argparse.Namespace, **given: Any) -> Group:
    """One option group from the parsed options of the same names."""
    names = [field.name for field in fields(kind)]  # type: ignore[arg-type]
    return kind(**{name: given[name] if name in given else getattr(args, name) for name in names})


def kernel_option(args: argparse.Namespace, family: str) -> Kernel | None:
    """The kernel of ``--vendi-kernel`` or ``--sce-kernel`` (``family``), read by
    :meth:`~diversity_callbacks.Kernel.parse`, with the settings of 0.1's ``--vendi-sigma``,
    ``--vendi-num-features``, ``--sce-sigma`` and ``--sce-num-features`` added (each warns:
    ``FutureWarning``). None: the metric's own default.

    Raises:
        InputError: naming the flag, for a kernel's text that cannot be read, or a setting given
            both ways.
    """
    from diversity_callbacks.functional.kernels import Kernel

    flag = f"--{family}-kernel"
    text = getattr(args, f"{family}_kernel")
    settings = []
    for dest, (old, new, key) in DEPRECATED_KERNEL_FLAGS.items():
        value = getattr(args, dest, None)
        if not dest.startswith(family) or value is None:
            continue
        warnings.warn(
            f"{old} is deprecated and will stop working in 0.3: give the setting in the kernel, "
            f"{new} gaussian:{key}={value}",
            FutureWarning,
            stacklevel=2,
        )
        if text is None or f"{key}=" in text.partition(":")[2]:
            raise InputError(
                f"{old} {value} needs {new} gaussian without {key}= (better: {new} "
                f"gaussian:{key}={value}), got {new} {text!r}"
            )
        settings.append(f"{key}={value}")
    if text is None:
        return None
    if settings:
        text += ("," if ":" in text else ":") + ",".join(settings)
    try:
        return Kernel.parse(text)
    except (TypeError, ValueError) as error:
        raise InputError(f"{flag}: {error}") from None
