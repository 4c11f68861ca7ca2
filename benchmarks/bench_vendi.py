"""Vendi score: speed and memory against the reference package ``vendi-score`` 0.0.3.

Prints one table per part, all measured in one run on the same machine:

1. d = 512, n in {1k, 5k, 10k}: the reference's ``score_X`` (cosine) and ``score_K`` (exact
   Gaussian, kernel matrix built with NumPy and counted in its time) against
   :func:`diversity_callbacks.functional.vendi_score`, q = 1 (``score_X`` ignores q);
2. 100k rows of d = 512 streamed in batches of 1024 through ``VendiScore(kernel="cosine")``:
   update throughput next to a bare float64 ``X.T @ X`` per batch on the same rows;
3. the random-feature Gaussian at n = 50k, and its error against the exact kernel at an n where
   the exact one still runs.

Each measurement runs in a fresh subprocess so that its peak memory (``ru_maxrss``) is its own;
the memory column is the growth of the peak resident set during the measured call, which leaves
out the interpreter, torch and the input data. Run ``python benchmarks/bench_vendi.py --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Any

DIM = 512
CLUSTERS = 50
SIGMA = 16.0  # within-cluster kernel about 0.6, between clusters about 0.1 for make_data below
BATCH = 1024


def make_data(n: int, seed: int = 0) -> Any:
    """(n, 512) float64 rows in 50 Gaussian clusters: a spectrum that is neither flat nor rank 1."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLUSTERS, DIM, generator=generator, dtype=torch.float64)
    labels = torch.randint(CLUSTERS, (n,), generator=generator)
    noise = torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    return centres[labels] + 0.5 * noise


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Any, repeats: int = 3, budget_s: float = 20.0) -> dict[str, float]:
    """Best time of up to ``repeats`` runs of ``fn`` (no new run once ``budget_s`` is spent).

    The same rule for the reference and for ours: cheap calls are repeated to filter out noise
    from a shared machine, calls of a minute run once. Also the value and the growth of the peak
    resident set.
    """
    before = peak_mib()
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = float(fn())
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent > budget_s:
            break
    return {"seconds": best, "value": value, "memory_mib": peak_mib() - before}


def case_table(method: str, kernel: str, n: int) -> dict[str, float]:
    """One cell of part 1: the reference or ours, cosine or exact Gaussian, n rows."""
    data = make_data(n)
    if method == "ref":
        import numpy as np
        from vendi_score import vendi

        array = data.numpy()

        def gaussian_score_k(x: np.ndarray) -> float:
            squared = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
            kernel_matrix = np.exp(-np.maximum(squared, 0) / (2 * SIGMA**2))
            return vendi.score_K(kernel_matrix, q=1)

        run = (lambda x: vendi.score_X(x, q=1)) if kernel == "cosine" else gaussian_score_k
        run(array[:50])  # warm-up: BLAS/LAPACK initialisation is not what we measure
        return timed(lambda: run(array))
    from diversity_callbacks.functional import vendi_score

    options = {"kernel": "gaussian", "sigma": SIGMA} if kernel == "gaussian" else {}
    vendi_score(data[:50], **options)
    return timed(lambda: vendi_score(data, q=1, **options))


def case_streaming(n: int) -> dict[str, float]:
    """Part 2: VendiScore.update on float32 batches (with the rows it holds back added) vs a
    bare float64 X.T @ X per batch."""
    import torch

    from diversity_callbacks import VendiScore

    batches = make_data(n).to(torch.float32).split(BATCH)
    batches64 = [batch.to(torch.float64) for batch in batches]
    metric = VendiScore(kernel="cosine")
    metric.update(batches[0])  # allocate the state and warm up
    before = peak_mib()
    ours, bare = math.inf, math.inf
    for _ in range(3):  # interleaved, best of three: the machine may be shared
        metric.reset()
        start = time.perf_counter()
        for batch in batches:
            metric.update(batch)
        metric._flush()  # the rows held back for one SYRK are the update's work, not compute's
        ours = min(ours, time.perf_counter() - start)
        start = time.perf_counter()
        for batch in batches64:
            torch.mm(batch.T, batch)
        bare = min(bare, time.perf_counter() - start)
    memory = peak_mib() - before
    start = time.perf_counter()
    value = float(metric.compute())
    return {
        "ours_rows_per_s": n / ours,
        "bare_rows_per_s": n / bare,
        "memory_mib": memory,
        "compute_seconds": time.perf_counter() - start,
        "value": value,
    }


