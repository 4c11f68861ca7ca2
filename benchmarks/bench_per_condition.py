"""Per-condition Vendi score: ``PerConditionVendiScore`` against ``VendiScore`` on the same rows.

P prompts x 8 samples of d = 512 (float32, as an embedder returns them) are fed in batches of
1024 rows to each metric, then ``compute`` is called: update + compute, best of three runs. The
peer is ``VendiScore`` (cosine, one D x D moment) on the same rows; the 0.1 column is the
per-condition score as 0.1 computed it (a boolean mask of all rows and one ``vendi_score`` per
condition), from the same gathered rows, compute only.

Each case runs in a fresh subprocess so that its peak memory (``ru_maxrss`` growth during the
measured calls) is its own. Run ``python benchmarks/bench_per_condition.py --help``.
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
SAMPLES = 8
BATCH = 1024


def make_data(prompts: int, seed: int = 0) -> tuple[Any, Any]:
    """(prompts * 8, 512) float32 rows, each prompt's samples around its own centre."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(prompts, DIM, generator=generator)
    ids = torch.arange(prompts).repeat_interleave(SAMPLES)
    noise = torch.randn(prompts * SAMPLES, DIM, generator=generator)
    return centres[ids] + 0.7 * noise, ids


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def loop_of_0_1(rows: Any, ids: Any, prompts: int) -> Any:
    """0.1's compute: one mask of all rows per condition, one vendi_score each."""
    import torch

    from diversity_callbacks.functional import vendi_score

    scores = torch.full((prompts,), torch.nan, dtype=torch.float64)
    for condition in torch.unique(ids).tolist():
        scores[condition] = vendi_score(rows[ids == condition])
    return scores.nanmean()


def case(method: str, prompts: int) -> dict[str, float]:
    """One cell: ``ours``, ``peer`` (update + compute) or ``0.1`` (compute only)."""
    import torch

    from diversity_callbacks import PerConditionVendiScore, VendiScore

    rows, ids = make_data(prompts)
    batches = list(zip(rows.split(BATCH), ids.split(BATCH), strict=True))
    if method == "0.1":
        rows64 = rows.to(torch.float64)
        run = lambda: loop_of_0_1(rows64, ids, prompts)  # noqa: E731
    else:
        metric = PerConditionVendiScore(prompts) if method == "ours" else VendiScore()

        def run() -> Any:
            metric.reset()
            for batch, batch_ids in batches:
                metric.update(batch, batch_ids) if method == "ours" else metric.update(batch)
            return metric.compute()

    before = peak_mib()
    best, spent = math.inf, 0.0
    for _ in range(3):
        start = time.perf_counter()
        value = float(run())
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent > 20:
            break
    return {"seconds": best, "value": value, "memory_mib": peak_mib() - before}


def in_subprocess(*args: Any) -> Any:
    """Run one case in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "--case", json.dumps(list(args))]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--skip-0-1", action="store_true", help="leave out 0.1's compute")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*json.loads(args.case))))
        return
    import torch

    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at the start"
    )
    table = []
    for prompts in args.prompts:
        ours, peer = in_subprocess("ours", prompts), in_subprocess("peer", prompts)
        old = None if args.skip_0_1 else in_subprocess("0.1", prompts)
        table.append(
            [
                f"{prompts:,} x {SAMPLES}",
                f"{ours['seconds']:.3f}",
                f"{peer['seconds']:.3f}",
                f"{ours['seconds'] / peer['seconds']:.2f}",
                f"{ours['memory_mib']:.0f}",
                f"{peer['memory_mib']:.0f}",
                "-" if old is None else f"{old['seconds']:.2f}",
                "-" if old is None else f"{abs(ours['value'] / old['value'] - 1):.1e}",
            ]
        )
    header = [
        "prompts x samples",
        "per-condition s",
        "VendiScore s",
        "ratio",
        "per-condition +MiB",
        "VendiScore +MiB",
        "0.1 compute s",
        "|rel diff| vs 0.1",
    ]
    print_table(
        f"PerConditionVendiScore vs VendiScore, update + compute, d = {DIM}, float32 batches "
        f"of {BATCH}",
        header,
        table,
    )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other processes share the CPUs)")


if __name__ == "__main__":
    main()
