"""MetricCollection's compute groups never merge two of the package's metrics.

A collection shares the states of metrics whose states are equal after its first update. A
cosine and a linear Vendi score have equal states when that batch is unit-norm, so they would
report the same number ever after.
"""

from __future__ import annotations

import pytest
import torch
from torchmetrics import MetricCollection

from diversity_callbacks import SchurComplementEntropy, VendiScore
from diversity_callbacks.functional import schur_complement_entropy, vendi_score


def batches() -> list[torch.Tensor]:
    """A unit-norm first batch (equal cosine and linear states), then rows of any norm."""
    generator = torch.Generator().manual_seed(0)
    first = torch.nn.functional.normalize(torch.randn(10, 16, generator=generator), dim=1)
    later = torch.randn(20, 16, generator=generator) * 3 * torch.rand(20, 1, generator=generator)
    return [first, later]


def test_cosine_and_linear_vendi_keep_their_own_states() -> None:
    collection = MetricCollection({"cosine": VendiScore(), "linear": VendiScore(kernel="linear")})
    for batch in batches():
        collection.update(batch)
    features = torch.cat(batches())
    results = collection.compute()
    assert results["cosine"].item() == pytest.approx(vendi_score(features).item(), rel=1e-9)
    linear = vendi_score(features, kernel="linear").item()
    assert results["linear"].item() == pytest.approx(linear, rel=1e-9)
    assert abs(results["cosine"].item() - linear) > 0.5  # the two really differ here
    assert len(collection.compute_groups) == 2


def test_metrics_with_other_settings_never_share_a_group() -> None:
    metrics = {
        "cosine_q1": VendiScore(q=1),
        "cosine_q2": VendiScore(q=2),
        "linear": VendiScore(kernel="linear"),
        "random_features": VendiScore(kernel="gaussian:sigma=3.0,features=8"),
        "other_seed": VendiScore(kernel="gaussian:sigma=3.0,features=8,seed=1"),
    }
    collection = MetricCollection(metrics)
    for batch in batches():
        collection.update(batch)
    assert sorted(len(group) for group in collection.compute_groups.values()) == [1] * 5
    features = torch.cat(batches())
    expected = {
        "cosine_q1": vendi_score(features, q=1),
        "cosine_q2": vendi_score(features, q=2),
        "linear": vendi_score(features, kernel="linear"),
        "random_features": vendi_score(features, kernel="gaussian:sigma=3.0,features=8"),
        "other_seed": vendi_score(features, kernel="gaussian:sigma=3.0,features=8,seed=1"),
    }
    for name, value in collection.compute().items():
        assert value.item() == pytest.approx(expected[name].item(), rel=1e-9), name


def test_schur_metrics_with_other_kernels_keep_their_own_states() -> None:
    images, prompts = batches()[0], torch.eye(16)[torch.arange(10) % 2]  # unit-norm pairs
    collection = MetricCollection(
        {"cosine": SchurComplementEntropy(), "linear": SchurComplementEntropy(kernel="linear")}
    )
    scaled = images * torch.linspace(0.2, 3.0, 10).unsqueeze(1)  # only the linear kernel sees it
    collection.update(images, prompts)
    collection.update(scaled, prompts)
    assert len(collection.compute_groups) == 2
    every_image, every_prompt = torch.cat([images, scaled]), torch.cat([prompts, prompts])
    results = collection.compute()  # duplicate keys are prefixed with the metric's name
    expected = {
        kernel: schur_complement_entropy(every_image, every_prompt, kernel).image_vendi.item()
        for kernel in ("cosine", "linear")
    }
    assert abs(expected["cosine"] - expected["linear"]) > 0.3
    for kernel, value in expected.items():
        assert results[f"{kernel}_image_vendi"].item() == pytest.approx(value, rel=1e-9)


def test_tags_differ_per_instance_and_leave_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first, second = VendiScore(), VendiScore()
    assert torch.equal(torch.get_rng_state(), state)
    assert int(first.instance_tag) != int(second.instance_tag)
    tag = int(first.instance_tag)
    first.update(torch.randn(4, 3))
    first.reset()
    assert int(first.instance_tag) == tag
