"""A DiversityCallback with the small, fast settings of the callback tests."""

from __future__ import annotations

from typing import Any

from diversity_callbacks import DiversityCallback
from tests.helpers.trainer import PROMPTS, PixelEmbedder


def make_callback(**kwargs: Any) -> DiversityCallback:
    prompts = kwargs.pop("prompts", PROMPTS)
    options = {
        "samples_per_condition": 3,
        "batch_size": 4,
        "embedder": PixelEmbedder(),
        "every_n_train_steps": 2,
        "sce": False,
        # cadence tests count cadence evaluations; the baseline and the final one have their own
        "evaluate_at_start": False,
        "evaluate_on_train_end": False,
    }
    options.update(kwargs)
    return DiversityCallback(prompts, **options)
