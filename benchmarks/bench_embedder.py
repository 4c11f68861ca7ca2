"""Throughput of ``CLIPEmbedder.embed_images`` next to the bare ``model.encode_image``.

Both run on the same model and batch in the same process, in alternating calls, and each
reports its fastest call (as ``timeit`` advises: slower calls measure other load on the
machine, not the code). The bare path gets input that is already preprocessed; ``embed_images``
gets generator-like float images in ``[-1, 1]`` at a size that needs resizing and does
everything itself: validation, resize, crop, normalisation, encoding, unit-normalising the
output. The overhead column is what that costs on top of the encoder.

Rows: a tiny random ViT (the test model, 32 x 32 input) fed images of its own size (validation
and normalisation only) and 64 x 64 images (plus a 2x downscale), and ViT-B-32 with random
weights (the compute of the pretrained one) fed 256 x 256 and 512 x 512 images, all at batch 32,
fp32 on CPU; with CUDA available, the same on the GPU in fp32 and under bf16 autocast.

Run: ``python benchmarks/bench_embedder.py [--calls 7] [--seconds 5] [--threads N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from diversity_callbacks.embedders import CLIPEmbedder

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

# name, open_clip architecture, config overrides, generator output size
MODELS = [
    ("tiny ViT (32px), 32px input", "ViT-B-32", TINY_CLIP, 32),
    ("tiny ViT (32px), 64px input", "ViT-B-32", TINY_CLIP, 64),
    ("ViT-B-32 (224px), 256px input", "ViT-B-32", {}, 256),
    ("ViT-B-32 (224px), 512px input", "ViT-B-32", {}, 512),
]


def generator_output(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Smooth random images in [-1, 1], like a decoder's tanh output."""
    coarse = torch.rand(batch, 3, size // 8, size // 8, device=device)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (smooth * 2 - 1).clamp(-1, 1)


def seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one call, the device's queue included."""
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    architecture: str,
    overrides: dict[str, Any],
    size: int,
    device: torch.device,
    precision: str,
    batch: int,
    calls: int,
    seconds_budget: float,
) -> tuple[float, float]:
    """Images/s of the bare encoder and of embed_images: fastest of alternating calls."""
    embedder = CLIPEmbedder(
        architecture,
        pretrained=None,
        device=device,
        precision=precision,
        value_range="[-1,1]",
        model_kwargs=overrides,
    )
    images = generator_output(batch, size, device)
    embedder.embed_images(images)  # moves the model, builds the resize matrices
    ready = embedder.preprocess(images, "[-1,1]")
    model = embedder.model
    dtype = torch.bfloat16 if precision == "bf16" else None

    def bare() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model.encode_image(ready)

    def ours() -> torch.Tensor:
        return embedder.embed_images(images)

    for fn in (bare, ours, bare, ours):  # warm-up
        seconds(fn, device)
    # as many alternating pairs as fit in about `seconds_budget`, at least `calls`
    pairs = max(calls, min(500, round(seconds_budget / seconds(bare, device))))
    best_bare, best_ours = float("inf"), float("inf")
    for _ in range(pairs):
        best_bare = min(best_bare, seconds(bare, device))
        best_ours = min(best_ours, seconds(ours, device))
    return batch / best_bare, batch / best_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=7, help="fewest timed calls of each")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing budget per row")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch default)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = [(torch.device("cpu"), "fp32")]
    if torch.cuda.is_available():
        settings += [(torch.device("cuda"), "fp32"), (torch.device("cuda"), "bf16")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    print("| model | device | precision | encode_image img/s | embed_images img/s | overhead |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for device, precision in settings:
        for name, architecture, overrides, size in MODELS:
            bare, ours = measure(
                architecture,
                overrides,
                size,
                device,
                precision,
                args.batch,
                args.calls,
                args.seconds,
            )
            print(
                f"| {name} | {device.type} | {precision} | {bare:,.1f} | {ours:,.1f} "
                f"| {100 * (bare / ours - 1):+.1f}% |"
            )


if __name__ == "__main__":
    main()
