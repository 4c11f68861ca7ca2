"""Schur complement entropy: speed, memory and accuracy against the published method's recipe.

Compared in one run on the same machine, on paired (n, 512) image/text embeddings, P distinct
prompts (50 unless ``--prompts``) with n / P images each, and one feature map shared by text
and images: random Fourier features (``--kernel gaussian``, 2 x m features, sigma 3.5 as
published) or L2-normalised rows (``--kernel cosine``, D = 512):

- ``float32 eigh``: a straightforward implementation of the published method as its reference
  code computes it: float32 features and blocks, ``pinv(C_TT + 1e-12 I)``, ``L_txt`` by two
  matmuls, and two full eigendecompositions (``torch.linalg.eigh``) of ``L_img`` and ``L_txt``;
- ``float32 eigvalsh``: the same with eigenvalues only (a faster variant of the baseline);
- ``ours``: :func:`diversity_callbacks.functional.schur_complement_entropy` (float64, a
  pseudo-inverse with a cut-off set by the inputs' precision, eigenvalues only, plus the images'
  Vendi score), which takes the grouped path when n >= D and the n x n dual below; also with
  ``compute_image_vendi=False``, which returns what the baseline returns (SCE and the text
  part) and skips one eigendecomposition;
- ``metric``: the :class:`~diversity_callbacks.SchurComplementEntropy` class, ``update`` in
  batches of 500 then ``compute`` (the path a training run takes); ``metric, no image_vendi``
  is how the callback builds it (the images' Vendi score is ``VendiScore``'s there).

Accuracy is the relative error of SCE and of the text part against the same formula evaluated in
float64 with an eigendecomposition-based pseudo-inverse (cut-off D * eps(float64)). Each method
runs in a fresh subprocess so that its peak memory (``ru_maxrss`` growth during the call) is its
own. Run ``python benchmarks/bench_schur.py`` (many minutes: a 5000 x 5000 ``pinv`` takes
30-300 s on 2 cores, depending on the load), ``--kernel cosine`` (a minute) or ``--quick``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

DIM = 512
SIGMA = 3.5
FLOOR = 1e-10
BATCH = 500
METHODS = (
    "float32 eigh",
    "float32 eigvalsh",
    "ours",
    "ours, no image_vendi",
    "metric",
    "metric, no image_vendi",
)


def make_pairs(n: int, num_prompts: int, seed: int = 0) -> tuple[Any, Any]:
    """(images, prompts): n / P images per prompt, images depend on the prompt plus noise.

    Scales mimic raw CLIP ViT-B/32 embeddings (norms near 10, neighbours a few sigma apart).
    Rows are shuffled, so that batches mix prompts as a callback's evaluation does.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    prompts = 0.3 * torch.randn(num_prompts, DIM, generator=generator, dtype=torch.float64)
    mixing = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64) / DIM**0.5
    index = torch.randperm(n, generator=generator) % num_prompts
    images = (prompts @ mixing)[index]
    images = images + 0.25 * torch.randn(images.shape, generator=generator, dtype=torch.float64)
    return images, prompts[index]


