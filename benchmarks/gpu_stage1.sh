#!/usr/bin/env bash
# Stage-1 speed on a lent GPU (torch only, no kedro needed), as run for the numbers in benchmarks/README.md:
# a bytecode cache first; the CUDA tests; the steps compiled ahead of time (`aot_cache_dir`: parallel processes
# build the artifacts for the victims side by side on CUDA streams and those with Inductor's C++ wrapper, then fresh
# processes load them for whole 30-epoch runs, alternating: Python wrapper prefetched on a thread, C++ wrapper,
# Python wrapper loaded at first call; once with cuDNN's autotuning limited); then Inductor's runtime imported late,
# the default path's steady state with and without streams and its whole run, an eager kernel profile with the
# release-style fp32 reference, and torch.compile + graphs as whole runs with an empty (cold) and a warm Inductor
# cache. About 8-9 min up to the AOT runs (estimated from an H200's timings), 9 min more for the rest.
# SKIP_REST=1 stops after the AOT runs; JOINT=1 also builds the one-stream (joint) artifacts and times a run;
# PYPROFILE=1 adds a 2-epoch run loading the artifacts under cProfile (where the first epoch's time goes); STAGE2=1
# adds stage 2's poisoning step at paper size (about 1 min); EVAL_FID=1 the evaluation at paper size with LPIPS and
# FID (not estimated: never timed on a GPU); AOT_OPTIONS='{"max_autotune": true}' adds artifacts built with those
# Inductor settings (a longer build) and a whole run loading them; BASELINE_SRC=DIR (a copy of an earlier src/) adds
# that code's steady state on the same card, for A/B; PROFILE_WARM=1 adds a warm compiled run under the host
# profiler (about 60 s more).
#   SKIP_REST=1 PYPROFILE=1 bash benchmarks/gpu_stage1.sh   (within one 600-s call; more may be cut off)
set -u
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1   # a crash prints its Python stack
# The GPU image's Python writes no bytecode cache (session 19 on an H100: a process still compiled ~2,400 modules
# from source, 9.9 s, with PYTHONPYCACHEPREFIX set, as when Python runs with PYTHONDONTWRITEBYTECODE), so every
# process compiled torch's Python code again. An installation normally has one (pip writes it); compileall writes
# it into a prefix folder first (it writes whatever that setting says), and every later process reads it there.
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-$(mktemp -d)}
SITE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
python3 -c "import sys; print('dont_write_bytecode:', sys.flags.dont_write_bytecode)"
T=$(date +%s); timeout 240 python3 -m compileall -q -j 0 "$SITE/torch" "$SITE/triton" "$SITE/sympy" >/dev/null 2>&1
echo "bytecode cache written in $(( $(date +%s) - T )) s"
export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)   # empty: the first compiled run is cold
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
bench() { timeout "$1" python3 benchmarks/stage1_speed.py --config paper --device cuda "${@:2}"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# The CUDA tests run beside the build (its time is not a result), with an Inductor cache of their own.
(TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) PYTHONPATH=src timeout 330 python3 -m pytest -q -p no:cacheprovider \
   tests/test_cuda_graphs.py 2>&1 | tail -3 > "$OUT/tests.txt") &
