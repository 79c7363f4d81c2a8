#!/usr/bin/env bash
# One lent-GPU session (torch only, no kedro needed): benchmarks/gpu_stage1.sh (CUDA tests, stage-1 speed), then
# the demo victims' training with what is left of BUDGET seconds. Results land in $OUT (logs, a kernel profile
# and demo.tgz with the trained checkpoints). Stage 1 alone takes about 290 s on an H100.
#   BUDGET=560 ARCHS="stargan attentiongan hisd" bash benchmarks/gpu_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d)
BUDGET=${BUDGET:-560}
ARCHS=${ARCHS:-"stargan attentiongan attgan hisd"}
mkdir -p "$OUT"
start=$(date +%s)
OUT=$OUT bash benchmarks/gpu_stage1.sh

left=$(( BUDGET - ($(date +%s) - start) - 25 ))
echo "training ${ARCHS} for ${left} s" | tee "$OUT/train.txt"
# shellcheck disable=SC2086
python3 scripts/train_demo_victims.py --device cuda --parallel --no-progress --archs $ARCHS \
  --max-seconds "$left" --out "$WORK/demo" --work "$WORK/train" 2>&1 | tail -40 | tee -a "$OUT/train.txt"
tar czf "$OUT/demo.tgz" -C "$WORK" demo
echo "results in $OUT"
