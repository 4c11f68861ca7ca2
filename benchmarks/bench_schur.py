"""Schur complement entropy: speed, memory and accuracy against the published method's recipe.

Compared in one run on the same machine, on paired (n, 512) image/text embeddings with one
random Fourier frequency matrix (2 x m features, sigma 3.5 as published):

- ``float32 eigh``: a straightforward implementation of the published method as its reference
  code computes it: float32 features and blocks, ``pinv(C_TT + 1e-12 I)``, ``L_txt`` by two
  matmuls, and two full eigendecompositions (``torch.linalg.eigh``) of ``L_img`` and ``L_txt``;
- ``float32 eigvalsh``: the same with eigenvalues only (a faster variant of the baseline);
- ``ours``: :func:`diversity_callbacks.functional.schur_complement_entropy` (float64, a
  pseudo-inverse with a cut-off set by the inputs' precision, eigenvalues only, plus the images'
  Vendi score), which takes the grouped path
  when n >= D (n / 10 distinct prompts) and the n x n dual below; also with ``compute_image_vendi=False``, which
  returns what the baseline returns (SCE and the text part) and skips one eigendecomposition.

Accuracy is the relative error of SCE and of the text part against the same formula evaluated in
float64 with an eigendecomposition-based pseudo-inverse (cut-off D * eps(float64)). Each method
runs in a fresh subprocess so that its peak memory (``ru_maxrss`` growth during the call) is its
own. Run ``python benchmarks/bench_schur.py`` (minutes: a 5000 x 5000 eigh takes 30-40 s on
2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import time
from typing import Any

DIM = 512
SIGMA = 3.5
IMAGES_PER_PROMPT = 10
FLOOR = 1e-10


def make_pairs(n: int, seed: int = 0) -> tuple[Any, Any]:
    """(images, prompts): n / 10 prompts, 10 images each, images depend on the prompt plus noise.

    Scales mimic raw CLIP ViT-B/32 embeddings (norms near 10, neighbours a few sigma apart).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    num_prompts = n // IMAGES_PER_PROMPT
    prompts = 0.3 * torch.randn(num_prompts, DIM, generator=generator, dtype=torch.float64)
    mixing = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64) / DIM**0.5
    images = (prompts @ mixing).repeat_interleave(IMAGES_PER_PROMPT, 0)
    images = images + 0.25 * torch.randn(images.shape, generator=generator, dtype=torch.float64)
    return images, prompts.repeat_interleave(IMAGES_PER_PROMPT, 0)


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
    """The published recipe in ``dtype``: features, blocks, pinv, two eigendecompositions."""
    import torch

    w = w.to(dtype)

    def features(x: Any) -> Any:
        projection = x.to(dtype) @ w
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


def case(method: str, n: int, num_features: int) -> dict[str, float]:
    """One measurement in this (fresh) process: seconds, peak memory growth, the two scores."""
    import torch

    from diversity_callbacks.functional import schur_complement_entropy

    runs = {
        "float32 eigh": lambda x, t, w: published(x, t, w, torch.float32, "eigh"),
        "float32 eigvalsh": lambda x, t, w: published(x, t, w, torch.float32, "eigvalsh"),
        "float64 pinv": lambda x, t, w: published(x, t, w, torch.float64, "eigvalsh"),
        "ours": lambda x, t, w: tuple(
            float(v) for v in schur_complement_entropy(x, t, "gaussian", frequencies=w)[:2]
        ),
        # the baseline's outputs only: SCE and the text part, no images' Vendi score
        "ours, no image_vendi": lambda x, t, w: tuple(
            float(v)
            for v in schur_complement_entropy(
                x, t, "gaussian", frequencies=w, compute_image_vendi=False
            )[:2]
        ),
    }
    images, prompts = make_pairs(n)
    w = frequencies(num_features)
    # warm-up: loading the BLAS/LAPACK kernels is not what we measure
    runs[method](images[:100], prompts[:100], w[:, :100])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*json.loads(args.case))))
        return
    import torch

    sizes = [(2000, 500), (400, 500)] if args.quick else [(10000, 2500), (2000, 2500)]
    methods = ["float32 eigh", "float32 eigvalsh", "ours", "ours, no image_vendi"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, d = {DIM}, sigma = {SIGMA}"
    )
    header = (
        "| n | D = 2m | method | wall (s) | CPU (s) | speed-up (wall / CPU) | peak memory (MiB) "
        "| SCE rel. error | text part rel. error |"
    )
    print(header)
    print("|" + " --- |" * 9)
    for n, num_features in sizes:
        reference = in_subprocess("float64 pinv", n, num_features)
        results = {method: in_subprocess(method, n, num_features) for method in methods}
        baseline = results["float32 eigh"]
        for method, result in results.items():
            errors = [abs(result[key] / reference[key] - 1) for key in ("sce", "text")]
            speed_up = [baseline[key] / result[key] for key in ("seconds", "cpu_seconds")]
            print(
                f"| {n} | {2 * num_features} | {method} | {result['seconds']:.1f} | "
                f"{result['cpu_seconds']:.1f} | {speed_up[0]:.1f}x / {speed_up[1]:.1f}x | "
                f"{result['memory_mib']:.0f} | {errors[0]:.1e} | {errors[1]:.1e} |",
                flush=True,
            )
        print(
            f"| {n} | {2 * num_features} | float64 pinv (reference) | {reference['seconds']:.1f} | "
            f"{reference['cpu_seconds']:.1f} | | {reference['memory_mib']:.0f} | "
            f"SCE {reference['sce']:.4f} | text {reference['text']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
