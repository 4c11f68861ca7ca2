"""CLIPScore from embeddings the caller already has, per condition and overall, DDP by sums."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from diversity_callbacks.functional.clip_score import embedding_clip_score
from diversity_callbacks.functional.per_condition import check_condition_ids
from diversity_callbacks.utilities.checks import check_positive_int


class EmbeddingCLIPScore(Metric):
    """Mean CLIPScore ``100 * max(cos(image, text), 0)`` of samples against their prompts.

    Unlike ``torchmetrics.multimodal.CLIPScore``, which runs a CLIP model, it takes the image
    and text embeddings (see :func:`~diversity_callbacks.functional.embedding_clip_score`), so a
    caller that embedded both for other metrics pays no second forward pass. States are float64
    sums per condition, summed across DDP ranks: exact with uneven and empty ranks.

    Args:
        num_conditions: number of conditions (prompts); ``update`` then takes each sample's
            condition number, and :attr:`per_condition` holds each one's mean after ``compute``.
            ``1`` (default) needs no condition numbers.
        kwargs: torchmetrics ``Metric`` options.

    Examples:
        >>> import torch
        >>> metric = EmbeddingCLIPScore(num_conditions=2)
        >>> images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> metric.update(images, texts, torch.tensor([0, 0, 1]))
        >>> round(metric.compute().item(), 4)  # (100 + 0 + 70.7107) / 3
        56.9036
        >>> metric.per_condition
        tensor([50.0000, 70.7107], dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 100.0

    def __init__(self, num_conditions: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_conditions = check_positive_int(num_conditions, "num_conditions")
        self.per_condition: Tensor | None = None
        """``(num_conditions,)`` mean scores of the last ``compute`` (NaN: no samples)."""
        zeros = torch.zeros(self.num_conditions, dtype=torch.float64)
        self.add_state("score_sum", default=zeros, dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(
        self, image_embeddings: Tensor, text_embeddings: Tensor, condition_ids: Tensor | None = None
    ) -> None:
        """Add ``(N, D)`` sample embeddings, their prompts' ``(N, D)`` and ``(N,)`` condition ids."""
        scores = embedding_clip_score(image_embeddings, text_embeddings).to(self.device)
        if condition_ids is None:
            if self.num_conditions > 1:
                raise ValueError(
                    f"`condition_ids` must give each sample's condition (the metric has "
                    f"{self.num_conditions} conditions), got None"
                )
            condition_ids = torch.zeros(scores.shape[0], dtype=torch.long)
        ids = check_condition_ids(condition_ids, scores.shape[0], self.num_conditions)
        ids = ids.to(self.device)
        self.score_sum.index_add_(0, ids, scores)
        self.count.index_add_(0, ids, torch.ones_like(scores))

    def compute(self) -> Tensor:
        """Mean score over every rank's samples (a collective: call it on all ranks)."""
        total = self.count.sum()
        if int(total) == 0:
            raise ValueError(
                f"{type(self).__name__}.compute() needs at least one sample, got none: call "
                "update() with image and text embeddings first"
            )
        self.per_condition = (self.score_sum / self.count).cpu()  # 0 / 0: NaN, no samples
        return self.score_sum.sum() / total
