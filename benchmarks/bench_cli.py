"""Throughput of ``diversity-callbacks score`` next to the bare embedder on the same images.

The same N generator-like 256 x 256 images are (a) decoded once into a float tensor in [0, 1]
and embedded batch by batch with ``CLIPEmbedder.embed_images`` (the bare embedder: nothing to
read, nothing to decode, no metric), and (b) written as PNG files and scored by the command,
in-process (``diversity_callbacks.cli.main``): files found, decoded in DataLoader workers,
checked, embedded by the same kind of embedder, every metric updated and computed. Both use
ViT-B-32 with random weights (``pretrained=None``: the compute of the pretrained model, nothing
to download), fp32, batches of 32, torch's default thread count. The two are run alternately
``--repeats`` times and each keeps its fastest pass (slower passes measure other load).

Columns: images per second of the bare embedder; of ``score``'s run (``seconds`` in its JSON:
reading, decoding, embedding and the metrics, i.e. what grows with the number of images); of the
whole command (also the model build and finding the files, paid once per command); the ratio of
the run's throughput to the bare embedder's. On a shared machine wall times swing with other
load, so the whole command is also counted in CPU seconds (this process and the DataLoader
workers it started), which other processes do not inflate as much.

A second table times ``diversity-callbacks --help`` in a fresh interpreter (``python -m
diversity_callbacks score --help``, best of ``--repeats``): the command line parses before
torch, torchmetrics or Lightning are imported, so the answer comes at once (target: 0.5 s).

A third table measures the rule behind ``--workers``' default (none below
``WORKERS_FROM`` images): the main process's decoding time per image of this size, and what
starting DataLoader workers costs before their first batch arrives (the same files, ``--batch``
images, 0 and 2 workers, fastest of ``--repeats``); workers can pay only once they save more
decoding than their start-up.

Run: ``python benchmarks/bench_cli.py [--images 96] [--size 256] [--workers 1 auto] [--repeats 3]``
(``auto``: the command's default for that many images).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from diversity_callbacks.cli import main as cli_main
from diversity_callbacks.cli.loading import decode_image, image_batches
from diversity_callbacks.cli.options import WORKERS_FROM, decoding_workers
from diversity_callbacks.embedders import CLIPEmbedder

BATCH = 32
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""``--tiny``: the test-sized ViT, where decoding and workers weigh most against the embedder."""


