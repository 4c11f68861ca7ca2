"""The options of an evaluation, besides its conditions and sampling plan, as one value.

:class:`~diversity_callbacks.DiversityEvaluator` takes them as keyword arguments (documented
there); the ``score`` command builds an :class:`EvaluatorOptions` from its flags and hands it to
:meth:`DiversityEvaluator.for_existing <diversity_callbacks.DiversityEvaluator.for_existing>`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor

from diversity_callbacks.evaluation.applicability import SWITCHES
from diversity_callbacks.evaluation.memorization import MemorizationSetup
from diversity_callbacks.evaluation.metrics import QualityInput
from diversity_callbacks.evaluation.modes import ModeOptions
from diversity_callbacks.evaluation.reference import ReferenceSet
from diversity_callbacks.functional.kernels import Kernel, as_kernel
from diversity_callbacks.functional.spectrum import Order
from diversity_callbacks.images import ValueRange
from diversity_callbacks.utilities.checks import check_positive_int
from diversity_callbacks.utilities.deprecations import renamed_arguments


@dataclass(frozen=True)
class EvaluatorOptions:
    """Every option of :class:`~diversity_callbacks.DiversityEvaluator` but its conditions,
    ``samples_per_condition`` and ``seed``: the evaluator's keyword arguments, as one value.

    Attributes:
        embedder: for images, ``embed_images(images in [0, 1]) -> (B, D)`` (and
            ``embed_texts(prompts) -> (P, D)`` for SCE and CLIPScore), ``None`` for a default
            :class:`~diversity_callbacks.CLIPEmbedder`; for other samples, ``embed_samples`` or a
            callable. An ``nn.Module`` embedder is moved to the evaluation's device.
        value_range: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"`` for ``(B, 3, H, W)`` images
            (checked, converted to ``[0, 1]``); ``None`` for samples of any other kind (text,
            audio, molecules), handed to the embedder unchanged.
        batch_size: samples per call of the generator.
        vendi_orders: orders q of the Vendi score (``"inf"`` allowed).
        vendi_kernel: the Vendi score's :class:`~diversity_callbacks.Kernel` (also of the
            per-condition, quality-weighted and prompt-aware scores and of the modes), or its
            text: ``"cosine"``, ``"linear"``, ``"gaussian:sigma=3.5,features=2048"``.
        vendi_sigma: deprecated (``FutureWarning``): ``vendi_kernel=Kernel("gaussian", sigma=...)``.
        vendi_num_features: deprecated (``FutureWarning``): the Kernel's ``num_features``.
        per_condition: the Vendi score within each condition, averaged (``per_prompt_vendi_*``,
            ``per_class_vendi_*``); ``None``: where there are 2+ samples per condition.
            Its 0.1 name ``conditional=`` still works, with a ``FutureWarning``.
        sce: the Schur complement entropy given the prompts and its text part; ``None``: where
            defined (prompts, ``embed_texts``, 2+ samples per prompt).
        sce_kwargs: keyword arguments of :class:`~diversity_callbacks.SchurComplementEntropy`.
        sce_kernel: the Schur complement entropy's :class:`~diversity_callbacks.Kernel` (or its
            text); the same as ``sce_kwargs={"kernel": ...}``; default the entropy's own.
        clip_score: the CLIPScore of each sample against its prompt (``clip_score``, per prompt
            in the table), from the embeddings the metrics already have; ``None``: where
            defined (prompts and ``embed_texts`` in the images' space).
        quality: a per-sample quality scorer (a reward model, an aesthetic score...): adds the
            quality-weighted Vendi score ``qvendi_q1``... (mean quality times ``vendi_q1``...)
            and the mean ``quality``. Called on each batch, it returns ``(B,)`` finite floats.
        quality_input: what ``quality`` is called on: ``"samples"`` (images as ``(B, 3, H, W)``
            floats in [0, 1], other samples as generated) or ``"embeddings"`` (``(B, D)``).
        cond_vendi: the published Conditional-Vendi score (``cond_vendi_q1``, ...; prompts by the
            cosine kernel of their text embeddings, classes by the label kernel); ``None``:
            where defined (class labels, or prompts and ``embed_texts``).
        info_vendi: the Information-Vendi score (``info_vendi_q1``, ...); ``None`` as above.
        metrics: more metrics by name: torchmetrics ``Metric`` objects taking the embeddings, or
            :class:`~diversity_callbacks.EvaluationMetric` wrappers declaring other inputs.
        reference: training samples to score memorization against (``copy_rate``,
            ``nn_similarity_*``, ``l2_memorization``, ``authenticity``): a tensor of samples in
            ``value_range``, a ``Dataset`` or ``DataLoader``, a folder of images, or a
            ``.pt``/``.npy`` file of embeddings. Embedded once, at ``DiversityEvaluator.prepare``, and cached
            on disk (see :class:`~diversity_callbacks.evaluation.reference.ReferenceSet`).
        memorization_kwargs: keyword arguments of
            :class:`~diversity_callbacks.MemorizationScore` (``threshold``, ``quantiles``,
            ``k``, ``alpha``, ``delta``, ``chunk_size``).
        reference_cache_dir: where the reference embeddings are cached; ``False``: nowhere.
        max_copies_shown: most-copied samples shown beside their nearest training sample.
        spectrum: also return the eigenvalues of the Vendi kernel.
        modes: the leading modes of the Vendi kernel per evaluation (``result.modes``, the
            ``num_modes`` scalar), and with ``evaluate(..., compare_to=...)`` the modes lost and
            gained since then (``lost_mode_mass``, ``gained_mode_mass``); 0: off.
        mode_options: ``samples`` per mode (16), the share ``threshold`` of ``num_modes``
            (0.01), KEN's ``eta`` (1.0), the ``preview_size`` of kept thumbnails (48 px).
        max_thumbnail_conditions: thumbnails of the first this many conditions, ...
        max_thumbnails_per_condition: ... and of the first this many samples of each.
        thumbnail_size: longest side of a thumbnail, in pixels.
        prefix: first part of every key of the result.

    Example:
        >>> options = EvaluatorOptions(vendi_kernel="gaussian:sigma=2.0", sce=False)
        >>> options.kernel(), options.switches["sce"]
        (Kernel('gaussian', sigma=2.0), False)
    """

    embedder: Any = None
    value_range: ValueRange | None = "[-1,1]"
    batch_size: int = 16
    vendi_orders: Order | Sequence[Order] = (1, 2)
    vendi_kernel: Kernel | str = "cosine"
    vendi_sigma: float | None = None
    vendi_num_features: int | None = None
    per_condition: bool | None = None
    sce: bool | None = None
    sce_kwargs: Mapping[str, Any] | None = None
    sce_kernel: Kernel | str | None = None
    clip_score: bool | None = None
    quality: Callable[[Any], Tensor] | None = None
    quality_input: QualityInput = "samples"
    cond_vendi: bool | None = None
    info_vendi: bool | None = None
    metrics: Mapping[str, Any] | None = None
    reference: Any = None
    memorization_kwargs: Mapping[str, Any] | None = None
    reference_cache_dir: str | os.PathLike | bool | None = None
    max_copies_shown: int = 16
    spectrum: bool = False
    modes: int = 0
    mode_options: Mapping[str, Any] | None = None
    max_thumbnail_conditions: int = 16
    max_thumbnails_per_condition: int = 64
    thumbnail_size: int = 128
    prefix: str = "diversity"

    @classmethod
    def from_keywords(cls, owner: str, keywords: Mapping[str, Any]) -> EvaluatorOptions:
        """The options of ``owner(**keywords)``: a 0.1 name (``conditional=``) warns and gives
        its new one; an unknown keyword is a ``TypeError``, as Python raises."""
        names = {option.name for option in fields(cls)}
        current = {key: value for key, value in keywords.items() if key in names}
        former = {key: value for key, value in keywords.items() if key not in names}
        renamed = renamed_arguments(owner, former, per_condition=current.get("per_condition"))
        return cls(**{**current, **renamed})

    @property
    def switches(self) -> dict[str, bool | None]:
        """The optional metrics' switches (``per_condition``, ``sce``, ...) as given."""
        return {name: getattr(self, name) for name in SWITCHES}

    def kernel(self) -> Kernel:
        """The Vendi score's kernel, checked; the 0.1 ``vendi_sigma`` and
        ``vendi_num_features`` warn (``FutureWarning``) and join it."""
        flat = {"sigma": self.vendi_sigma, "num_features": self.vendi_num_features}
        given = {name: value for name, value in flat.items() if value is not None}
        shown = ", ".join(
            f"vendi_{name}={value!r}"
            for name, value in {"kernel": self.vendi_kernel, **flat}.items()
        )
        try:
            if not given:
                return as_kernel(self.vendi_kernel, {}, "DiversityEvaluator")
            if isinstance(self.vendi_kernel, Kernel):
                raise TypeError(f"give the settings in `vendi_kernel`, not also as {sorted(given)}")
            kernel = Kernel(self.vendi_kernel, **given)
        except (TypeError, ValueError) as error:  # in the evaluator's argument names
            raise type(error)(f"invalid Vendi kernel options ({shown}): {error}") from error
        warnings.warn(
            f"{', '.join(f'`vendi_{name}`' for name in given)} is deprecated and will stop "
            f"working in 0.3: pass vendi_kernel={kernel!r}",
            FutureWarning,
            stacklevel=4,
        )
        return kernel

    def sce_options(self) -> dict[str, Any]:
        """The keyword arguments of the Schur complement entropy, ``sce_kernel`` included."""
        options = dict(self.sce_kwargs or {})
        if self.sce_kernel is not None:
            if "kernel" in options:
                raise TypeError(
                    "give the Schur complement entropy's kernel as `sce_kernel` or as "
                    f"`sce_kwargs['kernel']`, not both (got {self.sce_kernel!r} and "
                    f"{options['kernel']!r})"
                )
            options["kernel"] = self.sce_kernel
        return options

    def memorization(self) -> MemorizationSetup | None:
        """The memorization scores' setup (None without ``reference``), checked."""
        kwargs = dict(self.memorization_kwargs or {})
        if self.reference is None:
            if kwargs:
                raise ValueError(
                    "`memorization_kwargs` need a `reference` set to compare with, got "
                    f"{sorted(kwargs)} and reference=None"
                )
            return None
        batch_size = check_positive_int(self.batch_size, "batch_size")
        return MemorizationSetup(
            ReferenceSet(self.reference, cache_dir=self.reference_cache_dir, batch_size=batch_size),
            kwargs,
            shown=check_positive_int(self.max_copies_shown, "max_copies_shown"),
            thumbnail_size=self.thumbnail_limits()[2],
        )

    def thumbnail_limits(self) -> tuple[int, int, int]:
        """Checked ``(max_thumbnail_conditions, max_thumbnails_per_condition, thumbnail_size)``."""
        return (
            check_positive_int(self.max_thumbnail_conditions, "max_thumbnail_conditions"),
            check_positive_int(self.max_thumbnails_per_condition, "max_thumbnails_per_condition"),
            check_positive_int(self.thumbnail_size, "thumbnail_size"),
        )

    def checked_prefix(self) -> str:
        """The prefix, checked to be a non-empty string."""
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError(f"`prefix` must be a non-empty string, got {self.prefix!r}")
        return self.prefix

    def checked_mode_options(self) -> ModeOptions | None:
        """The checked mode settings; None when ``modes`` is 0."""
        modes = self.modes
        if isinstance(modes, bool) or not isinstance(modes, int) or modes < 0:
            raise ValueError(f"`modes` must be an integer >= 0 (0: off), got {modes!r}")
        options = dict(self.mode_options or {})
        unknown = sorted(set(options) - {"samples", "threshold", "eta", "preview_size"})
        if unknown:
            raise ValueError(
                f"`mode_options` takes samples, threshold, eta and preview_size, got {unknown}"
            )
        return ModeOptions(modes, **options) if modes else None


def kernel_settings(kernel: Kernel) -> dict[str, Any]:
    """``kernel``'s settings by 0.1's names (``kernel``, ``sigma``, ``num_features``), as the
    callback's checkpoints and the ranks' agreement hold them (so 0.1 histories resume), with
    what 0.1 could not set (a ``seed`` other than 0, ``frequencies``, ``feature_map``) where given.

    Example:
        >>> kernel_settings(Kernel("gaussian", sigma=2.0))
        {'kernel': 'gaussian', 'sigma': 2.0, 'num_features': None}
    """
    settings = {"kernel": kernel.name, "sigma": kernel.sigma, "num_features": kernel.num_features}
    extra = {
        name: value
        for name, value in kernel.settings().items()
        if name in ("frequencies", "feature_map") or (name == "seed" and value != 0)
    }
    return {**settings, **extra}
