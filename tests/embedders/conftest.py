"""Fixtures for the embedder tests."""

from __future__ import annotations

import pytest

from tests.helpers.embedders import TINY_CLIP


@pytest.fixture(scope="module")
def tiny_embedder():
    """One random tiny CLIPEmbedder per test module; tests must not change its settings."""
    from diversity_callbacks.embedders.clip import CLIPEmbedder

    return CLIPEmbedder(pretrained=None, model_kwargs=TINY_CLIP)
