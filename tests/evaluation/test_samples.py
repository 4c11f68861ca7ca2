"""Sample handling of an evaluation: thumbnails of the first conditions for the loggers."""

from __future__ import annotations

import torch

from tests.helpers.callback import make_callback


def test_logged_thumbnails_are_shrunk_and_limited_to_the_first_conditions():
    from diversity_callbacks.evaluation.samples import thumbnails_of

    evaluation_set = make_callback(samples_per_condition=3).evaluation_set
    images = torch.rand(4, 3, 300, 200)
    # samples 1, 2 are prompt 0's (the second and third), 3 and 4 prompt 1's
    thumbnails = thumbnails_of(images, [1, 2, 3, 4], evaluation_set, 1, 2, 64)
    assert list(thumbnails) == [1]  # prompt 0 only, and of it the first two samples only
    assert thumbnails[1].dtype == torch.uint8 and thumbnails[1].shape == (3, 64, 43)