def case_rff(n: int, num_features: int) -> dict[str, float]:
    """Part 3, timing: the random-feature Gaussian of n rows."""
    from diversity_callbacks.functional import vendi_score

    data = make_data(n)
    options = {"kernel": "gaussian", "sigma": SIGMA, "num_features": num_features}
    vendi_score(data[:50], **options)
    return timed(lambda: vendi_score(data, q=1, **options))


def case_rff_error(n: int, num_features: list[int]) -> dict[str, Any]:
    """Part 3, accuracy: exact and random-feature Gaussian scores of the same n rows."""
    from diversity_callbacks.functional import Kernel, vendi_score

    data = make_data(n)
    exact = vendi_score(data, q=[1, 2], kernel=Kernel("gaussian", sigma=SIGMA))
    errors = {}
    for m in num_features:
        approx = vendi_score(data, q=[1, 2], kernel=Kernel("gaussian", sigma=SIGMA, num_features=m))
        errors[m] = {key: float(approx[key] / exact[key] - 1) for key in exact}
    return {"exact": {key: float(value) for key, value in exact.items()}, "errors": errors}


class PeakRss:
    """Peak growth of the resident set during a ``with`` block, sampled every millisecond.

    Lets one process time several methods interleaved and still give each its own memory.
    """

    def __init__(self) -> None:
        self.peak_mib = 0.0

    @staticmethod
    def _rss_mib() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak_mib = max(self.peak_mib, self._rss_mib() - self._start)
            time.sleep(0.001)

    def __enter__(self) -> PeakRss:
        import threading

        self._start, self._done = self._rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._rss_mib() - self._start)


def interleaved(runs: dict[str, Any], repeats: int, budget_s: float = 60.0) -> dict[str, Any]:
    """Best wall and CPU time, value and peak memory growth of each run, interleaved per repeat.

    CPU time (``process_time``: the seconds all of this process's threads ran) is what load from
    other processes changes least; the wall time is what a user waits.
    """
    results = {name: {"seconds": math.inf, "cpu": math.inf, "memory_mib": 0.0} for name in runs}
    spent = 0.0
    for _ in range(repeats):
        for name, run in runs.items():
            with PeakRss() as peak:
                start, cpu = time.perf_counter(), time.process_time()
                value = float(run())
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu
            result = results[name]
            result["seconds"] = min(result["seconds"], seconds)
            result["cpu"] = min(result["cpu"], cpu)
            result["memory_mib"] = max(result["memory_mib"], peak.peak_mib)
            result["value"] = value
            spent += seconds
        if spent > budget_s:
            break
    return results


def case_cosine(n: int, batch: int) -> dict[str, Any]:
    """Cosine at large n: score_dual, the functional form and the metric class, interleaved."""
    from vendi_score import vendi

    from diversity_callbacks import VendiScore
    from diversity_callbacks.functional import vendi_score

    data = make_data(n)
    array = data.numpy()
    metric = VendiScore(kernel="cosine")

    def metric_run() -> Any:
        metric.reset()
        for rows in data.split(batch):
            metric.update(rows)
        return metric.compute()

    runs = {
        "score_dual": lambda: vendi.score_dual(array, q=1),
        "functional": lambda: vendi_score(data, q=1),
        "metric": metric_run,
    }
    for run in runs.values():  # warm-up: BLAS initialisation and first allocations
        run()
    return interleaved(runs, repeats=5 if n <= 50_000 else 3)


