"""Quality-weighted Vendi score (Nguyen & Dieng, ICML 2024): the diversity of good samples.

``qVS_q = mean(s) * VS_q`` for per-sample qualities ``s``: the "effective quality sum" of the
set (github.com/vertaix/Quality-Weighted-Vendi-Score, ``q_vendi.score``). Noise raises the Vendi
score alone; with a quality score that noise fails, ``qVS`` rises only when the set gets more
diverse without getting worse. It reads as a number of good, distinct samples when the qualities
lie in ``[0, 1]``; negative qualities make it meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from diversity_callbacks.functional.kernels import KernelArgument, as_kernel
from diversity_callbacks.functional.spectrum import Order
from diversity_callbacks.functional.vendi import vendi_score
from diversity_callbacks.utilities.checks import check_features, check_scores


def quality_weighted_vendi_score(
    features: Tensor,
    qualities: Tensor,
    q: Order | Sequence[Order] = 1.0,
    kernel: KernelArgument = None,
    *,
    tolerance: float | None = None,
    **deprecated: Any,
) -> Tensor | dict[str, Tensor]:
    """Quality-weighted Vendi score ``mean(qualities) * VS_q(features)``.

    Args:
        features: ``(N, D)`` embeddings of the samples.
        qualities: ``(N,)`` finite quality of each sample (higher is better).
        q: order or sequence of orders, as for :func:`~diversity_callbacks.functional.vendi_score`.
        kernel: the kernel, as for :func:`~diversity_callbacks.functional.vendi_score`.
        tolerance: relative eigenvalue tolerance, as for
            :func:`~diversity_callbacks.functional.vendi_score`.
        deprecated: the 0.1 flat kernel arguments (``sigma``, ``num_features``...), which warn
            (``FutureWarning``); settings of the ``Kernel`` now.

    Returns:
        A float64 scalar, or a dict ``{"q1": ..., "q2": ...}`` when ``q`` is a sequence.

    Examples:
        >>> two_apart = torch.eye(2)  # Vendi score 2
        >>> round(quality_weighted_vendi_score(two_apart, torch.tensor([0.5, 1.0])).item(), 6)
        1.5
    """
    check_features(features, "features")
    qualities = check_scores(qualities, features.shape[0], "qualities")
    mean = qualities.to(torch.float64).mean().cpu()
    # converted here, so that a flat argument's warning points at the caller, not at this module
    kernel = as_kernel(kernel, deprecated, "quality_weighted_vendi_score")
    scores = vendi_score(features, q=q, kernel=kernel, tolerance=tolerance)
    if isinstance(scores, dict):
        return {key: mean * value.cpu() for key, value in scores.items()}
    return mean * scores.cpu()
