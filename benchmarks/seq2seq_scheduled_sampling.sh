#!/usr/bin/env bash
# Scheduled sampling on Multi30k de→en at equal training time: the Bahdanau recipe with teacher
# forcing against the same recipe with scheduled sampling (linear decay of ε to a floor), both
# with train.max_minutes=$MINUTES of training-step time, 1 thread each, side by side so both see the
# same machine load. Selection and figures on the validation split only (data.test is not read).
# Figures: benchmarks/scheduled_sampling.md.
set -euo pipefail
S=${S:-../shared/data}
OUT=${OUT:-benchmarks/results/scheduled_sampling}
MINUTES=${MINUTES:-15}
SS_K=${SS_K:-1500}
# Extra overrides for both runs (a smaller model gets more steps into the budget on a loaded CPU).
read -r -a EXTRA <<< "${EXTRA:---set model.embed_size=128 --set model.hidden_size=128 --set train.valid_every=200 --set train.log_every=50}"
RNNLAB=${RNNLAB:-.venv/bin/rnnlab}
mkdir -p "$OUT"
uptime
common=(--config configs/seq2seq/multi30k-de-en-attention.yaml --overwrite
  --set "data.train=$S/multi30k/train" --set "data.valid=$S/multi30k/val" --set data.test=
  --set "train.max_minutes=$MINUTES" --set train.num_threads=1 --set train.patience=0 "${EXTRA[@]}")
"$RNNLAB" train seq2seq "${common[@]}" --out "$OUT/teacher-forcing" > "$OUT/tf.log" 2>&1 &
"$RNNLAB" train seq2seq "${common[@]}" --set train.scheduled_sampling=linear \
  --set "train.ss_k=$SS_K" --set train.ss_min_teacher_forcing=0.75 \
  --out "$OUT/scheduled-linear" > "$OUT/ss.log" 2>&1 &
while sleep 60; do uptime; jobs -r | grep -q . || break; done
wait
for run in teacher-forcing scheduled-linear; do
  echo "== $run"
  grep -h "valid_bleu" "$OUT/$run/metrics.jsonl" | tail -3 || true
  grep -h "train_loss" "$OUT/$run/metrics.jsonl" | tail -1 || true
done
"$RNNLAB" plot "$OUT/teacher-forcing" "$OUT/scheduled-linear" --out "$OUT/curves.png" --x minutes
uptime