def case_gaussian(n: int) -> dict[str, Any]:
    """Exact Gaussian: the functional form and the metric class against a bare eigvalsh of K."""
    import torch

    from diversity_callbacks import VendiScore
    from diversity_callbacks.functional import Kernel, gaussian_kernel, vendi_score

    data = make_data(n)
    metric = VendiScore(kernel=Kernel("gaussian", sigma=SIGMA))
    kernel = gaussian_kernel(data, sigma=SIGMA)

    def metric_run() -> Any:
        metric.reset()
        for rows in data.split(BATCH):
            metric.update(rows)
        return metric.compute()

    runs = {
        "eigvalsh": lambda: torch.linalg.eigvalsh(kernel)[-1],
        "functional": lambda: vendi_score(data, q=1, kernel=Kernel("gaussian", sigma=SIGMA)),
        "metric": metric_run,
    }
    vendi_score(data[:50], kernel=Kernel("gaussian", sigma=SIGMA))
    result = interleaved(runs, repeats=3 if n <= 5000 else 1)
    result["matrix_mib"] = n * n * 8 / 2**20
    return result


CASES = {
    "table": case_table,
    "streaming": case_streaming,
    "rff": case_rff,
    "rff_error": case_rff_error,
    "cosine": case_cosine,
    "gaussian": case_gaussian,
}


