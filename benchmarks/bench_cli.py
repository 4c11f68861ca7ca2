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

Run: ``python benchmarks/bench_cli.py [--images 96] [--workers 1] [--repeats 3]``.
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
from pathlib import Path

import torch
from PIL import Image

from diversity_callbacks.cli import main as cli_main
from diversity_callbacks.embedders import CLIPEmbedder

SIZE = 256
BATCH = 32


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


def score_pass(folder: Path, workers: int, out: Path) -> tuple[float, float, float]:
    """(run seconds from the command's JSON, whole command wall and CPU seconds)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    with contextlib.redirect_stdout(io.StringIO()):  # the command's own table
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
                "--workers",
                str(workers),
                "--no-progress",
                "--json",
                str(out),
            ]
        )
    whole, whole_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if status != 0:
        raise SystemExit(f"score failed with status {status}")
    (run,) = json.loads(out.read_text())["runs"]
    return run["seconds"], whole, whole_cpu


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
    parser.add_argument(
        "--workers", type=int, default=1, help="score's DataLoader workers (default 1)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating passes of each (default 3)"
    )
    args = parser.parse_args()

    images = generator_like(args.images, SIZE)
    floats = images.float() / 255
    embedder = CLIPEmbedder("ViT-B-32", pretrained=None, batch_size=BATCH)
    embedder.embed_images(floats[:2])  # first-call set-up outside the timing
    bare, bare_cpu, run, whole, whole_cpu = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for index, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:05d}.png")
        for _ in range(args.repeats):
            wall, cpu = bare_pass(embedder, floats)
            bare.append(wall)
            bare_cpu.append(cpu)
            seconds, total, total_cpu = score_pass(folder, args.workers, Path(tmp) / "scores.json")
            run.append(seconds)
            whole.append(total)
            whole_cpu.append(total_cpu)
    n = args.images
    load = os.getloadavg()[0]
    print(
        f"{n} images of {SIZE} x {SIZE}, ViT-B-32 (random weights), fp32, batch {BATCH}; "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, score --workers "
        f"{args.workers}; load average {load:.1f}; best of {args.repeats} alternating passes"
    )
    print()
    print("| path | images/s (wall) | ratio to bare | images per CPU-second | ratio to bare |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| bare `embed_images` on decoded tensors | {n / min(bare):.2f} | 1.00 | "
        f"{n / min(bare_cpu):.2f} | 1.00 |"
    )
    print(
        f"| `score`: run (read, decode, embed, metrics) | {n / min(run):.2f} | "
        f"**{min(bare) / min(run):.2f}** | | |"
    )
    print(
        f"| `score`: whole command (+ model build, file discovery) | {n / min(whole):.2f} | "
        f"{min(bare) / min(whole):.2f} | {n / min(whole_cpu):.2f} | "
        f"{min(bare_cpu) / min(whole_cpu):.2f} |"
    )
    print()
    print("| command | seconds (wall, fresh interpreter) |")
    print("| --- | ---: |")
    help_best = min(help_seconds() for _ in range(args.repeats))
    print(f"| `diversity-callbacks score --help` | {help_best:.2f} |")


if __name__ == "__main__":
    main()
