"""Conditional-Vendi: the exact and streaming paths beside the bare float64 operations they need.

Prints one table, measured in one run on the same machine, for d = 512 rows in 50 Gaussian
clusters (``bench_vendi.make_data``) whose class labels are the conditions, Gaussian image kernel
(sigma 16), q = 1:

- exact: :func:`~diversity_callbacks.functional.conditional_vendi_score` beside a bare float64
  ``torch.linalg.eigvalsh`` of an n x n kernel matrix (the one eigendecomposition the score
  needs; the label kernel's entropy comes from the 50 class counts);
- streaming (``num_features=256``: 512 random Fourier features): rows per second beside a bare
  float64 GEMM ``X^T X`` of the same (n, 512) features, and the relative error against exact;
- the same with the cosine image kernel, whose streaming path is exact.

Run ``python benchmarks/bench_conditional_vendi.py --help``; n = 10k takes about two minutes on
2 cores (two 10k x 10k eigendecompositions).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from bench_vendi import CLUSTERS, SIGMA, make_data

from diversity_callbacks.functional import conditional_vendi_score

NUM_FEATURES = 256


def best_of(fn: Any, repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls and the last value."""
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def labels_of(n: int) -> torch.Tensor:
    """The cluster of each row of ``make_data(n)``, drawn as it draws them."""
    generator = torch.Generator().manual_seed(0)
    torch.randn(CLUSTERS, 512, generator=generator, dtype=torch.float64)
    return torch.randint(CLUSTERS, (n,), generator=generator)


def measure(n: int, kernel: str) -> dict[str, float]:
    data, labels = make_data(n), labels_of(n)
    repeats = 1 if n > 5000 else 3
    options = {"kernel": "gaussian", "sigma": SIGMA} if kernel == "gaussian" else {}
    streamed = {"num_features": NUM_FEATURES} if kernel == "gaussian" else {"num_features": 1}
    gram = data @ data.T
    bare_eig, _ = best_of(lambda: torch.linalg.eigvalsh(gram), repeats)
    exact_s, exact = best_of(
        lambda: conditional_vendi_score(data, condition_ids=labels, **options), repeats
    )
    features = data[:, :512].contiguous()
    bare_gemm, _ = best_of(lambda: features.T @ features, 5)
    stream_s, stream = best_of(
        lambda: conditional_vendi_score(data, condition_ids=labels, **options, **streamed), 5
    )
    return {
        "bare_eig": bare_eig, "exact": exact_s, "bare_gemm_rows": n / bare_gemm,
        "stream_rows": n / stream_s, "error": float(stream / exact - 1), "value": float(exact),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kernels", nargs="+", default=["gaussian", "cosine"])
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| kernel | n | bare eigvalsh (s) | exact (s) | ratio | bare GEMM (rows/s) | "
          "streaming (rows/s) | share of GEMM | streaming error | exact value |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kernel in args.kernels:
        for n in args.sizes:
            r = measure(n, kernel)
            print(
                f"| {kernel} | {n} | {r['bare_eig']:.3f} | {r['exact']:.3f} | "
                f"{r['exact'] / r['bare_eig']:.2f}x | {r['bare_gemm_rows']:.3g} | "
                f"{r['stream_rows']:.3g} | {r['stream_rows'] / r['bare_gemm_rows']:.0%} | "
                f"{r['error']:+.2e} | {r['value']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
