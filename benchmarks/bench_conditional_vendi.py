"""Conditional-Vendi: the exact and streaming paths beside the bare float64 operations they need.

Prints one table, measured in one process on the same machine, for d = 512 rows in 50 Gaussian
clusters (``bench_vendi.make_data``), q = 1, under three kinds of condition:

- ``labels`` (Gaussian sigma 16, or cosine): each row's cluster as its class label;
- ``prompts`` (Gaussian x Gaussian, sigma 16 and 20): each cluster's "prompt", a fixed random
  512-d text embedding shared by its rows (prompts repeat over samples, as over seeds).

Columns, each pair measured back to back (interleaved, best of the repeats):

- exact: :func:`~diversity_callbacks.functional.conditional_vendi_score` beside a bare float64
  ``torch.linalg.eigvalsh`` of the n x n Gaussian kernel matrix of the rows (what the
  definition needs for n x n kernels; with labels the joint kernel is block-diagonal and only
  its blocks are decomposed);
- streaming, functional: the same call with ``num_features=`` (256 frequencies, 512 random
  Fourier features; the cosine map is exact) on all n rows, in rows per second beside a bare
  float64 GEMM ``Phi^T Phi`` of an (n, 512) matrix, the size of the kernel features;
- streaming, metric: ``ConditionalVendiScore(num_features=...).update`` on float32 batches of
  1024 rows beside the bare GEMM on each batch (as ``bench_vendi.py`` compares
  ``VendiScore``), with the rows it holds back added (``_flush``), and the ``compute`` that
  follows; then both as a user calls them, ``update`` on every batch and one ``compute``
  (which reads the rows still held back where they are);
- the streaming score's relative error against the exact one.

Run ``python benchmarks/bench_conditional_vendi.py --help``. n = 10k takes minutes on 2 cores
(a 10k x 10k eigendecomposition for the bare baseline and one for the exact ``prompts`` row);
``--streaming-only`` skips the exact path and its baseline (their columns print ``nan``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from bench_vendi import CLUSTERS, DIM, SIGMA, make_data

from diversity_callbacks import ConditionalVendiScore
from diversity_callbacks.functional import conditional_vendi_score, gaussian_kernel

NUM_FEATURES = 256
PROMPT_SIGMA = 20.0
BATCH = 1024
CLOCK = {"time": time.perf_counter}
"""The clock of every column: wall time, or with ``--cpu-time`` this process's CPU time (one
thread: the same work, less swayed by other jobs on a loaded machine)."""
CASES: dict[str, dict[str, Any]] = {
    "Gaussian, labels": {"kernel": "gaussian", "sigma": SIGMA},
    "cosine, labels": {},
    "Gaussian x Gaussian, prompts": {
        "kernel": "gaussian", "sigma": SIGMA, "condition_kernel": "gaussian",
        "condition_sigma": PROMPT_SIGMA,
    },
}  # fmt: skip


def best_of(fn: Any, repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls and the last value."""
    best, value = float("inf"), None
    for _ in range(repeats):
        start = CLOCK["time"]()
        value = fn()
        best = min(best, CLOCK["time"]() - start)
    return best, value


def paired(ours: Any, bare: Any, repeats: int) -> tuple[float, float, Any]:
    """Best times of ``ours`` and ``bare``, run alternately, and the last value of ``ours``."""
    ours_s = bare_s = float("inf")
    value = None
    for _ in range(repeats):
        bare_s = min(bare_s, best_of(bare, 1)[0])
        seconds, value = best_of(ours, 1)
        ours_s = min(ours_s, seconds)
    return ours_s, bare_s, value


