"""PromptRemover: removing the prompt's part makes images stop predicting their prompts."""

from __future__ import annotations

import pickle

import pytest
import torch

from diversity_callbacks import Kernel, PromptRemover

NUM_PROMPTS, DIM = 10, 32


def shared_space_pairs(per_prompt: int, seed: int):
    """CLIP-like pairs: an image embedding is its prompt's embedding plus content noise."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = torch.randn(NUM_PROMPTS, DIM, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(NUM_PROMPTS).repeat_interleave(per_prompt)
    prompts = vocabulary[labels]
    images = prompts + 0.8 * torch.randn(prompts.shape, generator=generator)
    return images, prompts, labels, vocabulary


def nearest_prompt_accuracy(images, labels, vocabulary) -> float:
    """Zero-shot accuracy: the prompt whose embedding has the largest cosine with the image."""
    images = images / images.norm(dim=1, keepdim=True)
    vocabulary = (vocabulary / vocabulary.norm(dim=1, keepdim=True)).to(images.dtype)
    return (images @ vocabulary.T).argmax(dim=1).eq(labels).double().mean().item()


def test_defocus_drops_nearest_prompt_accuracy_to_chance_and_focus_keeps_it():
    remover = PromptRemover().fit(*shared_space_pairs(per_prompt=50, seed=1)[:2])
    images, prompts, labels, vocabulary = shared_space_pairs(per_prompt=100, seed=2)
    before = nearest_prompt_accuracy(images, labels, vocabulary)
    defocused = nearest_prompt_accuracy(
        remover.transform(images, prompts, mode="defocus"), labels, vocabulary
    )
    focused = nearest_prompt_accuracy(
        remover.transform(images, prompts, mode="focus"), labels, vocabulary
    )
    chance = 1 / NUM_PROMPTS
    assert before > 0.95
    assert focused == 1.0
    assert abs(defocused - chance) < 0.05  # 1000 held-out images: chance +- 1.6 sigma


@pytest.mark.parametrize(
    "options", [{}, {"kernel": "cosine"}, {"kernel": "gaussian", "sigma": 6.0, "num_features": 20}]
)
def test_residual_is_uncorrelated_with_prompts_in_the_fitted_representation(options):
    images, prompts, _, _ = shared_space_pairs(per_prompt=20, seed=3)
    remover = PromptRemover(**options).fit(images, prompts)
    residual = remover.transform(images, prompts)
    explained = remover.transform(images, prompts, mode="focus")
    phi_text, phi_image = remover.feature_map(prompts), remover.feature_map(images)
    torch.testing.assert_close(residual + explained, phi_image)
    # the normal equations of the regression: phi_t^T (phi_i - phi_t Gamma) ~ 0
    correlation = phi_text.T @ residual
    assert correlation.abs().max() < 1e-5 * (phi_text.T @ phi_image).abs().max()


@pytest.mark.parametrize(
    "options", [{}, {"kernel": "gaussian", "sigma": 6.0, "num_features": 20, "seed": 7}]
)
def test_save_and_load_reproduce_the_transform(tmp_path, options):
    images, prompts, _, _ = shared_space_pairs(per_prompt=20, seed=4)
    remover = PromptRemover(rtol=1e-7, **options).fit(images, prompts)
    path = tmp_path / "remover.pt"
    remover.save(path)
    assert all(isinstance(value, torch.Tensor) for value in torch.load(path).values())
    loaded = PromptRemover.load(path)
    assert (loaded.kernel, loaded.rtol) == (remover.kernel, 1e-7)
    new_images, new_prompts, _, _ = shared_space_pairs(per_prompt=5, seed=5)
    for mode in ("defocus", "focus"):
        torch.testing.assert_close(
            loaded.transform(new_images, new_prompts, mode=mode),
            remover.transform(new_images, new_prompts, mode=mode),
            rtol=0,
            atol=0,
        )


def test_load_rejects_a_file_that_is_not_a_remover(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a saved PromptRemover"):
        PromptRemover.load(path)


class _NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (pickle.dumps({"gamma": _NotATensor()}), "UnpicklingError"),
        (b"", "EOFError"),
        (b"PK\x03\x04 truncated zip", "RuntimeError"),
    ],
)
def test_load_of_a_pickle_or_a_broken_file_names_the_file_not_torchs_advice(
    tmp_path, content, error
):
    path = tmp_path / "remover.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        PromptRemover.load(path)
    message = str(raised.value)
    assert message.startswith(f"{str(path)!r} is not a saved PromptRemover")
    assert f"torch.load(weights_only=True) cannot read it ({error})" in message
    # torch's own message advises weights_only=False, which would run code from the file
    assert "weights_only=False" not in message and raised.value.__suppress_context__


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        PromptRemover().transform(torch.randn(3, 4), torch.randn(3, 4))


def test_transform_checks_mode_and_dimensions():
    images, prompts, _, _ = shared_space_pairs(per_prompt=5, seed=6)
    remover = PromptRemover().fit(images, prompts)
    with pytest.raises(ValueError, match="`mode` must be 'defocus' or 'focus', got 'remove'"):
        remover.transform(images, prompts, mode="remove")
    with pytest.raises(ValueError, match="`image_features` must have feature dimension 32"):
        remover.transform(images[:, :8], prompts)
    with pytest.raises(ValueError, match="same number of rows"):
        remover.transform(images, prompts[:3])


def test_feature_map_is_accepted_and_matches_the_named_kernel():
    from diversity_callbacks.functional import normalize_rows

    images, prompts, _, _ = shared_space_pairs(per_prompt=20, seed=7)
    named = PromptRemover("cosine").fit(images, prompts)
    mapped = PromptRemover(feature_map=normalize_rows).fit(images, prompts)
    torch.testing.assert_close(mapped.transform(images, prompts), named.transform(images, prompts))
    with pytest.raises(ValueError, match="with a `feature_map` cannot be saved"):
        mapped.state_dict()


def test_text_noise_below_float32_precision_leaves_the_map_alone():
    images, prompts, _, _ = shared_space_pairs(per_prompt=20, seed=8)
    noise = torch.randn(prompts.shape, generator=torch.Generator().manual_seed(9))
    clean = PromptRemover().fit(images, prompts)
    noisy = PromptRemover().fit(images, prompts * (1 + 1e-5 * noise))
    assert noisy.fitted_rtol == 2.0**-20
    new_images, new_prompts, _, _ = shared_space_pairs(per_prompt=5, seed=10)
    new_noise = torch.randn(new_prompts.shape, generator=torch.Generator().manual_seed(11))
    new_prompts = new_prompts * (1 + 1e-5 * new_noise)
    # before the precision-set cut-off Gamma fitted the noise: max difference 1e-2
    difference = noisy.transform(new_images, new_prompts) - clean.transform(new_images, new_prompts)
    assert difference.abs().max() < 1e-4


def _corrupt(state, key, value):
    return (
        {**state, key: value} if value is not None else {k: v for k, v in state.items() if k != key}
    )


LINEAR_CORRUPTIONS = {
    "nan_gamma": ("gamma", lambda g: g.index_fill(0, torch.tensor([1]), float("nan")), "finite"),
    "transposed_gamma": ("gamma", lambda g: g.T.contiguous(), r"shape \(16, 32\), got"),
    "integer_gamma": ("gamma", lambda g: g.long(), "floating tensor of shape"),
    "float_input_dims": ("input_dims", lambda d: d.double(), "'input_dims' must be an integer"),
    "zero_input_dims": ("input_dims", lambda d: torch.tensor([0, 16]), "must be >= 1"),
    "inf_rtol": ("rtol", lambda r: torch.tensor(float("inf")), "'rtol' must be finite"),
    "vector_rtol": ("rtol", lambda r: r.reshape(1), r"'rtol' must be .* shape \(\)"),
    "unknown_kernel": ("kernel", lambda k: torch.tensor(list(b"rbf"), dtype=torch.uint8), "'rbf'"),
    "bad_bytes": ("kernel", lambda k: torch.tensor([255, 254], dtype=torch.uint8), "got None"),
    "kernel_as_int64": ("kernel", lambda k: k.long(), "1-D uint8 tensor"),
    "not_a_tensor": ("rtol", lambda r: 1e-6, "'rtol' must be a tensor, got float"),
    "extra_key": ("weight", lambda _: torch.zeros(2), "saves the keys"),
    "frequencies_in_linear": ("frequencies", lambda _: torch.zeros(32, 4), "saves the keys"),
}


@pytest.mark.parametrize("corruption", LINEAR_CORRUPTIONS)
def test_load_refuses_names_dtypes_shapes_and_values_that_do_not_fit(tmp_path, corruption):
    # such files used to load, then fail at transform or return NaN
    images, prompts, _, _ = shared_space_pairs(per_prompt=4, seed=7)
    state = PromptRemover(kernel="linear").fit(images, prompts[:, :16]).state_dict()
    key, change, match = LINEAR_CORRUPTIONS[corruption]
    path = tmp_path / "remover.pt"
    torch.save({**state, key: change(state.get(key))}, path)
    with pytest.raises(ValueError, match=f"remover.pt' is not a saved PromptRemover: .*{match}"):
        PromptRemover.load(path)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("frequencies", None, "saves the keys"),
        ("frequencies", torch.full((32, 20), float("nan"), dtype=torch.float64), "finite"),
        ("frequencies", torch.zeros(31, 20, dtype=torch.float64), r"shape \(32, 20\), got"),
        ("gamma", torch.zeros(20, 20, dtype=torch.float64), r"shape \(40, 40\), got"),
    ],
)
def test_load_checks_random_feature_frequencies_against_gamma(tmp_path, key, value, match):
    images, prompts, _, _ = shared_space_pairs(per_prompt=4, seed=8)
    remover = PromptRemover(kernel="gaussian:sigma=6.0,features=20").fit(images, prompts)
    path = tmp_path / "remover.pt"
    torch.save(_corrupt(remover.state_dict(), key, value), path)
    with pytest.raises(ValueError, match=f"not a saved PromptRemover: .*{match}"):
        PromptRemover.load(path)


@pytest.mark.parametrize(
    ("flat", "value"),
    [
        (
            {"kernel": "gaussian", "sigma": 6.0, "num_features": 20, "seed": 7},
            "gaussian:sigma=6.0,features=20,seed=7",
        ),
        ({"feature_map": torch.tanh}, Kernel(feature_map=torch.tanh)),
        ({"seed": 3}, Kernel("linear", seed=3)),  # the default stays linear
    ],
)
def test_flat_kernel_arguments_warn_and_give_identical_maps(flat, value):
    images, prompts, _, _ = shared_space_pairs(per_prompt=20, seed=4)
    with pytest.warns(FutureWarning, match="PromptRemover: passing `") as caught:
        old = PromptRemover(**flat).fit(images, prompts)
    assert len(caught) == 1
    new = PromptRemover(value).fit(images, prompts)
    assert old.kernel == new.kernel
    assert torch.equal(old.gamma, new.gamma)
    assert torch.equal(old.transform(images, prompts), new.transform(images, prompts))


def test_the_default_kernel_is_linear_and_a_kernel_callable_is_refused():
    assert PromptRemover().kernel == "linear"
    with pytest.raises(ValueError, match="PromptRemover needs an explicit feature map"):
        PromptRemover(torch.cdist)