TESTS=$!
{
  AOT=$(mktemp -d); AOT1=$(mktemp -d); AOTC=$(mktemp -d); CPP_WRAPPER='{"cpp_wrapper": true}'
  echo "## AOT-compiled steps + CUDA graphs: building the artifacts (one epoch) in parallel processes: for the victims"
  echo "## side by side on CUDA streams (an end-to-end artifact each, the default), with Inductor's C++ wrapper"
  echo "## (aot_options cpp_wrapper: no Python launcher per kernel to rebuild on loading) and, with JOINT=1, for one"
  echo "## stream (one end-to-end artifact for all: victim_streams false); the CUDA tests run beside them"
  if [ "${JOINT:-0}" = 1 ]; then
    PYTHONPATH=src bench 300 --aot-cache "$AOT1" --full-epochs 1 --only-full-run --no-victim-streams \
      > "$OUT/build_one_stream.txt" 2>&1 &
    BUILD1=$!
  fi
  PYTHONPATH=src bench 360 --aot-cache "$AOTC" --aot-options "$CPP_WRAPPER" --full-epochs 1 --only-full-run \
    > "$OUT/build_cpp_wrapper.txt" 2>&1 &
  BUILDC=$!
  PYTHONPATH=src bench 300 --aot-cache "$AOT" --full-epochs 1 --only-full-run --breakdown
  while kill -0 $TESTS 2>/dev/null; do sleep 1; done; echo "## CUDA tests:"; cat "$OUT/tests.txt"
  wait $BUILDC; CPP_BUILT=$?   # its runs below only if it built (no 90-s rebuild attempts)
  echo "## the C++-wrapper build (exit status $CPP_BUILT):"; grep -v DEBUG "$OUT/build_cpp_wrapper.txt" | tail -4
  if [ "${JOINT:-0}" = 1 ]; then
    wait $BUILD1; JOINT_BUILT=$?
    echo "## the one-stream build (exit status $JOINT_BUILT):"; grep -v DEBUG "$OUT/build_one_stream.txt" | tail -4
  fi
  echo "## whole 30-epoch runs loading the artifacts (fresh processes), alternating, most wanted first: streams with"
  echo "## the artifacts loaded on a thread from the start (the default), Inductor's C++ wrapper (prefetched), the"
  echo "## default loading each artifact at its first call"
  for _ in 1 2; do
    PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run
    if [ $CPP_BUILT = 0 ]; then
      PYTHONPATH=src bench 90 --aot-cache "$AOTC" --aot-options "$CPP_WRAPPER" --full-epochs 30 --only-full-run
    fi
    PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --no-aot-prefetch
  done
  echo "## the default, cuDNN's autotuning limited to 3 algorithms per convolution"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --cudnn-benchmark-limit 3
  if [ "${JOINT_BUILT:-1}" = 0 ]; then
    echo "## one stream, one end-to-end artifact for all victims (prefetched)"
    PYTHONPATH=src bench 90 --aot-cache "$AOT1" --full-epochs 30 --only-full-run --no-victim-streams
  fi
  if [ "${STAGE2:-0}" = 1 ]; then
    echo "## stage 2: one poisoning call (clean reference + 50 Adam steps) against S3FD, DSFD and RetinaFace"
    echo "## (random weights of the official architectures), 256 px, batch 8"
    PYTHONPATH=src timeout 150 python3 benchmarks/stage2_speed.py --device cuda --size 256 --batch 8 --steps 50
  fi
  if [ "${PYPROFILE:-0}" = 1 ]; then
    echo "## 2 epochs loading the artifacts under cProfile: where the first epoch goes"
    PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 2 --only-full-run --python-profile 30
  fi
  if [ "${EVAL_FID:-0}" = 1 ]; then
    echo "## the evaluation at paper size with LPIPS and FID (random-init backbones), one batch of 8, timed twice"
    PYTHONPATH=src timeout 300 python3 benchmarks/baselines_speed.py --config paper --device cuda --only evaluation \
      --perceptual --eval-batch 8
  fi
  if [ -n "${AOT_OPTIONS:-}" ]; then
    AOT2=$(mktemp -d)
    echo "## AOT artifacts built with the Inductor settings $AOT_OPTIONS (one epoch), then a whole run loading them"
    PYTHONPATH=src bench 500 --aot-cache "$AOT2" --aot-options "$AOT_OPTIONS" --full-epochs 1 --only-full-run
    PYTHONPATH=src bench 90 --aot-cache "$AOT2" --aot-options "$AOT_OPTIONS" --full-epochs 30 --only-full-run
  fi
  if [ "${SKIP_REST:-0}" != 1 ]; then
  echo "## AOT: Inductor's runtime imported when the first artifact loads (not on a thread from the start)"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --no-early-import
  echo "## default path (eager kernels + CUDA graphs), steady state: the victims on their own streams, then on one"
  PYTHONPATH=src bench 90 --batches 8 --skip-plain
  PYTHONPATH=src bench 90 --batches 8 --skip-plain --no-victim-streams
  echo "## AOT: a whole run with the first epoch broken down (device-synchronised, so a little slower)"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --breakdown
  echo "## AOT: the same with cuDNN's autotuning off"
  PYTHONPATH=src bench 90 --aot-cache "$AOT" --full-epochs 30 --only-full-run --no-cudnn-benchmark
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