def conditions_of(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cluster label of each row of ``make_data(n)`` (drawn as it draws them) and its
    cluster's prompt embedding."""
    generator = torch.Generator().manual_seed(0)
    torch.randn(CLUSTERS, DIM, generator=generator, dtype=torch.float64)
    labels = torch.randint(CLUSTERS, (n,), generator=generator)
    prompts = torch.randn(CLUSTERS, DIM, generator=torch.Generator().manual_seed(1))
    return labels, prompts.to(torch.float64)[labels]


def measure(n: int, case: str, bare_eig: float | None) -> dict[str, float]:
    """One row of the table; the exact path is skipped (NaN) when ``bare_eig`` is None."""
    data = make_data(n)
    labels, prompts = conditions_of(n)
    options = CASES[case]
    given = {"condition_features": prompts} if "prompts" in case else {"condition_ids": labels}
    streamed = {"num_features": NUM_FEATURES}
    repeats = 1 if n > 5000 else 3
    exact_s, exact = float("nan"), float("nan")
    if bare_eig is not None:
        exact_s, exact = best_of(lambda: conditional_vendi_score(data, **given, **options), repeats)
    phi = torch.randn(n, 2 * NUM_FEATURES, dtype=torch.float64)
    stream_s, gemm_s, stream = paired(
        lambda: conditional_vendi_score(data, **given, **options, **streamed),
        lambda: phi.T @ phi,
        3,
    )
    metric = ConditionalVendiScore(**options, **streamed)
    conditions = prompts if "prompts" in case else labels
    batches = list(zip(data.float().split(BATCH), conditions.split(BATCH), strict=True))
    phi_batches = phi.split(BATCH)

    def feed() -> None:
        metric.reset()
        for rows, condition in batches:
            metric.update(rows, condition)
        metric._flush()  # the rows held back are part of the update's work, not of compute

    update_s, batch_gemm_s, _ = paired(
        feed, lambda: [torch.mm(block.T, block) for block in phi_batches], 3
    )
    compute_s, _ = best_of(metric.compute, 1)

    def feed_and_compute() -> None:
        metric.reset()
        for rows, condition in batches:
            metric.update(rows, condition)
        metric.compute()  # reads the rows still held back where they are (one process)

    user_s, _ = best_of(feed_and_compute, 3 if n <= 5000 else 1)
    return {
        "bare_eig": float("nan") if bare_eig is None else bare_eig, "exact": exact_s, "gemm_rows": n / gemm_s,
        "stream_rows": n / stream_s, "batch_gemm_rows": n / batch_gemm_s,
        "update_rows": n / update_s, "compute": compute_s, "user": user_s,
        "error": float(stream / exact - 1), "value": float(exact),
    }  # fmt: skip


def bare_eigvalsh(n: int) -> float:
    """Best time of a bare float64 eigvalsh of an n x n Gaussian kernel matrix of the rows:
    full rank like the joint kernel (a rank-512 linear Gram would deflate, and decompose
    faster than any kernel the score sees)."""
    kernel = gaussian_kernel(make_data(n), sigma=SIGMA)
    return best_of(lambda: torch.linalg.eigvalsh(kernel), 1 if n > 5000 else 3)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--streaming-only", action="store_true",
        help="skip the exact path and its bare eigvalsh (minutes at 10k): streaming columns only",
    )  # fmt: skip
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time")
    args = parser.parse_args()
    if args.cpu_time:
        CLOCK["time"] = time.process_time
    torch.manual_seed(0)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, {'CPU' if args.cpu_time else 'wall'} time, load average at start "
          f"{os.getloadavg()}")  # fmt: skip
    print("| case | n | bare eigvalsh (s) | exact (s) | ratio | bare GEMM (rows/s) | "
          "streaming (rows/s) | share | batched GEMM (rows/s) | metric update (rows/s) | "
          "share | compute (s) | update + compute (s) | streaming error | exact value |")  # fmt: skip
    print("| --- |" + " --- |" * 14)
    for n in args.sizes:
        bare_eig = None if args.streaming_only else bare_eigvalsh(n)
        for case in args.cases:
            r = measure(n, case, bare_eig)
            print(
                f"| {case} | {n} | {r['bare_eig']:.3f} | {r['exact']:.3f} | "
                f"{r['exact'] / r['bare_eig']:.2f}x | {r['gemm_rows']:.3g} | "
                f"{r['stream_rows']:.3g} | {r['stream_rows'] / r['gemm_rows']:.0%} | "
                f"{r['batch_gemm_rows']:.3g} | {r['update_rows']:.3g} | "
                f"{r['update_rows'] / r['batch_gemm_rows']:.0%} | {r['compute']:.2f} | "
                f"{r['user']:.3f} | "
                f"{r['error']:+.2e} | {r['value']:.4f} |",
                flush=True,
            )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
