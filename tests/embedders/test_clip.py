"""CLIPEmbedder on a tiny random open_clip model, loaded through the real code paths."""

from __future__ import annotations

import re
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from diversity_callbacks.embedders import CLIPEmbedder, ImageEmbedder, TextEmbedder
from tests.helpers.embedders import TINY_CLIP, generator_like

open_clip = pytest.importorskip("open_clip")


def tiny(**kwargs) -> CLIPEmbedder:
    return CLIPEmbedder(pretrained=kwargs.pop("pretrained", None), model_kwargs=TINY_CLIP, **kwargs)


def open_clip_embeddings(embedder: CLIPEmbedder, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip's own pipeline: PIL images, its preprocess transform, encode_image."""
    transform = pytest.importorskip("open_clip.transform")
    preprocess = transform.image_transform_v2(
        transform.PreprocessCfg(**embedder.model.visual.preprocess_cfg), is_train=False
    )
    images = [Image.fromarray(np.ascontiguousarray(p.permute(1, 2, 0).numpy())) for p in pixels]
    with torch.no_grad():
        return embedder.model.encode_image(
            torch.stack([preprocess(i) for i in images]), normalize=True
        )


def test_implements_both_protocols(tiny_embedder) -> None:
    assert isinstance(tiny_embedder, ImageEmbedder) and isinstance(tiny_embedder, TextEmbedder)


@pytest.mark.parametrize(("cfg", "size"), [(None, (64, 64)), ({"resize_mode": "squash"}, (48, 24))])
def test_matches_open_clip_on_pil_images(tiny_embedder, cfg, size) -> None:
    embedder = tiny_embedder if cfg is None else tiny(preprocess_cfg=cfg)
    pixels = generator_like(6, *size)
    got = embedder.embed_images(pixels, value_range="uint8")
    expected = open_clip_embeddings(embedder, pixels)
    assert got.dtype == torch.float32 and got.shape == (6, 32)
    # measured: above 0.999999 (one uint8 step of preprocessing difference, at most)
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.9999


def test_value_ranges_of_the_same_images_give_the_same_embeddings(tiny_embedder) -> None:
    pixels = generator_like(4, 40, 40)
    unit = pixels.float() / 255
    from_uint8 = tiny_embedder.embed_images(pixels, value_range="uint8")
    torch.testing.assert_close(tiny_embedder.embed_images(unit), from_uint8, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        tiny_embedder.embed_images(unit * 2 - 1, value_range="[-1,1]"),
        from_uint8,
        atol=1e-5,
        rtol=0,
    )


def test_weights_saved_to_a_file_load_back_through_open_clip(tmp_path, tiny_embedder) -> None:
    source = tiny(seed=1)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(source.model.state_dict(), path)
    loaded = tiny(pretrained=path)  # seed 0: random init overwritten by the file
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.embed_images(images), source.embed_images(images))
    assert not torch.allclose(tiny_embedder.embed_images(images), source.embed_images(images))
    assert loaded.pretrained == str(path)


def test_a_file_of_another_architecture_fails_with_the_file_named(tmp_path) -> None:
    path = tmp_path / "wrong.bin"
    torch.save({"visual.proj": torch.zeros(2, 2)}, path)
    with pytest.raises(RuntimeError, match=r"could not load the weights file .*wrong\.bin"):
        tiny(pretrained=path)


def test_random_weights_are_seeded_and_leave_the_global_rng_alone(tiny_embedder) -> None:
    state = torch.get_rng_state()
    again = tiny(seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    expected = tiny_embedder.model.state_dict()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_an_unreachable_tag_fails_fast_and_says_how_to_pass_a_file(monkeypatch, tmp_path) -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1: the hub is not even tried; an empty cache makes
    # the weights unavailable on machines that have them cached too
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError) as info:
        CLIPEmbedder("ViT-B-32", pretrained="laion2b_s34b_b79k")
    message = str(info.value)
    assert "'laion2b_s34b_b79k'" in message and "'ViT-B-32'" in message
    assert "pretrained='/path/to/open_clip_pytorch_model.bin'" in message
    assert "not in the cache and HF_HUB_OFFLINE is set" in message
    assert ".." not in message


