"""Schur complement entropy: closed forms, the published formula in NumPy, paths, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from diversity_callbacks.functional import schur_block_score, schur_complement_entropy, vendi_score
from diversity_callbacks.functional.schur import (
    DegenerateSchurComplementWarning,
    schur_complement,
)
from diversity_callbacks.functional.spectrum import schur_score


def prompted(num_prompts: int, per_prompt: int, dim: int, spread: float, seed: int = 0):
    """(images, prompts): each prompt repeated, its images = a prompt-dependent mean + noise."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randn(num_prompts, dim, generator=generator, dtype=torch.float64)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    means = prompts @ mixing
    noise = torch.randn(num_prompts * per_prompt, dim, generator=generator, dtype=torch.float64)
    images = means.repeat_interleave(per_prompt, 0) + spread * noise
    return images, prompts.repeat_interleave(per_prompt, 0)


def numpy_schur_scores(images, prompts, frequencies):
    """The published formula, written independently in float64 NumPy: RFF, pinv, eigvalsh."""
    w = frequencies.numpy()

    def features(x):
        projection = x.numpy() @ w
        return np.hstack([np.cos(projection), np.sin(projection)]) / np.sqrt(w.shape[1])

    phi_t, phi_i = features(prompts), features(images)
    n = phi_t.shape[0]
    c_tt, c_ti, c_ii = phi_t.T @ phi_t / n, phi_t.T @ phi_i / n, phi_i.T @ phi_i / n
    text_part = c_ti.T @ np.linalg.pinv(c_tt) @ c_ti

    def score(block):
        eigenvalues = np.clip(np.linalg.eigvalsh(block), 1e-10, None)
        return np.exp(-np.sum(eigenvalues * np.log(eigenvalues / eigenvalues.sum())))

    spectrum = np.linalg.eigvalsh(c_ii)
    spectrum = spectrum[spectrum > 1e-12] / spectrum[spectrum > 1e-12].sum()
    vendi = np.exp(-np.sum(spectrum * np.log(spectrum)))
    return score(c_ii - text_part), score(text_part), vendi


@pytest.mark.parametrize("kernel", ["linear", "cosine"])
def test_image_part_is_pooled_within_prompt_scatter(kernel):
    images, prompts = prompted(num_prompts=5, per_prompt=6, dim=8, spread=0.3)
    if kernel == "cosine":
        images = images / images.norm(dim=1, keepdim=True)
        prompts = prompts / prompts.norm(dim=1, keepdim=True)
    n = images.shape[0]
    blocks = (prompts.T @ prompts / n, prompts.T @ images / n, images.T @ images / n)
    # a ridge far below the prompts' eigenvalues, to compare with the unregularised closed form
    image_part, text_part = schur_complement(*blocks, ridge=1e-13)
    groups = images.view(5, 6, 8)
    residual = (groups - groups.mean(dim=1, keepdim=True)).reshape(n, 8)
    scatter = residual.T @ residual / n
    torch.testing.assert_close(image_part, scatter, rtol=0, atol=1e-10 * float(blocks[2].max()))
    torch.testing.assert_close(image_part + text_part, images.T @ images / n)
    result = schur_complement_entropy(images, prompts, kernel, ridge=1e-13)
    torch.testing.assert_close(result.sce, schur_block_score(scatter), rtol=1e-9, atol=0)


def test_images_copying_their_prompt_mean_have_sce_one():
    images, prompts = prompted(num_prompts=4, per_prompt=20, dim=16, spread=0.0)
    result = schur_complement_entropy(images, prompts, sigma=4.0, num_features=200)
    assert abs(result.sce.item() - 1.0) < 1e-4
    assert result.text_part.item() > 3.5  # the 4 prompts explain all the diversity


def test_images_ignoring_their_prompts_have_text_part_near_one():
    _, prompts = prompted(num_prompts=4, per_prompt=200, dim=16, spread=0.0)
    images = 3 * torch.randn(prompts.shape, dtype=torch.float64)
    result = schur_complement_entropy(images, prompts, sigma=4.0, num_features=200)
    assert 1.0 <= result.text_part.item() < 1.05
    assert result.sce.item() > 100  # the images' own diversity stays


@pytest.mark.parametrize("path", ["primal", "dual", "grouped"])
def test_matches_numpy_published_formula_with_given_frequencies(path):
    images, prompts = prompted(num_prompts=6, per_prompt=10, dim=12, spread=0.5)
    images, prompts = 3 * images, 3 * prompts
    frequencies = torch.randn(12, 50, dtype=torch.float64) / 4.0
    expected = numpy_schur_scores(images, prompts, frequencies)
    result = schur_complement_entropy(images, prompts, frequencies=frequencies, path=path)
    np.testing.assert_allclose([v.item() for v in result], expected, rtol=1e-6)


