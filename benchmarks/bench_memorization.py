"""Memorization scores: ``MemorizationScore.update`` + ``compute`` beside the bare limit.

n samples against m reference rows, D dimensions, float32 as an embedder returns them, fed in
batches of 1024 rows. The limit is a bare chunked float32 ``matmul`` + ``max`` over the same
chunks (the least any exact nearest-neighbour search does); ours adds the top-50 neighbours of
the calibrated l2 distance, the float64 recomputation of the chosen pairs and the per-sample
states. Two rows for ours:

- **steady**: a later evaluation of the same evaluation set, when each nearest training row's
  own nearest-other-row distance (authenticity) is already known;
- **first**: the first evaluation, which also finds those distances for every training row that
  is some sample's nearest (up to min(n, m) more rows searched against the reference, once per
  row for the whole run).

The two are interleaved, repeated, and the best of the repeats is kept (the machine is shared).
Run ``python benchmarks/bench_memorization.py --help``; the docs' table uses the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import torch

from diversity_callbacks.functional.memorization import default_chunk_size, unit_rows
from diversity_callbacks.metrics.memorization import MemorizationScore

BATCH = 1024


def bare(samples: torch.Tensor, reference: torch.Tensor, chunk: int) -> torch.Tensor:
    """The limit: normalised chunks of samples times the reference, and each row's max."""
    best = []
    for start in range(0, samples.shape[0], chunk):
        block = torch.nn.functional.normalize(samples[start : start + chunk], dim=1)
        best.append((block @ reference.T).max(dim=1).values)
    return torch.cat(best)


def ours(metric: MemorizationScore, samples: torch.Tensor, warm: bool) -> Any:
    metric.reset()
    if not warm:
        metric.reference_nn_distance.fill_(math.nan)
    for batch in samples.split(BATCH):
        metric.update(batch)
    return metric.compute()


def timed(function: Any, clock: Any) -> float:
    start = clock()
    function()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples")
    parser.add_argument("--m", type=int, default=100_000, help="reference rows")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the process's CPU time, which other jobs on a shared machine inflate less",
    )
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(args.m, args.dim, generator=generator)
    samples = torch.randn(args.n, args.dim, generator=generator)
    metric = MemorizationScore(reference)
    unit = unit_rows(reference, "reference", torch.float32)
    chunk = metric.chunk_size or default_chunk_size(args.m)
    ours(metric, samples[:BATCH], warm=True)  # warm-up, also of the allocator
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    best = {"bare": math.inf, "steady": math.inf, "first": math.inf}
    for _ in range(args.repeats):
        best["bare"] = min(best["bare"], timed(lambda: bare(samples, unit, chunk), clock))
        best["first"] = min(best["first"], timed(lambda: ours(metric, samples, warm=False), clock))
        best["steady"] = min(best["steady"], timed(lambda: ours(metric, samples, warm=True), clock))
    print(
        f"n = {args.n}, m = {args.m}, D = {args.dim}, float32; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}; best of {args.repeats}, {args.clock} "
        "seconds\n"
    )
    print("| | seconds | samples / s | share of the limit's throughput |")
    print("| --- | --- | --- | --- |")
    for name, label in (
        ("bare", "limit: chunked float32 matmul + max"),
        ("steady", "MemorizationScore, later evaluations"),
        ("first", "MemorizationScore, first evaluation"),
    ):
        seconds = best[name]
        print(
            f"| {label} | {seconds:.2f} | {args.n / seconds:,.0f} | {best['bare'] / seconds:.0%} |"
        )


if __name__ == "__main__":
    main()