def test_an_unreachable_hub_fails_fast_without_the_offline_flag(monkeypatch, tmp_path) -> None:
    # open_clip alone retries the download for about 47 s before it gives up
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # refused
    for proxy in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"not in the cache and http://127.0.0.1:9 cannot be"):
        CLIPEmbedder("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("content", [b"not a checkpoint" * 8, b""], ids=["garbage", "empty"])
def test_an_unreadable_weights_file_gets_the_package_message(tmp_path, content) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(
        RuntimeError, match=r"could not load the weights file .*weights\.bin"
    ) as info:
        tiny(pretrained=path)
    assert "weights_only=False" not in str(info.value)  # torch's advice would run the file's code
    assert "only read with weights_only=True" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model_name": "ViT-X-99"}, ValueError, "model_name='ViT-X-99' is not an open_clip"),
        ({"pretrained": "laion9b"}, ValueError, "neither an existing file nor an open_clip tag"),
        ({"pretrained": "/no/such/file.bin"}, ValueError, "'/no/such/file.bin' is neither"),
        ({"precision": "fp8"}, ValueError, "precision must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int, got 0"),
        ({"normalize": "yes"}, TypeError, "normalize must be a bool"),
        ({"value_range": "0-1"}, ValueError, "value_range must be one of"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        CLIPEmbedder(**{"pretrained": None} | kwargs)


def test_without_open_clip_the_error_gives_the_pip_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(ImportError, match=r"pip install diversity-callbacks\[clip\]"):
        tiny()


def test_raw_output_is_the_projection_and_default_is_its_unit_vector(tiny_embedder) -> None:
    raw_embedder = tiny(normalize=False)
    images = torch.rand(5, 3, 48, 48)
    with torch.no_grad():
        expected = raw_embedder.model.encode_image(raw_embedder.preprocess(images, "[0,1]"))
    raw = raw_embedder.embed_images(images)
    torch.testing.assert_close(raw, expected)
    unit = tiny_embedder.embed_images(images)
    torch.testing.assert_close(unit, raw / raw.norm(dim=1, keepdim=True))


def test_large_inputs_are_chunked_without_changing_results(tiny_embedder) -> None:
    images = torch.rand(10, 3, 32, 32)
    chunked = tiny(batch_size=3)
    torch.testing.assert_close(chunked.embed_images(images), tiny_embedder.embed_images(images))
    prompts = [f"prompt {i}" for i in range(7)]
    torch.testing.assert_close(chunked.embed_texts(prompts), tiny_embedder.embed_texts(prompts))


def test_each_prompt_is_encoded_once_and_rows_follow_the_order_asked(monkeypatch) -> None:
    embedder = tiny()
    encoded: list[int] = []
    encode_text = embedder.model.encode_text

    def counting(tokens: torch.Tensor) -> torch.Tensor:
        encoded.append(tokens.shape[0])
        return encode_text(tokens)

    monkeypatch.setattr(embedder.model, "encode_text", counting)
    first = embedder.embed_texts(["a cat", "a dog", "a cat"])
    second = embedder.embed_texts(("a dog", "a bird"))
    assert encoded == [2, 1]
    torch.testing.assert_close(first[0], first[2])
    torch.testing.assert_close(second[0], first[1])
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=16)(["a bird"])
    with torch.no_grad():
        expected = encode_text(tokens, normalize=True)
    torch.testing.assert_close(second[1:], expected)


def test_model_is_frozen_and_outputs_carry_no_graph(tiny_embedder) -> None:
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert not tiny_embedder.embed_images(images).requires_grad
    assert not tiny_embedder.model.training
    assert not any(p.requires_grad for p in tiny_embedder.model.parameters())


def test_outputs_are_ordinary_tensors_despite_inference_mode_inside(tiny_embedder) -> None:
    for features in (
        tiny_embedder.embed_images(torch.rand(2, 3, 32, 32)),
        tiny(normalize=False).embed_images(torch.rand(2, 3, 32, 32)),
        tiny_embedder.embed_texts(["a cat"]),
    ):
        assert not features.is_inference()
        features.mul_(2)  # an inference tensor refuses in-place updates outside inference mode
        weight = torch.ones(features.shape[1], requires_grad=True)
        (features @ weight).sum().backward()  # and refuses to be saved for backward
        assert weight.grad is not None


def test_fp32_ignores_the_callers_autocast_and_bf16_uses_its_own(tiny_embedder) -> None:
    images = torch.rand(4, 3, 32, 32)
    reference = tiny_embedder.embed_images(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(tiny_embedder.embed_images(images), reference)
    low = tiny(precision="bf16").embed_images(images)
    assert low.dtype == torch.float32 and not torch.equal(low, reference)
    assert torch.nn.functional.cosine_similarity(low, reference).min() > 0.99


def test_empty_inputs_give_empty_embeddings(tiny_embedder) -> None:
    assert tiny_embedder.embed_images(torch.rand(0, 3, 10, 10)).shape == (0, 32)
    assert tiny_embedder.embed_texts([]).shape == (0, 32)


@pytest.mark.parametrize("shape", [(2, 3, 0, 0), (2, 3, 0, 5), (1, 3, 7, 0)])
def test_images_without_pixels_are_refused_with_their_shape(tiny_embedder, shape) -> None:
    # they used to reach the resize and raise ZeroDivisionError
    with pytest.raises(ValueError, match=re.escape(f"at least 1 pixel, got shape {shape}")):
        tiny_embedder.embed_images(torch.rand(shape))
    assert tiny_embedder.embed_images(torch.rand(0, 3, 0, 0)).shape == (0, 32)


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        (torch.rand(2, 4, 32, 32), {}, r"shape \(B, 3, H, W\)"),
        (torch.full((2, 3, 32, 32), float("nan")), {}, "NaN"),
        (torch.rand(2, 3, 32, 32) * 2 - 1, {}, "suggest value_range='\\[-1,1\\]'"),
        (torch.rand(2, 3, 32, 32), {"value_range": "uint8"}, "must be torch.uint8"),
    ],
)
def test_embed_images_rejects_invalid_images(tiny_embedder, images, kwargs, match) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        tiny_embedder.embed_images(images, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_follows_cuda_input_and_runs_bf16_there() -> None:
    embedder = tiny(precision="bf16")
    images = torch.rand(8, 3, 64, 64)
    on_cpu = tiny().embed_images(images)
    on_gpu = embedder.embed_images(images.cuda())
    assert on_gpu.is_cuda and next(embedder.model.parameters()).is_cuda
    assert embedder.embed_texts(["a cat"]).is_cuda
    assert torch.nn.functional.cosine_similarity(on_gpu.cpu(), on_cpu).min() > 0.99
