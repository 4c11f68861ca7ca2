#!/bin/bash
# Issue 26: every target's benchmark, one after the other (docs/performance.md, "Issue 26 in one run").
# Run on an idle machine from a checkout with .venv (about 17 minutes on 2 cores).
cd "$(dirname "$0")/.."
P=.venv/bin/python
one() { echo "=== $* ($(date -u +%H:%M:%S), $(uptime | sed 's/.*load/load/'))"; }
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
git rev-parse HEAD
one streaming; $P benchmarks/bench_vendi.py --parts streaming
one cosine;  $P benchmarks/bench_vendi.py --parts cosine
one gaussian; $P benchmarks/bench_vendi.py --parts gaussian
one idle; $P benchmarks/bench_callback.py --part idle --threads 1 --repeats 3
one loggers; $P benchmarks/bench_callback.py --part loggers --threads 1 --repeats 2
one schur-cosine; $P benchmarks/bench_schur.py --kernel cosine --sizes 2000 10000 50000 --repeats 5 --methods "float32 eigh" "metric" "metric, no image_vendi"
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS
one cli; $P benchmarks/bench_cli.py --images 500 --size 64 --workers auto --repeats 2
one schur-gaussian; $P benchmarks/bench_schur.py --sizes 2000 10000 --no-reference --methods "float32 eigh" "metric" "metric, no image_vendi"
one end
