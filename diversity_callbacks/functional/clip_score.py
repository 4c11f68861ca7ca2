"""CLIPScore (Hessel et al., EMNLP 2021) of samples against their prompts, from embeddings.

torchmetrics' ``CLIPScore`` runs a CLIP model on images and texts; the evaluator has both
embeddings already (the samples' and, for SCE, their prompts'), so the score is computed from
those instead: no second forward pass, and any embedder with a shared image-text space works.
The convention is torchmetrics': ``100 * max(cos(image, text), 0)`` per sample, averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diversity_callbacks.utilities.checks import check_features, check_paired


def embedding_clip_score(image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
    """Per-sample CLIPScore ``100 * max(cos(image_i, text_i), 0)`` of paired embeddings.

    Args:
        image_embeddings: ``(N, D)`` embeddings of the samples (normalised or not).
        text_embeddings: ``(N, D)`` embeddings of each sample's prompt, in the same space.

    Returns:
        ``(N,)`` float64 scores in ``[0, 100]``; ``.mean()`` is torchmetrics' CLIPScore.

    Examples:
        >>> images = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
        >>> texts = torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
        >>> embedding_clip_score(images, texts)  # same direction, 45 degrees, opposite
        tensor([100.0000,  70.7107,   0.0000], dtype=torch.float64)
    """
    check_features(image_embeddings, "image_embeddings")
    check_features(text_embeddings, "text_embeddings", dim=image_embeddings.shape[1])
    check_paired(image_embeddings, text_embeddings, "image_embeddings", "text_embeddings")
    images = torch.nn.functional.normalize(image_embeddings.to(torch.float64), dim=1)
    texts = torch.nn.functional.normalize(text_embeddings.to(images.device, torch.float64), dim=1)
    return 100 * (images * texts).sum(dim=1).clamp(min=0)