def frequencies(num_features: int) -> Any:
    from diversity_callbacks.functional.kernels import random_fourier_frequencies

    return random_fourier_frequencies(DIM, num_features, sigma=SIGMA, seed=0)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    """CPU time of this process (all threads): less sensitive than wall time to a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def block_score(eigenvalues: Any) -> float:
    """The published block score, evaluated in float64 from given eigenvalues."""
    import torch

    clamped = eigenvalues.to(torch.float64).clamp_min(FLOOR)
    return float(torch.exp(-(clamped * torch.log(clamped / clamped.sum())).sum()))


def published(images: Any, prompts: Any, w: Any, dtype: Any, eigen: str) -> tuple[float, float]:
    """The published recipe in ``dtype``: features, blocks, pinv, two eigendecompositions.

    ``w``: the random Fourier frequencies, or ``None`` for the cosine kernel (unit rows).
    """
    import torch

    def features(x: Any) -> Any:
        if w is None:
            return torch.nn.functional.normalize(x.to(dtype), dim=1)
        projection = x.to(dtype) @ w.to(dtype)
        return torch.cat([projection.cos(), projection.sin()], dim=1) / w.shape[1] ** 0.5

    phi_t, phi_i = features(prompts), features(images)
    n = phi_t.shape[0]
    c_tt, c_ti, c_ii = phi_t.T @ phi_t / n, phi_t.T @ phi_i / n, phi_i.T @ phi_i / n
    eye = torch.eye(c_tt.shape[0], dtype=dtype)
    if dtype == torch.float64:
        inverse = torch.linalg.pinv(c_tt, hermitian=True)  # cut-off D * eps(float64)
    else:
        inverse = torch.linalg.pinv(c_tt + 1e-12 * eye)
    text_part = c_ti.T @ inverse @ c_ti
    image_part = c_ii - text_part
    if eigen == "eigh":
        image_eigenvalues, text_eigenvalues = (
            torch.linalg.eigh(m)[0] for m in (image_part, text_part)
        )
    else:
        image_eigenvalues, text_eigenvalues = (
            torch.linalg.eigvalsh(m) for m in (image_part, text_part)
        )
    return block_score(image_eigenvalues), block_score(text_eigenvalues)


def metric_scores(images: Any, prompts: Any, options: dict[str, Any]) -> tuple[float, float]:
    """The metric class as a training run uses it: ``update`` batch by batch, then ``compute``."""
    from diversity_callbacks import SchurComplementEntropy

    metric = SchurComplementEntropy(**options)
    for start in range(0, images.shape[0], BATCH):
        metric.update(images[start : start + BATCH], prompts[start : start + BATCH])
    result = metric.compute()
    return float(result["sce"]), float(result["text_part"])


def case(method: str, n: int, num_features: int, kernel: str, num_prompts: int) -> dict[str, float]:
    """One measurement in this (fresh) process: seconds, peak memory growth, the two scores."""
    import torch

    from diversity_callbacks.functional import schur_complement_entropy

    def ours(x: Any, t: Any, w: Any, **options: Any) -> tuple[float, float]:
        result = schur_complement_entropy(x, t, **kernel_options(w), **options)
        return float(result.sce), float(result.text_part)

    def kernel_options(w: Any) -> dict[str, Any]:
        return {"kernel": "cosine"} if w is None else {"kernel": "gaussian", "frequencies": w}

    runs = {
        "float32 eigh": lambda x, t, w: published(x, t, w, torch.float32, "eigh"),
        "float32 eigvalsh": lambda x, t, w: published(x, t, w, torch.float32, "eigvalsh"),
        "float64 pinv": lambda x, t, w: published(x, t, w, torch.float64, "eigvalsh"),
        "ours": ours,
        # the baseline's outputs only: SCE and the text part, no images' Vendi score
        "ours, no image_vendi": lambda x, t, w: ours(x, t, w, compute_image_vendi=False),
        "metric": lambda x, t, w: metric_scores(x, t, kernel_options(w)),
        "metric, no image_vendi": lambda x, t, w: metric_scores(
            x, t, {**kernel_options(w), "compute_image_vendi": False}
        ),
    }
    images, prompts = make_pairs(n, num_prompts)
    w = frequencies(num_features) if kernel == "gaussian" else None
    # warm-up: loading the BLAS/LAPACK kernels is not what we measure
    runs[method](images[:100], prompts[:100], None if w is None else w[:, :100])
    run = functools.partial(runs[method], images, prompts, w)
    before = peak_mib()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    sce, text_part = run()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "memory_mib": peak_mib() - before,
        "sce": sce,
        "text": text_part,
    }


def in_subprocess(*args: Any) -> dict[str, float]:
    command = [sys.executable, __file__, "--case", json.dumps(args)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def interleaved(methods: list[str], settings: tuple, repeats: int) -> dict[str, dict[str, float]]:
    """Each method ``repeats`` times, round by round (a shared machine's load moves between
    rounds, not between methods); the fastest wall and CPU times and the smallest memory kept."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for method in methods:
            result = in_subprocess(method, *settings)
            kept = best.setdefault(method, result)
            for key in ("seconds", "cpu_seconds", "memory_mib"):
                kept[key] = min(kept[key], result[key])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--kernel", choices=("gaussian", "cosine"), default="gaussian")
    parser.add_argument("--sizes", type=int, nargs="+", help="values of n (default 10000 2000)")
    parser.add_argument("--prompts", type=int, default=50, help="distinct prompts P")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--repeats", type=int, default=1, help="interleaved rounds; the fastest of each is kept"
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the float64 reference (a slow pinv at D = 5000): errors against `ours`",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*json.loads(args.case))))
        return
    import torch

    num_features = 500 if args.quick else 2500
    sizes = args.sizes or ([2000, 400] if args.quick else [10000, 2000])
    methods = ["float32 eigh", *(m for m in args.methods if m != "float32 eigh")]
    if args.no_reference and "ours" not in methods:
        methods.append("ours")
    dim = 2 * num_features if args.kernel == "gaussian" else DIM
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, d = {DIM}, "
        f"kernel {args.kernel}, D = {dim}, P = {args.prompts} prompts, "
        f"load average {os.getloadavg()}"
    )
    print(
        "| n | D | method | wall (s) | CPU (s) | speed-up (wall / CPU) | peak memory (MiB) "
        "| SCE rel. error | text part rel. error |"
    )
    print("|" + " --- |" * 9)
    for n in sizes:
        settings = (n, num_features, args.kernel, args.prompts)
        results = interleaved(methods, settings, args.repeats)
        reference = (
            results["ours"] if args.no_reference else in_subprocess("float64 pinv", *settings)
        )
        baseline = results["float32 eigh"]
        for method, result in results.items():
            errors = [abs(result[key] / reference[key] - 1) for key in ("sce", "text")]
            speed_up = [baseline[key] / result[key] for key in ("seconds", "cpu_seconds")]
            print(
                f"| {n} | {dim} | {method} | {result['seconds']:.2f} | "
                f"{result['cpu_seconds']:.2f} | {speed_up[0]:.1f}x / {speed_up[1]:.1f}x | "
                f"{result['memory_mib']:.0f} | {errors[0]:.1e} | {errors[1]:.1e} |",
                flush=True,
            )
        name = "ours (reference)" if args.no_reference else "float64 pinv (reference)"
        print(
            f"| {n} | {dim} | {name} | {reference['seconds']:.2f} | "
            f"{reference['cpu_seconds']:.2f} | | {reference['memory_mib']:.0f} | "
            f"SCE {reference['sce']:.4f} | text {reference['text']:.4f} |",
            flush=True,
        )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
