"""The quality-weighted Vendi score as a metric: Vendi's states plus a float64 sum of qualities."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.metrics.vendi import VendiScore
from diversity_callbacks.utilities.checks import check_features, check_scores


class QualityWeightedVendiScore(VendiScore):
    """Quality-weighted Vendi score ``mean(quality) * VS_q`` (Nguyen & Dieng, ICML 2024).

    Takes the arguments of :class:`~diversity_callbacks.VendiScore` and holds its states, plus
    the sum of the qualities (float64, summed across DDP ranks). ``compute`` returns what
    ``VendiScore.compute`` returns, each value multiplied by the mean quality; after it,
    :attr:`mean_quality` holds that mean. See
    :func:`~diversity_callbacks.functional.quality_weighted_vendi_score`.

    Examples:
        >>> import torch
        >>> metric = QualityWeightedVendiScore(q=[1, 2])
        >>> metric.update(torch.eye(2), torch.tensor([0.5, 1.0]))  # VS = 2, mean quality 0.75
        >>> {k: round(v.item(), 6) for k, v in metric.compute().items()}
        {'q1': 1.5, 'q2': 1.5}
        >>> metric.mean_quality
        tensor(0.7500, dtype=torch.float64)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mean_quality: Tensor | None = None
        """Mean quality of the samples of the last ``compute``."""
        self.add_state(
            "quality_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, features: Tensor, qualities: Tensor) -> None:  # type: ignore[override]
        """Add ``(N, D)`` features and the ``(N,)`` quality of each sample."""
        check_features(features, "features")
        qualities = check_scores(qualities, features.shape[0], "qualities")
        super().update(features)
        self.quality_sum += qualities.to(self.device, torch.float64).sum()

    def compute(self) -> Tensor | dict[str, Tensor]:
        """Mean quality times the Vendi score of every rank's samples (a collective)."""
        scores = super().compute()
        self.mean_quality = self.quality_sum / self.num_samples
        if isinstance(scores, dict):
            return {key: self.mean_quality * value for key, value in scores.items()}
        return self.mean_quality * scores
