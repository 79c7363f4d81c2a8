#!/usr/bin/env bash
# Stage-1 speed on a lent GPU (torch only, no kedro needed), as run for the numbers in benchmarks/README.md:
# the CUDA tests, the default path (bf16 + channels_last + CUDA graphs: steady state and the whole 30-epoch paper
# run), an eager kernel profile with the release-style fp32 reference, and torch.compile + graphs as whole runs
# in fresh processes, first with an empty Inductor cache (cold) and then again (warm on-disk cache), and the step
# compiled ahead of time (`aot_cache_dir`), first building its artifacts and then loading them.
# BASELINE_SRC=DIR (a copy of an earlier src/) adds that code's steady state on the same card, for A/B;
# PROFILE_WARM=1 adds a warm compiled run under the host profiler (about 60 s more); AOT_ONLY=1 runs the tests and
# the two AOT rows alone (the whole script may not fit one 10-minute device call).
#   BASELINE_SRC=.bench_old/src PROFILE_WARM=1 bash benchmarks/gpu_stage1.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1   # a crash prints its Python stack
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
bench() { timeout "$1" python3 benchmarks/stage1_speed.py --config paper --device cuda "${@:2}"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
TSDF_EXPERIMENTAL_CUDA_AOT=1 PYTHONPATH=src python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d)}   # empty: the first compiled run is cold
{
  if [ "${AOT_ONLY:-0}" != 1 ]; then
  echo "## default: CUDA graphs, steady state and the whole 30-epoch run"
  PYTHONPATH=src bench 150 --batches 8 --full-epochs 30 --skip-plain
  if [ -n "${BASELINE_SRC:-}" ]; then
    echo "## baseline code ($BASELINE_SRC): CUDA graphs, steady state"
    PYTHONPATH=$BASELINE_SRC bench 90 --batches 8 --skip-plain
  fi
  echo "## eager (no CUDA graphs) + release-style fp32 reference, kernel profile"
  PYTHONPATH=src bench 100 --no-graphs --batches 4 --profile 25
  echo "## torch.compile + CUDA graphs, whole 30-epoch run, cold Inductor cache"
  PYTHONPATH=src bench 200 --compile --full-epochs 30 --only-full-run
  echo "## torch.compile + CUDA graphs, whole 30-epoch run, warm Inductor cache (a second process)"
  PYTHONPATH=src bench 120 --compile --full-epochs 30 --only-full-run
  fi
  echo "## AOT-compiled steps (Inductor standalone artifacts) + CUDA graphs, whole 30-epoch run: cold (builds them), warm (loads them)"
  AOT=$(mktemp -d)
  export TSDF_EXPERIMENTAL_CUDA_AOT=1   # not yet run on a GPU in this form (session 10): opt in
  PYTHONPATH=src bench 400 --aot-cache "$AOT" --full-epochs 30 --only-full-run
  PYTHONPATH=src bench 120 --aot-cache "$AOT" --full-epochs 30 --only-full-run
  echo "## the same artifacts without CUDA graphs (what graphs add)"
  PYTHONPATH=src bench 120 --aot-cache "$AOT" --no-graphs --full-epochs 30 --only-full-run
  if [ "${PROFILE_WARM:-0}" = 1 ]; then
    echo "## the same warm run under the host profiler: where the first epoch's time goes"
    TORCH_LOGS=recompiles PYTHONPATH=src bench 150 --compile --full-epochs 30 --only-full-run --host-profile 60
  fi
} 2>&1 | tee "$OUT/stage1.txt"
echo "results in $OUT"
