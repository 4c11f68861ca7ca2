#!/usr/bin/env bash
# The checks that need a CUDA device, for a machine that has one (never CI): the CUDA tests
# (embedder on CUDA in bf16, the callback under Lightning's FSDP strategies), then the
# embedder benchmark, whose GPU rows (fp32, bf16) appear when CUDA is there. Run from the
# repository root after the README's test setup.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m pytest -v -rs \
    tests/embedders/test_clip.py::test_follows_cuda_input_and_runs_bf16_there \
    tests/evaluation/test_sharding.py::test_the_callback_samples_a_module_under_lightnings_fsdp_strategies
.venv/bin/python benchmarks/bench_embedder.py
