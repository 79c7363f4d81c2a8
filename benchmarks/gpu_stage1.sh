#!/usr/bin/env bash
# Stage-1 speed on a lent GPU (torch only, no kedro needed), as run for the numbers in benchmarks/README.md:
# the CUDA tests; the steps compiled ahead of time (`aot_cache_dir`: one process builds the artifacts, then fresh
# processes load them for whole 30-epoch runs, with the first epoch broken down, and once with cuDNN's autotuning
# off); then the default path (bf16 + channels_last + CUDA graphs: steady state and the whole run), an eager kernel
# profile with the release-style fp32 reference, and torch.compile + graphs as whole runs with an empty (cold) and
# a warm Inductor cache. About 5 min for the AOT part and the tests, 8 min more for the rest.
# SKIP_REST=1 stops after the AOT rows; BASELINE_SRC=DIR (a copy of an earlier src/) adds that code's steady state
# on the same card, for A/B; PROFILE_WARM=1 adds a warm compiled run under the host profiler (about 60 s more).
#   BASELINE_SRC=.bench_old/src PROFILE_WARM=1 bash benchmarks/gpu_stage1.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1   # a crash prints its Python stack
# The GPU image's site-packages had no usable bytecode cache: every process compiled ~2,200 modules from source
# (7.7 s; 4.3 s of it importing Inductor and Triton). A writable cache lets this script's later processes skip
# that, as a normal installation does.
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$(mktemp -d)}
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)   # empty: the first compiled run is cold
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
bench() { timeout "$1" python3 benchmarks/stage1_speed.py --config paper --device cuda "${@:2}"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
PYTHONPATH=src python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
{
  AOT=$(mktemp -d)
  echo "## AOT-compiled steps + CUDA graphs: building the artifacts (one epoch)"
  PYTHONPATH=src bench 300 --aot-cache "$AOT" --full-epochs 1 --only-full-run --breakdown
  echo "## AOT-compiled steps + CUDA graphs, whole 30-epoch runs loading them (fresh processes)"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --breakdown
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --breakdown
  echo "## the same with cuDNN's autotuning off"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --breakdown --no-cudnn-benchmark
  if [ "${SKIP_REST:-0}" != 1 ]; then
  echo "## default: CUDA graphs, steady state and the whole 30-epoch run"
  PYTHONPATH=src bench 150 --batches 8 --full-epochs 30 --skip-plain
  if [ -n "${BASELINE_SRC:-}" ]; then
    echo "## baseline code ($BASELINE_SRC): CUDA graphs, steady state"
    PYTHONPATH=$BASELINE_SRC bench 90 --batches 8 --skip-plain
  fi
  echo "## eager (no CUDA graphs) + release-style fp32 reference, kernel profile"
  PYTHONPATH=src bench 100 --no-graphs --batches 4 --profile 25
  export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)   # not the AOT builds' kernels
  echo "## torch.compile + CUDA graphs, whole 30-epoch run, cold Inductor cache"
  PYTHONPATH=src bench 200 --compile --full-epochs 30 --only-full-run
  echo "## torch.compile + CUDA graphs, whole 30-epoch run, warm Inductor cache (a second process)"
  PYTHONPATH=src bench 120 --compile --full-epochs 30 --only-full-run
  if [ "${PROFILE_WARM:-0}" = 1 ]; then
    echo "## the same warm run under the host profiler: where the first epoch's time goes"
    TORCH_LOGS=recompiles PYTHONPATH=src bench 150 --compile --full-epochs 30 --only-full-run --host-profile 60
  fi
  fi
} 2>&1 | tee "$OUT/stage1.txt"
echo "results in $OUT"
