#!/usr/bin/env bash
# One lent-GPU session, as run for the numbers in benchmarks/README.md (torch only, no kedro needed):
# the CUDA tests, stage-1 speed at the paper configuration, then the demo victims' training with what is left of
# BUDGET seconds. Results land in $OUT (logs, a kernel profile and demo.tgz with the trained checkpoints).
#   BUDGET=560 ARCHS="stargan attentiongan hisd" bash benchmarks/gpu_session.sh
# COMPILE=1 adds the torch.compile + CUDA graphs row (about 95 s of compilation before its first step).
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d)
BUDGET=${BUDGET:-560}
ARCHS=${ARCHS:-"stargan attentiongan attgan hisd"}
mkdir -p "$OUT"
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"

python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_defense_interruption.py 2>&1 \
  | tail -3 | tee "$OUT/tests.txt"

{
  echo "## eager (no CUDA graphs) + release-style fp32 reference, kernel profile"
  timeout 120 python3 benchmarks/stage1_speed.py --config paper --device cuda --no-graphs --batches 4 --profile 25
  echo "## CUDA graphs, whole 30-epoch run"
  timeout 150 python3 benchmarks/stage1_speed.py --config paper --device cuda --batches 8 --full-epochs 30 \
    --skip-plain
  echo "## demo configuration, CUDA graphs"
  timeout 60 python3 benchmarks/stage1_speed.py --config demo --device cuda --batches 8
  if [ "${COMPILE:-0}" = 1 ]; then
    echo "## torch.compile + CUDA graphs, whole 30-epoch run"
    timeout 200 python3 benchmarks/stage1_speed.py --config paper --device cuda --compile --batches 8 \
      --full-epochs 30 --skip-plain
  fi
} 2>&1 | tee "$OUT/stage1.txt"

left=$(( BUDGET - ($(date +%s) - start) - 25 ))
echo "training ${ARCHS} for ${left} s" | tee "$OUT/train.txt"
# shellcheck disable=SC2086
python3 scripts/train_demo_victims.py --device cuda --parallel --no-progress --archs $ARCHS \
  --max-seconds "$left" --out "$WORK/demo" --work "$WORK/train" 2>&1 | tail -40 | tee -a "$OUT/train.txt"
tar czf "$OUT/demo.tgz" -C "$WORK" demo
echo "results in $OUT"
