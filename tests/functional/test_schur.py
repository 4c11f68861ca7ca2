"""Schur complement entropy: closed forms, the published formula in NumPy, paths, bad inputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from diversity_callbacks.functional import (
    Kernel,
    normalize_rows,
    schur_block_score,
    schur_complement_entropy,
    vendi_score,
)
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
    # float64 data: the cut-off is at round-off, far below the prompts' eigenvalues
    image_part, whitened = schur_complement(*blocks, rtol=0.0, num_samples=n)
    text_part = whitened.T @ whitened
    groups = images.view(5, 6, 8)
    residual = (groups - groups.mean(dim=1, keepdim=True)).reshape(n, 8)
    scatter = residual.T @ residual / n
    torch.testing.assert_close(image_part, scatter, rtol=0, atol=1e-10 * float(blocks[2].max()))
    torch.testing.assert_close(image_part + text_part, images.T @ images / n)
    result = schur_complement_entropy(images, prompts, kernel)
    # scored on the scale tr(C_II) = 1 (a no-op for cosine, whose rows have unit norm)
    scale = torch.trace(blocks[2])
    torch.testing.assert_close(result.sce, schur_block_score(scatter / scale), rtol=1e-9, atol=0)


def test_images_copying_their_prompt_mean_have_sce_one():
    images, prompts = prompted(num_prompts=4, per_prompt=20, dim=16, spread=0.0)
    result = schur_complement_entropy(
        images, prompts, Kernel("gaussian", sigma=4.0, num_features=200)
    )
    assert abs(result.sce.item() - 1.0) < 1e-4
    assert result.text_part.item() > 3.5  # the 4 prompts explain all the diversity


def test_images_ignoring_their_prompts_have_text_part_near_one():
    _, prompts = prompted(num_prompts=4, per_prompt=200, dim=16, spread=0.0)
    images = 3 * torch.randn(prompts.shape, dtype=torch.float64)
    result = schur_complement_entropy(
        images, prompts, Kernel("gaussian", sigma=4.0, num_features=200)
    )
    assert 1.0 <= result.text_part.item() < 1.05
    assert result.sce.item() > 100  # the images' own diversity stays


@pytest.mark.parametrize("path", ["primal", "dual", "grouped"])
def test_matches_numpy_published_formula_with_given_frequencies(path):
    images, prompts = prompted(num_prompts=6, per_prompt=10, dim=12, spread=0.5)
    images, prompts = 3 * images, 3 * prompts
    frequencies = torch.randn(12, 50, dtype=torch.float64) / 4.0
    expected = numpy_schur_scores(images, prompts, frequencies)
    result = schur_complement_entropy(
        images, prompts, Kernel("gaussian", frequencies=frequencies), path=path
    )
    np.testing.assert_allclose([v.item() for v in result], expected, rtol=1e-6)


@pytest.mark.parametrize("kernel", [Kernel("gaussian", sigma=3.0, num_features=40), "cosine"])
@pytest.mark.parametrize("num_prompts", [3, 12])
@pytest.mark.parametrize("path", ["dual", "grouped", "auto"])
def test_every_path_gives_the_primal_numbers(kernel, num_prompts, path):
    images, prompts = prompted(num_prompts=num_prompts, per_prompt=4, dim=24, spread=0.4)
    primal = schur_complement_entropy(images, prompts, kernel, path="primal")
    other = schur_complement_entropy(images, prompts, kernel, path=path)
    for left, right in zip(primal, other, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-9, atol=0)


def test_well_posed_result_does_not_depend_on_rtol():
    images, prompts = prompted(num_prompts=5, per_prompt=8, dim=16, spread=0.5)
    options = {"kernel": Kernel("gaussian", sigma=4.0, num_features=100)}
    small = schur_complement_entropy(3 * images, 3 * prompts, rtol=0.0, **options)
    large = schur_complement_entropy(3 * images, 3 * prompts, rtol=1e-6, **options)
    for left, right in zip(small, large, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-12, atol=0)


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
        ({"kernel": "gaussian"}, ValueError, "needs a bandwidth `sigma`"),
        ({"rtol": 1.0}, ValueError, r"`rtol` must be None .* or a number in \[0, 1\), got 1.0"),
        ({"path": "gram"}, ValueError, "`path` must be"),
        ({"kernel": "cosine:sigma=1"}, ValueError, "`sigma` only applies to kernel='gauss"),
        ({"image_features": torch.randn(10)}, ValueError, "`image_features` must be 2-D"),
        (
            {"kernel": Kernel("gaussian", frequencies=torch.randn(5, 4))},
            ValueError,
            "`frequencies` has 5 rows",
        ),
    ],
)
def test_bad_inputs_raise_naming_the_argument(arguments, error, match):
    call = {
        "image_features": torch.randn(10, 8),
        "text_features": torch.randn(10, 8),
        "kernel": Kernel("gaussian", sigma=1.0, num_features=8),
        **arguments,
    }
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


def clip_like(num_prompts: int, per_prompt: int, dim: int = 512, seed: int = 0):
    """Float32 (images, prompts) like raw CLIP embeddings: prompts share a large common direction."""
    generator = torch.Generator().manual_seed(seed)
    common = 2 * torch.randn(dim, generator=generator)
    prompts = torch.randn(num_prompts, dim, generator=generator) + common
    mixing = torch.randn(dim, dim, generator=generator) / dim**0.5
    images = (prompts @ mixing).repeat_interleave(per_prompt, 0)
    images = images + 2 * torch.randn(images.shape, generator=generator)
    return images, prompts.repeat_interleave(per_prompt, 0)


def perturb_one_prompt(prompts, relative: float, per_prompt: int):
    """Each row of the first prompt times (1 + relative noise): a re-encoded, not a new, prompt."""
    generator = torch.Generator().manual_seed(1)
    noisy = prompts.double().clone()
    rows = noisy[:per_prompt]
    noisy[:per_prompt] = rows * (
        1 + relative * torch.randn(rows.shape, generator=generator, dtype=torch.float64)
    )
    return noisy


TEXT_PRECISIONS = {
    "float32": lambda prompts: prompts.float(),
    "bfloat16": lambda prompts: prompts.to(torch.bfloat16),
    "float32 holding bf16 values": lambda prompts: prompts.to(torch.bfloat16).float(),
}


@pytest.mark.parametrize("precision", list(TEXT_PRECISIONS))
@pytest.mark.parametrize("relative", [1e-6, 1e-5, 1e-4])
def test_text_noise_below_the_input_precision_moves_sce_by_under_one_percent(precision, relative):
    # 4 prompts x 8 seeds; the 8 text rows of one prompt differ by `relative` noise, as a prompt
    # re-encoded in other batches (or at bf16 / TF32 precision) does. Before the precision-set
    # cut-off, a 1e-8 ridge explained the noise directions: SCE fell by 4% at 1e-5, 30% at 1e-4.
    images, prompts = clip_like(num_prompts=4, per_prompt=8)
    cast = TEXT_PRECISIONS[precision]
    clean = schur_complement_entropy(images, cast(prompts)).sce
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateSchurComplementWarning)
        noisy = schur_complement_entropy(images, cast(perturb_one_prompt(prompts, relative, 8))).sce
    assert abs(noisy.item() / clean.item() - 1) < 0.01  # tolerance: 1% of SCE


@pytest.mark.parametrize("precision", list(TEXT_PRECISIONS))
def test_one_prompt_per_sample_still_warns_at_low_precision(precision):
    images, prompts = clip_like(num_prompts=32, per_prompt=1)
    with pytest.warns(DegenerateSchurComplementWarning, match="32 directions for 32 samples"):
        result = schur_complement_entropy(images, TEXT_PRECISIONS[precision](prompts))
    assert torch.isnan(result.sce)


@pytest.mark.parametrize("path", ["primal", "dual", "grouped"])
def test_every_path_cuts_the_same_noise_directions(path):
    images, prompts = clip_like(num_prompts=4, per_prompt=8, dim=24)
    noisy = perturb_one_prompt(prompts, 1e-4, 8).float()
    primal = schur_complement_entropy(images, noisy, path="primal")
    other = schur_complement_entropy(images, noisy, path=path)
    clean = schur_complement_entropy(images, prompts, path=path)
    torch.testing.assert_close(other.sce, primal.sce, rtol=1e-9, atol=0)
    # the noise only moves the kept prompt direction, by first order: 1e-4 x a 1e-2 share
    torch.testing.assert_close(other.sce, clean.sce, rtol=1e-5, atol=0)


def test_rtol_overrides_the_precision_cut_off():
    images, prompts = clip_like(num_prompts=4, per_prompt=8, dim=24)
    noisy = perturb_one_prompt(prompts, 1e-4, 8)  # float64: trusted to 2^-52
    trusting = schur_complement_entropy(images, noisy)
    coarse = schur_complement_entropy(images, noisy, rtol=2.0**-20)
    clean = schur_complement_entropy(images, prompts)
    assert trusting.sce < 0.99 * clean.sce  # float64 noise is signal: its directions explain
    torch.testing.assert_close(coarse.sce, clean.sce, rtol=1e-5, atol=0)


def test_linear_kernel_scores_do_not_depend_on_the_features_scale():
    # raw CLIP-like embeddings have norms ~50 here: exp(S * H) with S = tr(L_img) overflowed
    images, prompts = clip_like(num_prompts=4, per_prompt=8, dim=24)
    raw = schur_complement_entropy(images, prompts, "linear")
    scale = images.double().pow(2).sum(1).mean().sqrt()
    unit = schur_complement_entropy(images / scale, prompts, "linear")
    assert all(bool(torch.isfinite(value)) for value in raw)
    for left, right in zip(raw, unit, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-8, atol=0)


@pytest.mark.parametrize("as_float32", [False, True])
def test_two_bf16_encodings_one_ulp_apart_are_one_prompt(as_float32):
    # Half the seeds of a prompt see one bf16 encoding, half another one ulp away in every
    # entry (a batch-size-dependent kernel): at bf16 precision that is one prompt. Cast up to
    # float32, the values are still bf16 numbers and must be trusted only that far (11% off
    # when trusted to float32's precision).
    images, prompts = clip_like(num_prompts=4, per_prompt=8)
    text = prompts.to(torch.bfloat16)
    steps = torch.randint(0, 2, (4, 512), generator=torch.Generator().manual_seed(2))
    other = text.clone()
    other[4:8] = (text[4:8].view(torch.int16) + (2 * steps - 1).to(torch.int16)).view(
        torch.bfloat16
    )
    cast = (lambda x: x.float()) if as_float32 else (lambda x: x)
    clean = schur_complement_entropy(images, cast(text)).sce
    mixed = schur_complement_entropy(images, cast(other)).sce
    assert abs(mixed.item() / clean.item() - 1) < 1e-3


def test_defaults_agree_on_the_cosine_kernel():
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    default = schur_complement_entropy(images, prompts)
    cosine = schur_complement_entropy(images, prompts, "cosine")
    mapped = schur_complement_entropy(images, prompts, Kernel(feature_map=normalize_rows))
    for left, middle, right in zip(default, cosine, mapped, strict=True):
        assert torch.equal(left, middle) and torch.equal(left, right)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (
            {"kernel": Kernel(feature_map=lambda x: x.sum(1))},
            r"`feature_map` must map .* got a tensor of shape",
        ),
        (
            {"kernel": Kernel(feature_map=lambda x: x[1:])},
            r"with N = \d+ and D >= 1, got a tensor of shape",
        ),
        (
            {"kernel": Kernel(feature_map=lambda x: x / 0)},
            "`feature_map` returned NaN or Inf features",
        ),
        ({"kernel": lambda x, y: x @ y.T}, "needs an explicit feature map"),
        ({"kernel": "cosine", "feature_map": torch.tanh}, "pass either `kernel` or `feature_map`"),
        ({"kernel": "gaussian", "sigma": 1e-300}, "`sigma` must be a bandwidth"),
        ({"kernel": "gaussian", "sigma": 1.0, "seed": 2**64}, r"`seed` must be an integer"),
    ],
)
def test_feature_maps_and_kernels_are_checked(arguments, match):
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    with pytest.raises(ValueError, match=match):
        schur_complement_entropy(images, prompts, **arguments)


def test_nan_frequencies_are_named():
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    frequencies = torch.full((8, 4), math.nan, dtype=torch.float64)
    with pytest.raises(ValueError, match="`frequencies` must be finite"):  # was "all zero"
        schur_complement_entropy(images, prompts, Kernel("gaussian", frequencies=frequencies))


@pytest.mark.parametrize("kernel", ["cosine", "linear", "gaussian"])
def test_zero_feature_columns_are_named(kernel):
    if kernel == "gaussian":
        kernel = Kernel("gaussian", sigma=1.0, num_features=4)
    with pytest.raises(ValueError, match="`text_features` must have at least one feature column"):
        schur_complement_entropy(torch.randn(6, 4), torch.randn(6, 0), kernel)


@pytest.mark.parametrize("scale", [1e200, 1e-170])
def test_cosine_takes_rows_of_any_finite_norm(scale):
    images, prompts = prompted(num_prompts=4, per_prompt=5, dim=8, spread=0.5)
    plain = schur_complement_entropy(images, prompts)
    scaled = schur_complement_entropy(images * scale, prompts * scale)
    for left, right in zip(plain, scaled, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-9, atol=0)