def generator_like(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 images with smooth structure and pixel noise (PNG-compresses like real output)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 16, size // 16, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    noisy = (smooth + 0.04 * torch.randn(count, 3, size, size, generator=generator)).clamp(0, 1)
    return (noisy * 255).round().to(torch.uint8)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bare_pass(embedder: CLIPEmbedder, images: torch.Tensor) -> tuple[float, float]:
    """(wall, CPU) seconds to embed pre-decoded float images in [0, 1], batch by batch."""
    start, cpu = time.perf_counter(), cpu_seconds()
    for batch in images.split(BATCH):
        embedder.embed_images(batch)
    return time.perf_counter() - start, cpu_seconds() - cpu


@contextlib.contextmanager
def embedder_seconds() -> Iterator[list[float]]:
    """``[seconds]`` spent in ``CLIPEmbedder.embed_images`` while the block runs: the rest of a
    run is the command's own work (reading, decoding, checks, metrics), which other load
    inflates less than the two-thread encoder."""
    spent = [0.0]
    original = CLIPEmbedder.embed_images

    def timed(self: CLIPEmbedder, *args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    CLIPEmbedder.embed_images = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        CLIPEmbedder.embed_images = original  # type: ignore[method-assign]


def score_pass(
    folder: Path, workers: str, out: Path, model_kwargs: dict | None
) -> tuple[float, float, float, float]:
    """(run seconds from the command's JSON, whole command wall and CPU seconds, the run's
    seconds outside the embedder)."""
    flags = [] if workers == "auto" else ["--workers", workers]
    if model_kwargs:
        flags += ["--model-config", json.dumps(model_kwargs)]
    start, cpu = time.perf_counter(), cpu_seconds()
    # The command's own table is not printed.
    with contextlib.redirect_stdout(io.StringIO()), embedder_seconds() as embedding:
        status = cli_main(
            [
                "score",
                str(folder),
                "--model",
                "ViT-B-32",
                "--pretrained",
                "none",
                "--batch-size",
                str(BATCH),
                *flags,
                "--no-progress",
                "--json",
                str(out),
            ]
        )
    whole, whole_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if status != 0:
        raise SystemExit(f"score failed with status {status}")
    (run,) = json.loads(out.read_text())["runs"]
    return run["seconds"], whole, whole_cpu, run["seconds"] - embedding[0]


def first_batch_seconds(files: list[Path], workers: int) -> float:
    """Seconds from building the command's image loader to its first batch of BATCH files."""
    start = time.perf_counter()
    batches = image_batches(
        files[:BATCH],
        [0] * len(files[:BATCH]),
        batch_size=BATCH,
        workers=workers,
        skip=False,
        skipped=[],
        conditional=False,
        run="bench",
        current=[],
    )
    next(batches)
    seconds = time.perf_counter() - start
    batches.close()
    return seconds


def help_seconds() -> float:
    """Wall seconds of ``python -m diversity_callbacks score --help`` in a fresh interpreter."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "diversity_callbacks", "score", "--help"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="number of images (default 96)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["1"],
        help="score's --workers, one row each; auto: the command's default (default 1)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating passes of each (default 3)"
    )
    parser.add_argument("--tiny", action="store_true", help="the test-sized ViT, not ViT-B-32")
    args = parser.parse_args()

    images = generator_like(args.images, args.size)
    floats = images.float() / 255
    model_kwargs = TINY_VIT if args.tiny else None
    model = "ViT-B-32" + (" (test-sized)" if args.tiny else "")
    embedder = CLIPEmbedder(
        "ViT-B-32", pretrained=None, batch_size=BATCH, model_kwargs=model_kwargs
    )
    embedder.embed_images(floats[:2])  # first-call set-up outside the timing
    bare, bare_cpu = [], []
    scored: dict[str, list[tuple[float, float, float, float]]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for index, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
        files = sorted(folder.iterdir())
        for _ in range(args.repeats):
            wall, cpu = bare_pass(embedder, floats)
            bare.append(wall)
            bare_cpu.append(cpu)
            for workers in args.workers:
                scored[workers].append(
                    score_pass(folder, workers, Path(tmp) / "scores.json", model_kwargs)
                )
        first = files[:BATCH]
        decode = min(timeit.repeat(lambda: [decode_image(str(f)) for f in first], number=1))
        decode /= len(first)
        startup = {
            w: min(first_batch_seconds(files, w) for _ in range(args.repeats)) for w in (0, 2)
        }
    n = args.images
    load = os.getloadavg()[0]
    print(
        f"{n} images of {args.size} x {args.size}, {model} (random weights), fp32, batch "
        f"{BATCH}; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; load average "
        f"{load:.1f}; best of {args.repeats} alternating passes"
    )
    print()
    print("| path | images/s (wall) | ratio to bare | images per CPU-second | ratio to bare |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| bare `embed_images` on decoded tensors | {n / min(bare):.2f} | 1.00 | "
        f"{n / min(bare_cpu):.2f} | 1.00 |"
    )
    owns = []
    for workers, passes in scored.items():
        run, whole, whole_cpu, own = (min(p[i] for p in passes) for i in range(4))
        chosen = decoding_workers(None if workers == "auto" else int(workers), n)
        named = f"--workers {workers}" + (f" ({chosen})" if workers == "auto" else "")
        print(
            f"| `score {named}`: run (read, decode, embed, metrics) | {n / run:.2f} | "
            f"**{min(bare) / run:.2f}** | | |"
        )
        print(
            f"| `score {named}`: whole command (+ model build, file discovery) | "
            f"{n / whole:.2f} | {min(bare) / whole:.2f} | {n / whole_cpu:.2f} | "
            f"{min(bare_cpu) / whole_cpu:.2f} |"
        )
        owns.append(
            f"`score {named}`: {own / n * 1e3:.3f} ms per image ({own / run:.0%} of the run)"
        )
    print("\nthe run outside the embedder (reading, decoding, checks, metrics), fastest pass:")
    print("\n".join(f"- {line}" for line in owns))
    print()
    per_image = decode
    extra = startup[2] - startup[0]
    print("| decoding (main process) | per image ms | first batch, 0 workers s | 2 workers s |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| {args.size} x {args.size} PNG | {per_image * 1e3:.2f} | {startup[0]:.3f} | "
        f"{startup[2]:.3f} |"
    )
    print(
        f"\nstarting 2 workers costs {extra:.2f} s before their first batch = the decoding of "
        f"{extra / per_image:.0f} images of this size in the main process (default: workers from "
        f"{WORKERS_FROM} images)"
    )
    print()
    print("| command | seconds (wall, fresh interpreter) |")
    print("| --- | ---: |")
    help_best = min(help_seconds() for _ in range(args.repeats))
    print(f"| `diversity-callbacks score --help` | {help_best:.2f} |")


if __name__ == "__main__":
    main()
