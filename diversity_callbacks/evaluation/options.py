"""The options of an evaluation, besides its conditions and sampling plan, as one value.

:class:`~diversity_callbacks.DiversityEvaluator` takes them as keyword arguments (documented
there); the ``score`` command builds an :class:`EvaluatorOptions` from its flags and hands it to
:meth:`DiversityEvaluator.for_existing <diversity_callbacks.DiversityEvaluator.for_existing>`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor

from diversity_callbacks.evaluation.applicability import SWITCHES
from diversity_callbacks.evaluation.metrics import QualityInput
from diversity_callbacks.evaluation.modes import ModeOptions
from diversity_callbacks.functional.spectrum import Order
from diversity_callbacks.images import ValueRange
from diversity_callbacks.utilities.checks import check_positive_int
from diversity_callbacks.utilities.deprecations import renamed_arguments


@dataclass(frozen=True)
class EvaluatorOptions:
    """Every option of :class:`~diversity_callbacks.DiversityEvaluator` but the conditions,
    ``samples_per_condition`` and ``seed``, with the same names and defaults (see there)."""

    embedder: Any = None
    value_range: ValueRange | None = "[-1,1]"
    batch_size: int = 16
    vendi_orders: Order | Sequence[Order] = (1, 2)
    vendi_kernel: str = "cosine"
    vendi_sigma: float | None = None
    vendi_num_features: int | None = None
    per_condition: bool | None = None
    sce: bool | None = None
    sce_kwargs: Mapping[str, Any] | None = None
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

    @property
    def kernel_kwargs(self) -> dict[str, Any]:
        """The Vendi score's kernel options, by the Vendi score's argument names."""
        return {
            "kernel": self.vendi_kernel,
            "sigma": self.vendi_sigma,
            "num_features": self.vendi_num_features,
        }

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
