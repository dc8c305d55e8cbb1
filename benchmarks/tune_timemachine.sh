#!/usr/bin/env bash
# One measured study: the Time Machine character LM (configs/lm/timemachine-char.yaml) searched over
# configs/spaces/lm-timemachine.yaml, each trial capped at $MINUTES minutes of training-step time,
# validation (valid.txt, never a test split) every 100 steps feeding the median pruner.
set -euo pipefail
OUT=${OUT:-benchmarks/results/tune-timemachine}
TRIALS=${TRIALS:-8}
MINUTES=${MINUTES:-1.5}
RNNLAB=${RNNLAB:-.venv/bin/rnnlab}
uptime
start=$(date +%s)
"$RNNLAB" tune --config configs/lm/timemachine-char.yaml --space configs/spaces/lm-timemachine.yaml \
  --trials "$TRIALS" --out "$OUT" --startup-trials 3 \
  --set "train.max_minutes=$MINUTES" --set train.valid_every=100 --set train.num_threads=1
echo "wall minutes: $(( ($(date +%s) - start) / 60 ))"
uptime