@pytest.mark.parametrize(("kernel", "options"), [("gaussian", {"sigma": 3.0}), ("cosine", {})])
@pytest.mark.parametrize("num_prompts", [3, 12])
@pytest.mark.parametrize("path", ["dual", "grouped", "auto"])
def test_every_path_gives_the_primal_numbers(kernel, options, num_prompts, path):
    images, prompts = prompted(num_prompts=num_prompts, per_prompt=4, dim=24, spread=0.4)
    options = {**options, "num_features": 40} if kernel == "gaussian" else options
    primal = schur_complement_entropy(images, prompts, kernel, path="primal", **options)
    other = schur_complement_entropy(images, prompts, kernel, path=path, **options)
    for left, right in zip(primal, other, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-9, atol=0)


def test_well_posed_result_does_not_depend_on_ridge():
    images, prompts = prompted(num_prompts=5, per_prompt=8, dim=16, spread=0.5)
    options = {"sigma": 4.0, "num_features": 100}
    small = schur_complement_entropy(3 * images, 3 * prompts, ridge=1e-10, **options)
    large = schur_complement_entropy(3 * images, 3 * prompts, ridge=1e-6, **options)
    for left, right in zip(small, large, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-4, atol=0)


@pytest.mark.parametrize("path", ["primal", "dual", "grouped"])
def test_one_prompt_per_sample_warns_and_returns_nan(path):
    images, prompts = prompted(num_prompts=30, per_prompt=1, dim=40, spread=0.5)
    with pytest.warns(DegenerateSchurComplementWarning, match="30 directions for 30 samples"):
        result = schur_complement_entropy(images, prompts, "cosine", path=path)
    assert torch.isnan(result.sce) and torch.isnan(result.text_part)
    torch.testing.assert_close(result.image_vendi, vendi_score(images))


def test_repeated_prompts_do_not_warn():
    images, prompts = prompted(num_prompts=10, per_prompt=3, dim=40, spread=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = schur_complement_entropy(images, prompts, "cosine")
    assert torch.isfinite(result.sce)


def test_image_vendi_is_the_vendi_score_of_the_images():
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    result = schur_complement_entropy(images, prompts, "cosine")
    torch.testing.assert_close(result.image_vendi, vendi_score(images, kernel="cosine"))


def test_score_from_eigenvalues_matches_block_score_with_padding_and_truncation():
    factor = torch.randn(6, 3, dtype=torch.float64)
    block = factor @ factor.T / 10  # rank 3 of 6
    eigenvalues = torch.linalg.eigvalsh(block)
    expected = schur_block_score(block)
    torch.testing.assert_close(schur_score(eigenvalues), expected)
    torch.testing.assert_close(schur_score(eigenvalues[3:], size=6), expected)
    padded = torch.cat([eigenvalues, torch.zeros(4, dtype=torch.float64)])
    torch.testing.assert_close(schur_score(padded, size=6), expected)


def test_cosine_kernel_normalises_each_sample():
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    scales = torch.rand(20, 1, dtype=torch.float64) + 0.5
    plain = schur_complement_entropy(images, prompts, "cosine")
    scaled = schur_complement_entropy(images * scales, prompts / scales, "cosine")
    for left, right in zip(plain, scaled, strict=True):
        torch.testing.assert_close(left, right)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"text_features": torch.randn(9, 8)}, ValueError, "same number of rows.*10 and 9"),
        ({"text_features": torch.randn(10, 6)}, ValueError, "same dimension, got 8 and 6"),
        ({"kernel": "rbf"}, ValueError, "`kernel` must be one of"),
        ({"sigma": None}, ValueError, "needs a bandwidth `sigma`"),
        ({"ridge": 0.0}, ValueError, "`ridge` must be a finite number > 0, got 0.0"),
        ({"path": "gram"}, ValueError, "`path` must be"),
        ({"kernel": "cosine", "sigma": 1.0}, ValueError, "only apply to kernel='gaussian'"),
        ({"image_features": torch.randn(10)}, ValueError, "`image_features` must be 2-D"),
        ({"frequencies": torch.randn(5, 4)}, ValueError, "`frequencies` has 5 rows"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(arguments, error, match):
    call = {
        "image_features": torch.randn(10, 8),
        "text_features": torch.randn(10, 8),
        "kernel": "gaussian",
        "sigma": 1.0,
        "num_features": 8,
        **arguments,
    }
    if "frequencies" in arguments:
        call.pop("sigma")
    with pytest.raises(error, match=match):
        schur_complement_entropy(**call)


def test_empty_input_raises():
    with pytest.raises(ValueError, match="at least one row"):
        schur_complement_entropy(torch.zeros(0, 4), torch.zeros(0, 4), "cosine")


@pytest.mark.parametrize("path", ["primal", "dual", "grouped"])
def test_skipping_image_vendi_keeps_the_scores(path):
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    full = schur_complement_entropy(images, prompts, "cosine", path=path)
    lean = schur_complement_entropy(images, prompts, "cosine", path=path, compute_image_vendi=False)
    torch.testing.assert_close(lean.sce, full.sce, rtol=0, atol=0)
    torch.testing.assert_close(lean.text_part, full.text_part, rtol=0, atol=0)
    assert torch.isnan(lean.image_vendi) and torch.isfinite(full.image_vendi)