def in_subprocess(case: str, *args: Any) -> Any:
    """Run one case in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "--case", json.dumps([case, *args])]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    for row in [header, ["-" * width for width in widths], *rows]:
        print(
            "| "
            + " | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )


def part_table(sizes: list[int]) -> None:
    rows = []
    for kernel in ("cosine", "gaussian"):
        for n in sizes:
            ref = in_subprocess("table", "ref", kernel, n)
            ours = in_subprocess("table", "ours", kernel, n)
            rows.append(
                [
                    kernel,
                    f"{n:,}",
                    f"{ref['seconds']:.3f}",
                    f"{ours['seconds']:.3f}",
                    f"{ref['seconds'] / ours['seconds']:.1f}x",
                    f"{ref['memory_mib']:.0f}",
                    f"{ours['memory_mib']:.0f}",
                    f"{abs(ours['value'] / ref['value'] - 1):.1e}",
                ]
            )
    header = ["kernel", "n", "ref s", "ours s", "speed-up", "ref MiB", "ours MiB", "|rel diff|"]
    print_table("Vendi score, q = 1, d = 512 (reference: vendi-score 0.0.3)", header, rows)


def part_streaming(n: int) -> None:
    result = in_subprocess("streaming", n)
    ratio = result["ours_rows_per_s"] / result["bare_rows_per_s"]
    row = [
        f"{n:,}",
        f"{result['ours_rows_per_s']:,.0f}",
        f"{result['bare_rows_per_s']:,.0f}",
        f"{ratio:.0%}",
        f"{result['memory_mib']:.0f}",
        f"{result['compute_seconds']:.3f}",
    ]
    header = ["n", "update rows/s", "bare X.T@X rows/s", "ratio", "peak +MiB", "compute s"]
    print_table(
        f"Streaming VendiScore(kernel='cosine'), d = 512, float32 batches of {BATCH}",
        header,
        [row],
    )


def part_rff(n: int, exact_n: int, num_features: list[int]) -> None:
    timing = [in_subprocess("rff", n, m) for m in num_features[:2]]
    rows = [
        [f"{n:,}", str(m), f"{result['seconds']:.2f}", f"{result['value']:.2f}"]
        for m, result in zip(num_features[:2], timing, strict=True)
    ]
    print_table(
        f"Random-feature Gaussian (sigma = {SIGMA:g}), q = 1",
        ["n", "num_features", "seconds", "VS_1"],
        rows,
    )
    accuracy = in_subprocess("rff_error", exact_n, num_features)
    exact = accuracy["exact"]
    rows = [
        [str(m), f"{errors['q1']:+.2%}", f"{errors['q2']:+.2%}"]
        for m, errors in accuracy["errors"].items()
    ]
    print_table(
        f"Random-feature error against exact at n = {exact_n:,} "
        f"(exact VS_1 = {exact['q1']:.2f}, VS_2 = {exact['q2']:.2f})",
        ["num_features", "VS_1 rel. error", "VS_2 rel. error"],
        rows,
    )


def _timing_cells(peer: dict[str, float], ours: dict[str, float], ratio: Any) -> list[str]:
    """``wall s``, ``CPU s`` and the ratio of each, formatted for a table row."""
    return [
        f"{ours['seconds']:.3f}",
        f"{ratio(peer['seconds'], ours['seconds']):.2f}x",
        f"{ours['cpu']:.3f}",
        f"{ratio(peer['cpu'], ours['cpu']):.2f}x",
    ]


def part_cosine(sizes: list[int], batch: int) -> None:
    rows = []
    for n in sizes:
        result = in_subprocess("cosine", n, batch)
        peer = result["score_dual"]
        row = [f"{n:,}", f"{peer['seconds']:.3f}", f"{peer['cpu']:.3f}"]
        for name in ("functional", "metric"):
            row += _timing_cells(peer, result[name], lambda theirs, ours: theirs / ours)
        row += [
            f"{result[name]['memory_mib']:.0f}" for name in ("score_dual", "functional", "metric")
        ]
        row.append(
            f"{max(abs(result[name]['value'] / peer['value'] - 1) for name in ('functional', 'metric')):.1e}"
        )
        row.append(f"{os.getloadavg()[0]:.1f}")
        rows.append(row)
    header = [
        "n",
        "peer s",
        "peer CPU s",
        "functional s",
        "speed-up",
        "CPU s",
        "CPU speed-up",
        "metric s",
        "speed-up",
        "CPU s",
        "CPU speed-up",
        "peer +MiB",
        "functional +MiB",
        "metric +MiB",
        "|rel diff|",
        "load",
    ]
    print_table(
        f"Cosine Vendi at large n, d = {DIM}, q = 1, float64 rows: peer vendi-score's score_dual; "
        f"functional vendi_score; metric VendiScore (update in batches of {batch:,} + compute)",
        header,
        rows,
    )


def part_gaussian(sizes: list[int]) -> None:
    rows = []
    for n in sizes:
        result = in_subprocess("gaussian", n)
        bare, matrix = result["eigvalsh"], result["matrix_mib"]
        row = [f"{n:,}", f"{bare['seconds']:.3f}", f"{bare['cpu']:.3f}"]
        for name in ("functional", "metric"):
            row += _timing_cells(bare, result[name], lambda limit, ours: ours / limit)
        row += [
            f"{result[name]['memory_mib'] / matrix:.2f}"
            for name in ("eigvalsh", "functional", "metric")
        ]
        row.append(f"{os.getloadavg()[0]:.1f}")
        rows.append(row)
    header = [
        "n",
        "eigvalsh(K) s",
        "CPU s",
        "functional s",
        "/ eigvalsh",
        "CPU s",
        "CPU / eigvalsh",
        "metric s",
        "/ eigvalsh",
        "CPU s",
        "CPU / eigvalsh",
        "eigvalsh +K",
        "functional +K",
        "metric +K",
        "load",
    ]
    print_table(
        f"Exact Gaussian (sigma = {SIGMA:g}), q = 1, d = {DIM}: against a bare float64 "
        "torch.linalg.eigvalsh of the n x n kernel K (memory: peak growth in n x n float64 matrices)",
        header,
        rows,
    )


PARTS = ("table", "streaming", "cosine", "gaussian", "rff")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="which tables to print (default: all)",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="rows per VendiScore.update in the cosine table"
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        help="numbers of samples of the cosine and gaussian tables (default: their usual sizes)",
    )
    args = parser.parse_args()
    if args.case:
        name, *case_args = json.loads(args.case)
        print(json.dumps(CASES[name](*case_args)))
        return
    import torch

    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    quick = {
        "table": lambda: part_table([1000, 2000]),
        "streaming": lambda: part_streaming(20_000),
        "cosine": lambda: part_cosine(args.sizes or [1000, 10_000, 50_000], args.batch),
        "gaussian": lambda: part_gaussian(args.sizes or [1000, 2000]),
        "rff": lambda: part_rff(10_000, 1000, [256, 1024]),
    }
    full = {
        "table": lambda: part_table([1000, 5000, 10_000]),
        "streaming": lambda: part_streaming(100_000),
        "cosine": lambda: part_cosine(args.sizes or [1000, 10_000, 50_000, 200_000], args.batch),
        "gaussian": lambda: part_gaussian(args.sizes or [1000, 2000, 5000, 10_000]),
        "rff": lambda: part_rff(50_000, 5000, [1024, 2048, 4096]),
    }
    for part in args.parts:
        (quick if args.quick else full)[part]()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes share the CPUs)")


if __name__ == "__main__":
    main()
